"""Runs and reports through the services: refusals, adjudication, signatures, seal, verify."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_MALFORMED = str(Path(__file__).resolve().parents[1] / "malformed")
if _MALFORMED not in sys.path:
    sys.path.insert(0, _MALFORMED)

import harness  # noqa: E402

from workbench import errors  # noqa: E402
from workbench.services import adjudication, models, protocols, reports, runs, testsets  # noqa: E402

PW = {user: spec[2] for user, spec in harness.ACCOUNTS.items()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> harness.Pipeline:
    """Locked test set, tiny model, approved protocol that requires adjudication of
    every case whose decision disagrees with the consensus, and one completed run."""
    pipe = harness.build(tmp_path_factory.mktemp("flow") / "wb", stage="registered", n_cases=4)
    wb = harness.open_wb(pipe.workdir)
    qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
    text = pipe.workdir.parent / "adjudicated.yaml"
    text.write_text(
        harness.protocol_text(
            protocol_id="adjudicated",
            discrepancy_rules=[
                {
                    "id": "any-case",
                    "kind": "metric_threshold",
                    "column": "score",
                    "operator": ">=",
                    "threshold": 0.0,
                }
            ],
            adjudication={
                "required_before_approval": True,
                "reviewers_blinded": True,
                "reviewers_see_aggregate_results": False,
                "readers_per_case": 1,
            },
        )
    )
    ref = protocols.add_protocol_version(wb, qa1, text).ref
    protocols.approve_protocol(wb, qa2, ref, password=PW["qa2"])
    pipe.protocol_ref = ref
    pipe.run_uid = runs.validate(
        wb, qa1, protocol=ref, model=pipe.model_ref, test_set=harness.TEST_SET, device="cpu"
    ).run_uid
    wb.close()
    return pipe


def test_every_case_is_accounted_for_and_queued(pipeline: harness.Pipeline) -> None:
    wb = harness.open_wb(pipeline.workdir)
    summary = runs.get_run(wb, harness.login(wb, "qa1"), pipeline.run_uid)
    assert summary.status == "completed"
    assert summary.n_cases == 4 == summary.n_completed + summary.n_failed + summary.n_excluded
    assert summary.n_discrepancies == 4
    assert summary.results_sha256 and len(summary.results_sha256) == 64
    # A blinded reviewer sees neither verdict nor numbers until adjudication is finished.
    reviewer_view = runs.get_run(wb, harness.login(wb, "rev1"), pipeline.run_uid)
    assert reviewer_view.verdict is None and reviewer_view.endpoints == ()
    with pytest.raises(errors.PermissionDeniedError, match="adjudicate"):
        runs.run_results(wb, harness.login(wb, "rev1"), pipeline.run_uid)
    wb.close()


def test_report_workflow_order_and_seal(pipeline: harness.Pipeline, tmp_path: Path) -> None:
    pipe = harness.copy_workdir(pipeline, tmp_path / "wb")
    wb = harness.open_wb(pipe.workdir)
    qa1, qa2, rev1 = (harness.login(wb, u) for u in ("qa1", "qa2", "rev1"))
    early = reports.build_report(wb, qa1, pipe.run_uid)
    with pytest.raises(errors.WorkflowError, match="before its required signatures"):
        reports.seal_report(wb, qa2, early.report_uid)
    reports.sign_report(wb, qa1, early.report_uid, meaning="authored", password=PW["qa1"])
    with pytest.raises(errors.PermissionDeniedError):
        reports.sign_report(wb, qa1, early.report_uid, meaning="approved", password=PW["qa1"])
    with pytest.raises(errors.WorkflowError, match="not adjudicated"):
        reports.sign_report(wb, qa2, early.report_uid, meaning="approved", password=PW["qa2"])
    # Blinded adjudication: the reviewer never sees which output is the model's.
    for item in adjudication.queue(wb, rev1, pipe.run_uid):
        case = adjudication.open_case(wb, rev1, item.discrepancy_id)
        assert case.unblinded is None and "score" not in case.details
        assert "model" not in str(case.details) and "y_true" not in case.details
        assert set(case.calls) == {"A", "B"}
        adjudication.adjudicate(
            wb,
            rev1,
            item.discrepancy_id,
            decision="a_correct",
            comment="checked",
            password=PW["rev1"],
        )
    assert adjudication.pending_count(wb, pipe.run_uid) == 0
    # The early draft does not show the adjudication: it can no longer be signed.
    with pytest.raises(errors.WorkflowError, match="out of date"):
        reports.sign_report(wb, rev1, early.report_uid, meaning="reviewed", password=PW["rev1"])
    report = reports.build_report(wb, qa1, pipe.run_uid)
    assert report.status == "draft" and Path(report.pdf_path or "").is_file()
    reports.sign_report(wb, qa1, report.report_uid, meaning="authored", password=PW["qa1"])
    reports.sign_report(wb, rev1, report.report_uid, meaning="reviewed", password=PW["rev1"])
    signed = reports.sign_report(wb, qa2, report.report_uid, meaning="approved", password=PW["qa2"])
    assert signed.status == "signed" and not signed.missing_signatures
    sealed = reports.seal_report(wb, qa2, report.report_uid)
    assert sealed.status == "sealed"
    with pytest.raises(errors.RecordLockedError):
        reports.sign_report(wb, rev1, report.report_uid, meaning="reviewed", password=PW["rev1"])

    check = reports.verify_report_file(wb, sealed.sealed_path or "")
    assert check.valid, check.lines()
    # Key numbers in the PDF are the stored results.
    results, _ = runs.run_results(wb, qa1, pipe.run_uid)
    estimated = [e.estimate for e in results.endpoints if e.estimate is not None]
    assert estimated, "no endpoint was estimable on the tiny run"
    text = (
        subprocess.run(
            ["pdftotext", "-layout", sealed.sealed_path or "", "-"], capture_output=True, text=True
        ).stdout
        if shutil.which("pdftotext")
        else ""
    )
    if text:
        for estimate in estimated:
            assert f"{estimate.value:.3f}" in text
        assert report.report_uid in text and "Page 1 of" in text
    # One changed byte breaks the seal.
    tampered = tmp_path / "tampered.pdf"
    data = bytearray(Path(sealed.sealed_path or "").read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered.write_bytes(bytes(data))
    assert not reports.verify_report_file(wb, tampered).valid
    wb.close()


def test_validation_is_refused_on_changed_inputs(
    pipeline: harness.Pipeline, tmp_path: Path
) -> None:
    pipe = harness.copy_workdir(pipeline, tmp_path / "wb")
    wb = harness.open_wb(pipe.workdir)
    qa1 = harness.login(wb, "qa1")

    def run() -> object:
        return runs.validate(
            wb,
            qa1,
            protocol=pipe.protocol_ref,
            model=pipe.model_ref,
            test_set=harness.TEST_SET,
            device="cpu",
        )

    # A model file changed after registration.
    stored = Path(models.get_model(wb, pipe.model_ref).storage_path)
    original = stored.read_bytes()
    stored.write_bytes(original + b"\0")
    with pytest.raises(errors.ModelIntegrityError):
        run()
    stored.write_bytes(original)
    # A test-set file changed after locking.
    victim = sorted(pipe.test_set_root.rglob("*.dcm"))[0]
    saved = victim.read_bytes()
    victim.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    with pytest.raises(errors.IntegrityError, match="locked manifest"):
        run()
    victim.write_bytes(saved)
    # An unlocked test set and an unapproved protocol.
    other = harness.synth(tmp_path / "other-set", n_cases=2, seed=11)
    testsets.import_test_set(wb, qa1, other, name="unlocked", workers=1)
    with pytest.raises(errors.WorkflowError, match="not locked"):
        runs.validate(
            wb, qa1, protocol=pipe.protocol_ref, model=pipe.model_ref, test_set="unlocked"
        )
    draft = tmp_path / "draft.yaml"
    draft.write_text(harness.protocol_text(protocol_id="draft-only"))
    ref = protocols.add_protocol_version(wb, qa1, draft).ref
    with pytest.raises(errors.NotFoundError, match="approved"):
        runs.validate(
            wb, qa1, protocol="draft-only", model=pipe.model_ref, test_set=harness.TEST_SET
        )
    with pytest.raises(errors.WorkflowError, match="approved"):
        runs.validate(wb, qa1, protocol=ref, model=pipe.model_ref, test_set=harness.TEST_SET)
    wb.close()
