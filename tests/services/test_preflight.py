"""Pre-flight on a hospital's own radiographs: every problem at once, and at lock.

The set is the eight real CR files of ``pydicom-data`` (built by
``test_bring_your_own_data.radiographs``), labels keyed by accession number. A
mismatched protocol (labels keyed by study UID, which ``labels.csv`` lacks; a stratum
with no source; written for another test set) and a 3D model on these 2D images must
be reported in one list by ``protocol check``, and must refuse ``testset lock
--protocol`` with the same list, audited. The matching protocol locks, and its
pre-flight outcome is audited with the lock.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from workbench.cli import app
from workbench.errors import WorkflowError
from workbench.protocols import load_protocol
from workbench.protocols.cases import CaseSpec
from workbench.records.models import AuditEntry
from workbench.services import models, preflight, protocols, testsets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from inference_fixtures import ThresholdNet, save_scripted, tiny_spec  # noqa: E402
from test_bring_your_own_data import CR_FILES, _protocol_text  # noqa: E402
from test_bring_your_own_data import radiographs as radiographs  # noqa: E402,F401

N = len(CR_FILES)
NO_ROW = "no row in reference/labels.csv for this series (joined on study_instance_uid)"


def _mismatched_protocol() -> str:
    """Labels keyed by a column labels.csv lacks, a stratum with no source, another set."""
    data = yaml.safe_load(_protocol_text("another-set"))
    data["id"] = "cr-abnormality-mismatched"
    data["reference_standard"]["labels_key"] = "study_instance_uid"
    data["strata"] = [
        {"factor": "manufacturer", "min_n": 2},
        {"factor": "scanner_room", "min_n": 2},
    ]
    return yaml.safe_dump(data, sort_keys=False)


def _workbench(tmp_path: Path, radiographs: Path) -> tuple[Any, Any, Path, str, str]:
    """A workbench with the CR set imported (one extra labels row matching no image),
    both protocols stored and the set checked under the matching one."""
    root = tmp_path / "set"
    shutil.copytree(radiographs, root)
    with (root / "reference" / "labels.csv").open("a") as labels:
        labels.write("cr999,ACC9999,1\n")
    workdir = tmp_path / "wb"
    workdir.mkdir()
    wb = harness.open_wb(workdir)
    harness.make_accounts(wb)
    qa1 = harness.login(wb, "qa1")
    testsets.import_test_set(wb, qa1, root, name="cr-set", workers=1)
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(_protocol_text("cr-set"))
    bad.write_text(_mismatched_protocol())
    good_ref = protocols.add_protocol_version(wb, qa1, good).ref
    bad_ref = protocols.add_protocol_version(wb, qa1, bad).ref
    quality = testsets.check_quality(wb, qa1, "cr-set", protocol=good_ref)
    assert not quality.blocking, [f for f in quality.findings if f.severity == "critical"]
    return wb, qa1, workdir, good_ref, bad_ref


def _cli(workdir: Path, *args: str) -> Any:
    env = {"WORKBENCH_USER": "qa1", "WORKBENCH_PASSWORD": harness.ACCOUNTS["qa1"][2]}
    return CliRunner().invoke(app, [*args, "--workdir", str(workdir)], env=env)


def _entries(wb: Any, action: str) -> list[AuditEntry]:
    with wb.transaction(readonly=True) as session:
        found = session.scalars(select(AuditEntry).where(AuditEntry.action == action)).all()
        session.expunge_all()
    return list(found)


def test_every_problem_is_reported_at_once(radiographs: Path, tmp_path: Path) -> None:
    wb, qa1, workdir, _, bad_ref = _workbench(tmp_path, radiographs)
    try:
        model = models.register_model(
            wb, qa1, save_scripted(ThresholdNet(), tmp_path / "three_d.ts"), tiny_spec()
        )
        report = preflight.check_protocol(
            wb, qa1, protocol=bad_ref, test_set="cr-set", model=model.ref
        )
        blocking = {p.check: p for p in report.problems if p.blocking}
        assert set(blocking) == {
            "test set",
            "labels columns",
            "cases",
            "stratum source",
            "model input",
        }, report.lines()
        assert blocking["test set"].expected == "'another-set'"
        assert "study_instance_uid" in blocking["labels columns"].expected
        assert "'accession_number'" in blocking["labels columns"].found
        assert blocking["cases"].found == f"all {N} image series would be excluded"
        # The header attribute manufacturer is a source even when every case is excluded.
        sources = [p for p in report.problems if p.check == "stratum source"]
        assert [p.where for p in sources] == ["strata factor scanner_room"], report.lines()
        # not joined to labels, a case is named by its PatientID
        assert blocking["model input"].found == f"{N} case(s) are single images (first: CASE000)"
        assert report.exclusions == ((NO_ROW, N),)
        assert report.n_cases == N and report.n_analysable == 0 and not report.ok

        result = _cli(
            workdir, "protocol", "check", bad_ref, "--testset", "cr-set", "--model", model.ref
        )
        assert result.exit_code == 1, result.output
        for problem in report.problems:
            assert problem.line() in result.output
        assert "PRE-FLIGHT FAILED" in result.output
    finally:
        wb.close()


def test_lock_is_refused_with_every_reason_then_locks_with_the_matching_protocol(
    radiographs: Path, tmp_path: Path
) -> None:
    wb, qa1, workdir, good_ref, bad_ref = _workbench(tmp_path, radiographs)
    password = harness.ACCOUNTS["qa1"][2]
    try:
        expected = preflight.check_protocol(wb, qa1, protocol=bad_ref, test_set="cr-set")
        with pytest.raises(WorkflowError, match="found 4 blocking problem") as refused:
            testsets.lock_test_set(wb, qa1, "cr-set", password=password, protocol=bad_ref)
        for problem in expected.problems:
            assert problem.line() in str(refused.value)
        assert testsets.get_test_set(wb, "cr-set").status == "draft"
        result = _cli(workdir, "testset", "lock", "cr-set", "--protocol", bad_ref)
        assert result.exit_code == 1 and "the lock is refused" in result.output
        assert testsets.get_test_set(wb, "cr-set").status == "draft"
        refusals = _entries(wb, "testset.lock_refused")
        assert len(refusals) == 2
        for entry in refusals:
            record = entry.new_value["preflight"]
            assert record["ok"] is False and record["n_analysable"] == 0
            assert record["problems"] == [p.line() for p in expected.problems]
            assert record["exclusions"] == {NO_ROW: N}
        assert not _entries(wb, "testset.lock")

        result = _cli(workdir, "testset", "lock", "cr-set", "--protocol", good_ref)
        assert result.exit_code == 0, result.output
        assert f"{N} would be analysed" in result.output and "PRE-FLIGHT OK" in result.output
        assert "1 row(s) match none (first: ACC9999)" in result.output
        info = testsets.get_test_set(wb, "cr-set")
        assert info.status == "locked"
        (lock,) = _entries(wb, "testset.lock")
        record = lock.new_value["preflight"]
        assert record["ok"] is True and record["n_cases"] == record["n_analysable"] == N
        assert record["protocol"] == good_ref
        assert (
            record["protocol_sha256"] == load_protocol((tmp_path / "good.yaml").read_text()).sha256
        )
        assert len(record["problems"]) == 1 and "labels join" in record["problems"][0]
        assert lock.new_value["manifest_digest"] == info.manifest_digest
    finally:
        wb.close()


def test_lock_without_a_protocol_runs_no_preflight(radiographs: Path, tmp_path: Path) -> None:
    wb, qa1, _, _, _ = _workbench(tmp_path, radiographs)
    try:
        info = testsets.lock_test_set(wb, qa1, "cr-set", password=harness.ACCOUNTS["qa1"][2])
        assert info.status == "locked" and info.preflight is None
        (lock,) = _entries(wb, "testset.lock")
        assert "preflight" not in lock.new_value
    finally:
        wb.close()


def test_all_cases_excluded_names_no_header_stratum_as_missing() -> None:
    """Pure: with every case excluded, header and labels columns still count as sources."""
    data = yaml.safe_load(_mismatched_protocol())
    data["test_set"] = {"name": "cr-set"}
    data["strata"].append({"factor": "site", "min_n": 2})
    protocol = load_protocol(yaml.safe_dump(data, sort_keys=False))
    labels = pd.DataFrame({"study_instance_uid": ["9.9"], "abnormal": [1], "site": ["a"]})
    cases = [
        CaseSpec(
            case_id=f"c{i}",
            series_uid=f"1.2.{i}",
            image_paths=(Path(f"c{i}.dcm"),),
            attributes={"study_instance_uid": f"1.3.{i}", "manufacturer": "GE"},
            exclusion=NO_ROW,
        )
        for i in range(3)
    ]
    problems = preflight.preflight_cases(protocol, cases, labels, test_set_name="cr-set")
    by_check = {p.check: p for p in problems}
    sources = [p.where for p in problems if p.check == "stratum source"]
    assert sources == ["strata factor scanner_room"], [p.line() for p in problems]
    assert by_check["cases"].found == "all 3 image series would be excluded"
    assert by_check["labels join"].found == "1 row(s) match none (first: 9.9)"
    assert "stratum size" not in by_check


def test_small_strata_and_unmatched_rows_are_notes() -> None:
    """Pure: a stratum below min_n and a labels row matching no series do not block."""
    data = yaml.safe_load(_protocol_text("cr-set"))
    data["strata"] = [{"factor": "manufacturer", "min_n": 3}]
    protocol = load_protocol(yaml.safe_dump(data, sort_keys=False))
    labels = pd.DataFrame({"accession_number": ["A0", "A1", "A2", "A9"], "abnormal": [0, 1, 1, 0]})
    cases = [
        CaseSpec(
            case_id=f"c{i}",
            series_uid=f"1.2.{i}",
            image_paths=(Path(f"c{i}.dcm"),),
            attributes={"accession_number": f"A{i}", "abnormal": i % 2, "manufacturer": m},
        )
        for i, m in enumerate(["GE", "GE", "Philips"])
    ]
    problems = preflight.preflight_cases(protocol, cases, labels, test_set_name="cr-set")
    assert [(p.check, p.blocking) for p in problems] == [
        ("labels join", False),
        ("stratum size", False),
    ], [p.line() for p in problems]
    assert problems[0].found == "1 row(s) match none (first: A9)"
    assert problems[1].found == "GE: n=2, Philips: n=1 (reported, not judged)"


def test_cluster_by_patient_id_reads_the_dicom_patient_id(radiographs: Path) -> None:
    """Real CR files: ``cluster_by: patient_id`` takes each case's PatientID from its header;
    a case without one blocks the pre-flight, naming it."""
    from workbench.dicom.index import index_folder
    from workbench.protocols.cases import build_cases

    data = yaml.safe_load(_protocol_text("cr-set"))
    data["cluster_by"] = "patient_id"
    protocol = load_protocol(yaml.safe_dump(data, sort_keys=False))
    index = index_folder(radiographs, workers=1)
    labels = pd.read_csv(radiographs / "reference" / "labels.csv", dtype={"case_id": str})
    cases = build_cases(index.files, labels, protocol, radiographs)
    images = index.files[index.files["modality"] == "CR"]
    expected = images.groupby("series_instance_uid")["patient_id"].first().to_dict()
    analysable = [c for c in cases if c.exclusion is None]
    assert analysable
    assert {c.series_uid: c.attributes["patient_id"] for c in analysable} == {
        c.series_uid: expected[c.series_uid] for c in analysable
    }
    problems = preflight.preflight_cases(protocol, cases, labels, test_set_name="cr-set")
    assert "cluster" not in {p.check for p in problems}, [p.line() for p in problems]
    first = analysable[0]
    blank = CaseSpec(
        case_id=first.case_id,
        series_uid=first.series_uid,
        image_paths=first.image_paths,
        attributes={**first.attributes, "patient_id": None},
    )
    problems = preflight.preflight_cases(
        protocol, [blank if c is first else c for c in cases], labels, test_set_name="cr-set"
    )
    cluster = [p for p in problems if p.check == "cluster"]
    assert len(cluster) == 1 and cluster[0].blocking
    assert f"first: {first.case_id}" in cluster[0].found
