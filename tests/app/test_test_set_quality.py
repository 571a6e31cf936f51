"""The Test sets page's data-quality tab, through AppTest on a draft set of real DICOM.

A workdir of its own holds the accounts, one stored protocol and a draft test set of
two files from pydicom's test data (a CT and an MR slice, each with patient names in
the header). A QA user runs the check from the page with a suite and task, then with
a protocol, then with OCR; the stored check records each choice. The tab shows the
findings grouped by check, severity and attribute, filtered by each; once every
critical finding is waived with two QA signatures, the gate reads passed and each
waived finding says so, for QA staff and auditors alike.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from pydicom.data import get_testdata_file
from streamlit.testing.v1 import AppTest

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from tests.app._seed import ACCOUNTS, PROTOCOL_DIR  # noqa: E402
from tests.app.conftest import APP_MAIN, sign_in  # noqa: E402
from workbench.errors import WorkflowError  # noqa: E402
from workbench.quality import Severity  # noqa: E402
from workbench.services import accounts, protocols, testsets, views  # noqa: E402
from workbench.services.context import Actor, Workbench  # noqa: E402

SET = "real-ct-mr"
PROTOCOL = "malignancy-classification"
JUSTIFICATION = "Phantom-like public test files; no patient is identified by these headers."


@dataclass
class Bench:
    workdir: Path
    wb: Workbench
    qa: Actor
    approver: Actor


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """Accounts, one protocol and a draft test set of two real files; no run, no lock."""
    workdir = tmp_path_factory.mktemp("quality-tab")
    folder = workdir / "incoming" / SET
    for sub, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm")):
        (folder / sub).mkdir(parents=True)
        shutil.copy(str(get_testdata_file(name)), folder / sub / name)
    wb = Workbench.open(workdir)
    full_name, _role, password = ACCOUNTS["sysadmin"]
    accounts.bootstrap_admin(wb, username="sysadmin", full_name=full_name, password=password)
    admin = accounts.login(wb, "sysadmin", password)
    for username in ("qa.author", "qa.approver", "inspector"):
        full, role, secret = ACCOUNTS[username]
        accounts.create_user(
            wb,
            admin,
            username=username,
            full_name=full,
            role=role,
            password=secret,
            must_change_password=False,
        )
    qa = accounts.login(wb, "qa.author", ACCOUNTS["qa.author"][2])
    approver = accounts.login(wb, "qa.approver", ACCOUNTS["qa.approver"][2])
    protocols.add_protocol_version(wb, qa, PROTOCOL_DIR / f"{PROTOCOL}-v1.yaml")
    testsets.import_test_set(wb, qa, folder, name=SET, workers=1)
    previous = {k: os.environ.get(k) for k in ("WORKBENCH_HOME", "WORKBENCH_DB_URL")}
    os.environ["WORKBENCH_HOME"] = str(workdir)
    os.environ.pop("WORKBENCH_DB_URL", None)
    try:
        yield Bench(workdir, wb, qa, approver)
    finally:
        wb.close()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _open(bench: Bench, username: str) -> AppTest:
    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    sign_in(at, bench.wb, username)
    at.run()
    at.switch_page("pages/test_sets.py").run()
    assert not at.exception, at.exception
    return at


def _run_check(at: AppTest) -> AppTest:
    at.button(key="run-quality").click().run(timeout=300)
    assert not at.exception, at.exception
    assert not at.error or "BLOCKED" in str(at.error[0].value), [e.value for e in at.error]
    return at


def _table(at: AppTest, column: str) -> pd.DataFrame:
    """The one table of the page with ``column``."""
    tables = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(tables) == 1, [list(d.value.columns) for d in at.dataframe]
    return tables[0]


def _groups(at: AppTest) -> pd.DataFrame:
    return _table(at, "example")


def _findings(at: AppTest) -> pd.DataFrame:
    return _table(at, "waiver")


def _latest(bench: Bench) -> views.QualitySummary:
    summary = views.latest_quality(bench.wb, bench.qa, SET)
    assert summary is not None
    return summary


def test_the_check_runs_with_the_suite_task_protocol_and_ocr_chosen(bench: Bench) -> None:
    at = _open(bench, "qa.author")
    assert "No data-quality check yet." in [i.value for i in at.info]
    at.selectbox(key=f"q-suite-{SET}").set_value("ct-test-set-v1")
    at.selectbox(key=f"q-task-{SET}").set_value("classification")
    _run_check(at)
    latest = _latest(bench)
    assert (latest.report.suite, latest.task, latest.ocr) == (
        "ct-test-set-v1",
        "classification",
        False,
    )
    # the MR series is foreign to a CT suite: one modality finding, in the grouped table
    groups = _groups(at)
    modality = groups[groups["check"] == "modality"]
    assert modality[["severity", "attribute", "findings"]].values.tolist() == [
        ["critical", "Modality (0008,0060)", 1]
    ]
    # classification needs labels, not SEGs
    assert "ReferencedSeriesSequence (0008,1115)" not in set(
        groups.loc[groups["check"] == "reference_standard", "attribute"]
    )
    assert "BLOCKED" in str(at.error[0].value)

    at.radio(key=f"q-source-{SET}").set_value("a protocol").run()
    at.selectbox(key=f"q-protocol-{SET}").set_value(f"{PROTOCOL}@1")
    _run_check(at)
    latest = _latest(bench)
    assert (latest.report.suite, latest.task) == ("ct-test-set-v1", "classification")

    at.radio(key=f"q-source-{SET}").set_value("a suite and task").run()
    at.selectbox(key=f"q-suite-{SET}").set_value("mixed-test-set-v1")
    at.selectbox(key=f"q-task-{SET}").set_value("segmentation")
    if shutil.which("tesseract"):
        at.checkbox(key=f"q-ocr-{SET}").check()
    _run_check(at)
    latest = _latest(bench)
    assert (latest.report.suite, latest.task) == ("mixed-test-set-v1", "segmentation")
    assert latest.ocr is bool(shutil.which("tesseract"))
    assert latest.ocr is ("burned_in_text" in latest.report.checks_run)
    assert "modality" not in set(_groups(at)["check"])
    text = " ".join(str(m.value) for m in at.markdown)
    assert "suite **mixed-test-set-v1**" in text.replace("\\", "")
    assert f"OCR **{'on' if latest.ocr else 'off'}**" in text


def test_grouped_findings_filter_by_severity_check_and_attribute(bench: Bench) -> None:
    at = _open(bench, "qa.author")
    report = _latest(bench).report
    groups = _groups(at)
    assert int(groups["findings"].sum()) == len(report.findings) > 0
    assert [tuple(r) for r in groups[["check", "severity", "attribute"]].values] == [
        (g.check, g.severity.value, g.attribute or "-") for g in report.grouped()
    ]

    at.multiselect(key=f"q-sev-{SET}").set_value(["critical"]).run()
    critical = _groups(at)
    assert set(critical["severity"]) == {"critical"}
    assert int(critical["findings"].sum()) == len(report.blocking)

    at.multiselect(key=f"q-check-{SET}").set_value(["phi"]).run()
    phi = _groups(at)
    expected = [f for f in report.blocking if f.check == "phi"]
    assert len(expected) > 0 and set(phi["check"]) == {"phi"}
    assert int(phi["findings"].sum()) == len(expected)

    attribute = next(
        g.attribute for g in report.grouped() if g.check == "phi" and g.severity == "critical"
    )
    named = [f for f in expected if re.sub(r"\[\d+\]", "[*]", f.attribute) == attribute]
    at.multiselect(key=f"q-attr-{SET}").set_value([attribute]).run()
    name_rows = _groups(at)
    assert name_rows["attribute"].tolist() == [attribute]
    assert int(name_rows["findings"].iloc[0]) == sum(
        1 for f in expected if f.attribute == attribute
    )
    findings = _findings(at)
    assert sorted(findings["id"]) == sorted(f.id for f in named)
    # no identifying value is ever shown (CT_small's PatientName is CompressedSamples^CT1)
    shown = "".join(d.value.to_csv() for d in at.dataframe)
    assert "CompressedSamples" not in shown

    at.multiselect(key=f"q-sev-{SET}").set_value([]).run()
    at.multiselect(key=f"q-check-{SET}").set_value([]).run()
    at.multiselect(key=f"q-attr-{SET}").set_value([]).run()
    assert int(_groups(at)["findings"].sum()) == len(report.findings)


def _waive(bench: Bench, finding: str, *, second: bool = True) -> None:
    testsets.waive_finding(
        bench.wb,
        bench.qa,
        SET,
        finding,
        justification=JUSTIFICATION,
        password=ACCOUNTS["qa.author"][2],
    )
    if second:
        testsets.waive_finding(
            bench.wb,
            bench.approver,
            SET,
            finding,
            justification=JUSTIFICATION,
            password=ACCOUNTS["qa.approver"][2],
        )


def test_waived_findings_show_as_waived_and_open_the_gate(bench: Bench) -> None:
    report = _latest(bench).report
    critical = [f.id for f in report.blocking]
    minor = [f.id for f in report.findings if f.severity is not Severity.CRITICAL]
    assert len(critical) >= 2 and minor
    first, rest = critical[0], critical[1:]
    _waive(bench, first, second=False)  # one of two signatures: still blocking
    _waive(bench, minor[0], second=False)  # one signature waives a non-critical finding
    at = _open(bench, "qa.author")
    assert f"BLOCKED by {len(critical)} critical" in str(at.error[0].value)
    state = _findings(at).set_index("id")["waiver"]
    assert state[first] == "awaiting a second QA signature (qa.author)"
    assert state[minor[0]] == "waived (qa.author)"
    assert state[rest[0]] == ""

    with pytest.raises(WorkflowError, match="already signed"):
        _waive(bench, first, second=False)  # the same QA user cannot sign twice
    for finding in rest:
        _waive(bench, finding)
    testsets.waive_finding(
        bench.wb,
        bench.approver,
        SET,
        first,
        justification=JUSTIFICATION,
        password=ACCOUNTS["qa.approver"][2],
    )
    for user in ("qa.author", "inspector"):
        at = _open(bench, user)
        assert not at.error, [e.value for e in at.error]
        verdicts = [str(s.value) for s in at.success]
        assert f"passed; {len(critical)} critical finding(s) waived" in " ".join(verdicts)
        state = _findings(at).set_index("id")["waiver"]
        assert all(state[f] == "waived (qa.author, qa.approver)" for f in critical)
        groups = _groups(at)
        blocking = groups[groups["severity"] == "critical"]
        assert (blocking["waived"] == blocking["findings"]).all()
        waivers = _table(at, "justification")
        assert len(waivers) == len(critical) + 1
        assert set(waivers["justification"]) == {JUSTIFICATION}
    # auditors see the check but cannot run it
    assert not [b for b in at.button if b.key == "run-quality"]
