"""``workbench testset import``, ``check`` and ``waive`` on a small real-world folder.

The folder holds three images from pydicom's own test data (a CT slice, an MR slice
and a multi-frame colour ultrasound, each with identifying attributes in its header)
and three files that are not readable DICOM (a truncated copy of the CT, a README
and a gzip archive). Import names each unreadable file with its reason; the check
prints the findings grouped by check, severity and attribute, one line per finding
with ``--details``, exports them to CSV and JSON, follows ``--suite``; ``waive``
records one QA signature for a non-critical finding and two for a critical one.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner, Result

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from workbench.cli import app  # noqa: E402

ADMIN_PW = "Harbor-Lamp-2026!"
QA_PW = {"qa1": "Quill-Maple-2026!", "qa2": "Cedar-Brook-2026!"}
SET = "real-mixed"
JUSTIFICATION = "Public test file from pydicom; the header values are synthetic, not a patient."
UNREADABLE = {
    "broken/CT_small_cut.dcm": "truncated",
    "notes/README.txt": "not DICOM",
    "notes/archive.gz": "not DICOM",
}
GROUP_LINE = re.compile(r"^\s+(\d+)\s+(\d+)\s+(critical|major|minor|info)\s+(\S+)\s+(.+)$")
DETAIL_LINE = re.compile(r"^\s+([0-9a-f]{16}) (critical|major|minor|info)\s")
SUMMARY_LINE = re.compile(r"^suite (\S+): (\d+) finding\(s\) in (\d+) files \((.+)\); (.+)$")

Invoke = Callable[..., Result]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real-mixed")
    for sub, name in (
        ("ct", "CT_small.dcm"),
        ("mr", "MR_small.dcm"),
        ("us", "examples_ybr_color.dcm"),
    ):
        (root / sub).mkdir()
        shutil.copy(str(get_testdata_file(name)), root / sub / name)
    (root / "broken").mkdir()
    (root / "broken" / "CT_small_cut.dcm").write_bytes(
        (root / "ct" / "CT_small.dcm").read_bytes()[:300]
    )
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("Exported from the PACS on Monday.\n")
    (root / "notes" / "archive.gz").write_bytes(gzip.compress(b"not a DICOM file"))
    return root


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Invoke:
    """A workdir with an administrator and two QA users; ``cli(*args, user=...)``."""
    runner = CliRunner()
    workdir = tmp_path_factory.mktemp("wd")

    def invoke(*args: str, user: str | None = None) -> Result:
        env = {"WORKBENCH_HOME": str(workdir)}
        if user:
            env["WORKBENCH_USER"] = user
            env["WORKBENCH_PASSWORD"] = ADMIN_PW if user == "admin" else QA_PW[user]
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    result = invoke(
        "user", "bootstrap", "--username", "admin", "--full-name", "Ada", "--password", ADMIN_PW
    )
    assert result.exit_code == 0, result.output
    for username, password in QA_PW.items():
        temporary = f"Temp-Pass-{len(username)}-2026!x"
        created = invoke(
            "user",
            "create",
            "--username",
            username,
            "--full-name",
            f"QA {username}",
            "--role",
            "qa",
            "--initial-password",
            temporary,
            user="admin",
        )
        assert created.exit_code == 0, created.output
        changed = runner.invoke(
            app,
            ["user", "change-password", "--new-password", password],
            env={
                "WORKBENCH_HOME": str(workdir),
                "WORKBENCH_USER": username,
                "WORKBENCH_PASSWORD": temporary,
            },
            catch_exceptions=False,
        )
        assert changed.exit_code == 0, changed.output
    return invoke


@pytest.fixture(scope="module")
def imported(cli: Invoke, folder: Path) -> Result:
    result = cli("testset", "import", str(folder), "--name", SET, "--workers", "1", user="qa1")
    assert result.exit_code == 0, result.output
    return result


def _check(cli: Invoke, *args: str) -> Result:
    result = cli("testset", "check", SET, *args, user="qa1")
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    return result


def _summary(result: Result) -> re.Match[str]:
    lines = [m for line in result.output.splitlines() if (m := SUMMARY_LINE.match(line))]
    assert len(lines) == 1, result.output
    return lines[0]


def _export(cli: Invoke, tmp_path: Path, *args: str) -> tuple[Result, dict]:
    target = tmp_path / "findings.json"
    result = _check(cli, *args, "--export", str(target))
    return result, json.loads(target.read_text(encoding="utf-8"))


def test_import_names_each_unreadable_file_with_its_reason(imported: Result) -> None:
    output = imported.output
    assert f"imported '{SET}': " in output and "(3 DICOM, 3 unreadable)" in output
    named = dict(
        line.strip().removeprefix("unreadable ").split(": ", 1)
        for line in output.splitlines()
        if line.startswith("  unreadable ")
    )
    assert set(named) == set(UNREADABLE)
    for path, reason in UNREADABLE.items():
        assert named[path].startswith(reason), (path, named[path])


def test_check_prints_findings_grouped_by_check_severity_and_attribute(
    cli: Invoke, imported: Result, tmp_path: Path
) -> None:
    result, exported = _export(cli, tmp_path, "--suite", "mixed-test-set-v1")
    findings = exported["findings"]
    summary = _summary(result)
    assert summary.group(1) == "mixed-test-set-v1"
    assert int(summary.group(2)) == len(findings) > 0
    assert int(summary.group(3)) == exported["n_files"] == 3
    counts = Counter(f["severity"] for f in findings)
    assert summary.group(4) == ", ".join(
        f"{counts.get(s, 0)} {s}" for s in ("critical", "major", "minor", "info")
    )
    assert result.exit_code == (2 if counts["critical"] else 0)
    assert summary.group(5) == ("BLOCKING" if counts["critical"] else "no critical findings")

    groups = [m for line in result.output.splitlines() if (m := GROUP_LINE.match(line))]
    assert "count  files  severity" in result.output
    assert sum(int(m.group(1)) for m in groups) == len(findings)
    expected = Counter(
        (f["check"], f["severity"], re.sub(r"\[\d+\]", "[*]", f["attribute"])) for f in findings
    )
    shown = {(m.group(4), m.group(3), m.group(5).strip()): int(m.group(1)) for m in groups}
    assert shown == {(c, s, a or "-"): n for (c, s, a), n in expected.items()}
    order = ["critical", "major", "minor", "info"]
    severities = [m.group(3) for m in groups]
    assert severities == sorted(severities, key=order.index)
    # the unreadable files are findings too, named by path
    unreadable = {f["path"] for f in findings if f["check"] in ("readability", "non_dicom_file")}
    assert unreadable == set(UNREADABLE)
    # identifying values are described, never printed
    assert "CompressedSamples" not in result.output + json.dumps(findings)


def test_details_print_one_line_per_finding_with_its_id(
    cli: Invoke, imported: Result, tmp_path: Path
) -> None:
    _, exported = _export(cli, tmp_path, "--suite", "mixed-test-set-v1")
    result = _check(cli, "--suite", "mixed-test-set-v1", "--details")
    lines = [m for line in result.output.splitlines() if (m := DETAIL_LINE.match(line))]
    ids = [m.group(1) for m in lines]
    assert sorted(ids) == sorted(f["id"] for f in exported["findings"])
    assert len(set(ids)) == len(ids)
    by_id = {f["id"]: f for f in exported["findings"]}
    for line in result.output.splitlines():
        match = DETAIL_LINE.match(line)
        if match:
            finding = by_id[match.group(1)]
            assert match.group(2) == finding["severity"]
            assert f" {finding['path'] or '(test set)'} " in line
            assert f"({finding['message']})" in line
    assert "count  files  severity" not in result.output  # details replace the groups


def test_export_writes_csv_and_json_with_the_same_findings(
    cli: Invoke, imported: Result, tmp_path: Path
) -> None:
    as_csv, as_json = tmp_path / "f.csv", tmp_path / "f.json"
    first = _check(cli, "--suite", "mixed-test-set-v1", "--export", str(as_csv))
    second = _check(cli, "--suite", "mixed-test-set-v1", "--export", str(as_json))
    assert f"findings written to {as_csv}" in first.output
    assert f"findings written to {as_json}" in second.output
    rows = list(csv.DictReader(as_csv.open(encoding="utf-8")))
    stored = json.loads(as_json.read_text(encoding="utf-8"))
    assert [r["id"] for r in rows] == [f["id"] for f in stored["findings"]]
    assert {"id", "check", "severity", "path", "series_instance_uid", "attribute"} <= set(rows[0])
    assert stored["suite"] == "mixed-test-set-v1"
    assert stored["counts"] == {
        s: sum(1 for f in stored["findings"] if f["severity"] == s)
        for s in ("critical", "major", "minor", "info")
    }
    assert len({r["id"] for r in rows}) == len(rows) == int(_summary(second).group(2))


def test_suite_chooses_the_modalities_the_set_may_hold(
    cli: Invoke, imported: Result, tmp_path: Path
) -> None:
    ct, ct_findings = _export(cli, tmp_path, "--suite", "ct-test-set-v1")
    assert _summary(ct).group(1) == "ct-test-set-v1"
    modality = [f for f in ct_findings["findings"] if f["check"] == "modality"]
    # one finding per foreign series (the MR slice, the ultrasound), naming the series
    assert sorted(f["found"] for f in modality) == ["MR", "US"]
    assert all(f["series_instance_uid"] and f["severity"] == "critical" for f in modality)
    assert any(
        (m := GROUP_LINE.match(line)) and m.group(4) == "modality" and m.group(1) == "2"
        for line in ct.output.splitlines()
    )
    assert ct.exit_code == 2
    us, us_findings = _export(cli, tmp_path, "--suite", "us-test-set-v1")
    assert sorted(f["found"] for f in us_findings["findings"] if f["check"] == "modality") == [
        "CT",
        "MR",
    ]
    mixed, mixed_findings = _export(cli, tmp_path, "--suite", "mixed-test-set-v1")
    assert not [f for f in mixed_findings["findings"] if f["check"] == "modality"]
    wrong = cli("testset", "check", SET, "--suite", "ct-test-set", user="qa1")
    assert wrong.exit_code == 1
    assert "Unknown data-quality suite 'ct-test-set'" in wrong.output
    assert "Did you mean 'ct-test-set-v1'?" in wrong.output
    assert "Traceback" not in wrong.output


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr not installed")
def test_ocr_adds_the_burned_in_text_check(cli: Invoke, imported: Result, tmp_path: Path) -> None:
    _, without = _export(cli, tmp_path, "--suite", "mixed-test-set-v1")
    _, with_ocr = _export(cli, tmp_path, "--suite", "mixed-test-set-v1", "--ocr")
    assert "burned_in_text" not in without["checks_run"]
    assert "burned_in_text" in with_ocr["checks_run"]


def test_waive_signs_a_finding_once_or_twice_for_a_critical_one(
    cli: Invoke, imported: Result, tmp_path: Path
) -> None:
    _, exported = _export(cli, tmp_path, "--suite", "mixed-test-set-v1")
    findings = exported["findings"]
    major = next(f for f in findings if f["severity"] == "major")
    critical = [f for f in findings if f["severity"] == "critical"]
    assert critical

    short = cli("testset", "waive", SET, major["id"], "--justification", "fine", user="qa1")
    assert short.exit_code == 1 and "justification of at least" in short.output
    unknown = cli(
        "testset", "waive", SET, "0123456789abcdef", "--justification", JUSTIFICATION, user="qa1"
    )
    assert unknown.exit_code == 1 and "No finding '0123456789abcdef'" in unknown.output

    one = cli("testset", "waive", SET, major["id"], "--justification", JUSTIFICATION, user="qa1")
    assert one.exit_code == 0, one.output
    assert one.output.strip() == (
        f"{major['id']} (major {major['check']} {major['path']}): waived; signed by qa1"
    )

    target = critical[0]
    first = cli("testset", "waive", SET, target["id"], "--justification", JUSTIFICATION, user="qa1")
    assert first.exit_code == 0, first.output
    assert "needs a second QA signature; signed by qa1" in first.output
    again = cli("testset", "waive", SET, target["id"], "--justification", JUSTIFICATION, user="qa1")
    assert again.exit_code == 1 and "already signed" in again.output
    other_text = cli(
        "testset",
        "waive",
        SET,
        target["id"],
        "--justification",
        JUSTIFICATION + " Two.",
        user="qa2",
    )
    assert other_text.exit_code == 1 and "same text" in other_text.output
    second = cli(
        "testset", "waive", SET, target["id"], "--justification", JUSTIFICATION, user="qa2"
    )
    assert second.exit_code == 0, second.output
    assert "waived; signed by qa1, qa2" in second.output

    # the lock counts the waived critical finding and refuses on the rest
    locked = cli("testset", "lock", SET, user="qa1")
    assert locked.exit_code == 1
    assert f"has {len(critical) - 1} critical data-quality finding(s) (1 more waived)" in (
        locked.output
    )
