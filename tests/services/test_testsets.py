"""Test-set services: import, quality gate, e-signed lock, verification and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_team import Team
from sqlalchemy import select

from workbench.dicom.synth import generate_test_set
from workbench.errors import (
    AuthenticationError,
    DuplicateError,
    PermissionDeniedError,
    QualityGateError,
    TestSetLockedError,
    WorkflowError,
)
from workbench.records.models import AuditEntry, Signature
from workbench.services import testsets


def _import_and_lock(team: Team, root: Path, name: str = "demo-phantoms") -> testsets.TestSetInfo:
    qa = team["qa1"]
    testsets.import_test_set(team.wb, qa, root, name=name, workers=1)
    testsets.check_quality(team.wb, qa, name)
    return testsets.lock_test_set(team.wb, qa, name, password=team.password("qa1"))


def test_import_records_every_file_with_its_hash(team: Team, test_set_copy: Path) -> None:
    info = testsets.import_test_set(team.wb, team["qa1"], test_set_copy, name="ts", workers=1)
    n_on_disk = sum(1 for p in test_set_copy.rglob("*") if p.is_file())
    assert info.status == "draft"
    assert info.n_files == n_on_disk
    assert info.summary["n_series"] >= 4
    with team.wb.transaction(readonly=True) as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "testset.import")
        ).one()
        assert entry.actor == "qa1" and entry.record_id == "ts"


def test_lock_needs_quality_check_signature_and_qa_role(team: Team, test_set_copy: Path) -> None:
    testsets.import_test_set(team.wb, team["qa1"], test_set_copy, name="ts", workers=1)
    with pytest.raises(QualityGateError, match="no data-quality report"):
        testsets.lock_test_set(team.wb, team["qa1"], "ts", password=team.password("qa1"))
    testsets.check_quality(team.wb, team["qa1"], "ts")
    with pytest.raises(PermissionDeniedError):
        testsets.lock_test_set(team.wb, team["rev1"], "ts", password=team.password("rev1"))
    with pytest.raises(AuthenticationError):
        testsets.lock_test_set(team.wb, team["qa1"], "ts", password="wrong password 1!")
    info = testsets.lock_test_set(team.wb, team["qa1"], "ts", password=team.password("qa1"))
    assert info.status == "locked" and len(info.manifest_digest or "") == 64
    with team.wb.transaction(readonly=True) as session:
        sig = session.scalars(select(Signature).where(Signature.record_type == "test_set")).one()
        assert sig.meaning == "responsibility" and sig.content_sha256 == info.manifest_digest
    with pytest.raises(TestSetLockedError):
        testsets.lock_test_set(team.wb, team["qa1"], "ts", password=team.password("qa1"))


def test_verify_detects_changed_removed_and_added_files(team: Team, test_set_copy: Path) -> None:
    _import_and_lock(team, test_set_copy, "ts")
    assert testsets.verify_test_set(team.wb, team["qa1"], "ts").ok
    victim = sorted(test_set_copy.rglob("*.dcm"))[3]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    removed = sorted(test_set_copy.rglob("*.dcm"))[10]
    removed.unlink()
    (test_set_copy / "extra.txt").write_text("not part of the set")
    diff = testsets.verify_test_set(team.wb, team["qa1"], "ts")
    rel = lambda p: p.relative_to(test_set_copy).as_posix()  # noqa: E731
    assert rel(victim) in diff.changed
    assert rel(removed) in diff.removed
    assert "extra.txt" in diff.added
    assert not diff.ok


def test_names_are_unique_and_quality_gate_blocks_defects(team: Team, tmp_path: Path) -> None:
    root = tmp_path / "defective"
    generate_test_set(
        root,
        n_cases=3,
        seed=5,
        matrix=128,
        slices=(40, 40),
        workers=1,
        defects=("phi_in_header", "wrong_modality"),
    )
    testsets.import_test_set(team.wb, team["qa1"], root, name="bad", workers=1)
    with pytest.raises(DuplicateError):
        testsets.import_test_set(team.wb, team["qa1"], root, name="bad", workers=1)
    report = testsets.check_quality(team.wb, team["qa1"], "bad")
    assert report.blocking
    with pytest.raises(QualityGateError, match="critical"):
        testsets.lock_test_set(team.wb, team["qa1"], "bad", password=team.password("qa1"))


def test_frozen_manifest_refuses_unlocked_sets(team: Team, test_set_copy: Path) -> None:
    testsets.import_test_set(team.wb, team["qa1"], test_set_copy, name="ts", workers=1)
    with pytest.raises(WorkflowError, match="not locked"):
        testsets.verify_test_set(team.wb, team["qa1"], "ts")


def test_stored_counts_audit_and_lock_refusal_match_the_findings(
    team: Team, tmp_path: Path
) -> None:
    from workbench.records.models import QualityReport

    root = tmp_path / "counted"
    generate_test_set(
        root,
        n_cases=3,
        seed=9,
        matrix=128,
        slices=(40, 40),
        workers=1,
        defects=("phi_in_header", "wrong_modality", "non_dicom_file"),
    )
    qa = team["qa1"]
    info = testsets.import_test_set(team.wb, qa, root, name="counted", workers=1)
    assert info.n_unreadable == len(info.unreadable) == 1
    (path, reason) = info.unreadable[0]
    assert path.endswith(".dcm") and reason.startswith("not DICOM")
    report = testsets.check_quality(team.wb, qa, "counted", suite="ct-test-set-v1")
    truth = {s: sum(1 for f in report.findings if f.severity.value == s) for s in report.counts}
    assert report.counts == truth and truth["critical"] > 0
    with team.wb.transaction(readonly=True) as session:
        stored = session.scalars(select(QualityReport)).one()
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "testset.quality_check")
        ).one()
        new = entry.new_value
    assert (stored.n_critical, stored.n_major, stored.n_minor) == (
        truth["critical"],
        truth["major"],
        truth["minor"],
    )
    assert stored.passed is False
    assert (new["critical"], new["major"], new["minor"]) == (
        truth["critical"],
        truth["major"],
        truth["minor"],
    )
    with pytest.raises(QualityGateError, match=f"has {truth['critical']} critical"):
        testsets.lock_test_set(team.wb, qa, "counted", password=team.password("qa1"))


def test_classification_set_locks_without_segmentations(team: Team, tmp_path: Path) -> None:
    root = tmp_path / "labels-only"
    generate_test_set(root, n_cases=3, seed=4, matrix=96, slices=(24, 24), workers=1)
    for seg in root.rglob("SEG/*.dcm"):
        seg.unlink()
    qa = team["qa1"]
    testsets.import_test_set(team.wb, qa, root, name="cls", workers=1)
    seg_task = testsets.check_quality(team.wb, qa, "cls", task="segmentation")
    assert {f.check for f in seg_task.blocking} == {"reference_standard"}
    report = testsets.check_quality(team.wb, qa, "cls", task="classification")
    assert not report.blocking, report.to_frame().to_string()
    info = testsets.lock_test_set(team.wb, qa, "cls", password=team.password("qa1"))
    assert info.status == "locked"


def test_waivers_are_signed_audited_and_need_two_qa_for_critical(
    team: Team, tmp_path: Path
) -> None:
    root = tmp_path / "waived"
    generate_test_set(
        root, n_cases=2, seed=6, matrix=96, slices=(24, 24), workers=1, defects=("wrong_modality",)
    )
    qa1, qa2 = team["qa1"], team["qa2"]
    testsets.import_test_set(team.wb, qa1, root, name="w", workers=1)
    report = testsets.check_quality(team.wb, qa1, "w")
    (critical,) = report.blocking
    why = "The MR slice is a scout kept by the exporter; it is not read by the model."
    with pytest.raises(WorkflowError, match="justification"):
        testsets.waive_finding(
            team.wb, qa1, "w", critical.id, justification="ok", password=team.password("qa1")
        )
    first = testsets.waive_finding(
        team.wb, qa1, "w", critical.id, justification=why, password=team.password("qa1")
    )
    assert (first.complete, first.signed_by) == (False, ("qa1",))
    with pytest.raises(WorkflowError, match="second, different QA user"):
        testsets.waive_finding(
            team.wb, qa1, "w", critical.id, justification=why, password=team.password("qa1")
        )
    with pytest.raises(QualityGateError, match="has 1 critical"):
        testsets.lock_test_set(team.wb, qa1, "w", password=team.password("qa1"))
    with pytest.raises(WorkflowError, match="same text"):
        testsets.waive_finding(
            team.wb,
            qa2,
            "w",
            critical.id,
            justification=why + " Noted.",
            password=team.password("qa2"),
        )
    second = testsets.waive_finding(
        team.wb, qa2, "w", critical.id, justification=why, password=team.password("qa2")
    )
    assert (second.complete, second.signed_by) == (True, ("qa1", "qa2"))
    assert [w.finding_id for w in testsets.list_waivers(team.wb, qa1, "w")] == [critical.id]
    with team.wb.transaction(readonly=True) as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "testset.waive_finding")
        ).all()
        signed = session.scalars(
            select(Signature).where(Signature.record_type == "quality_waiver")
        ).all()
    assert [e.new_value["justification"] for e in entries] == [why, why]
    assert sorted(s.username for s in signed) == ["qa1", "qa2"]
    assert testsets.lock_test_set(team.wb, qa1, "w", password=team.password("qa1")).status == (
        "locked"
    )
