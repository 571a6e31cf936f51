"""kill -9 at random points during import, lock, inference + statistics, report build and
sealing; afterwards the audit chain verifies, nothing half-written looks complete, the
step can be re-run to the end and its results equal an uninterrupted run's.

Each trial runs the step in a child process forked from the test process (so that the
cold start of a fresh interpreter, ~5 s of imports, is not paid 50 times), SIGKILLs it
after a random delay drawn over the step's measured duration, then checks the workdir
from the parent. One trial per suite also goes through the real ``workbench`` CLI.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import pytest
from sqlalchemy import select

from workbench.records.models import CaseResult, Report, Run, TestSet, TestSetFile
from workbench.services import reports, runs, testsets

TRIALS = 10
pytestmark = pytest.mark.slow

Step = Callable[[harness.Pipeline], Any]


def _in_child(step: Step, pipe: harness.Pipeline) -> None:
    try:
        step(pipe)
    finally:
        os._exit(0)


def run_and_kill(step: Step, pipe: harness.Pipeline, delay: float) -> bool:
    """Run ``step`` in a forked child; SIGKILL it after ``delay`` s. True if it was killed."""
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_in_child, args=(step, pipe))
    child.start()
    child.join(delay)
    killed = child.is_alive()
    if killed:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.join(120)
    assert not child.is_alive(), "the child did not die"
    return killed


def _timed(step: Step, pipe: harness.Pipeline) -> float:
    started = time.perf_counter()
    run_and_kill(step, pipe, 600)
    return time.perf_counter() - started


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _session(pipe: harness.Pipeline) -> Any:
    return harness.open_wb(pipe.workdir)


def _run(pipe: harness.Pipeline, run_uid: str) -> Any:
    wb = _session(pipe)
    try:
        return runs.get_run(wb, harness.login(wb, "qa1"), run_uid)
    finally:
        wb.close()


def _latest_run(pipe: harness.Pipeline) -> Any:
    wb = _session(pipe)
    try:
        return runs.list_runs(wb, harness.login(wb, "qa1"))[0]
    finally:
        wb.close()


# ------------------------------------------------------------------------- the steps


def step_import(pipe: harness.Pipeline) -> None:
    wb = harness.open_wb(pipe.workdir)
    testsets.import_test_set(
        wb, harness.login(wb, "qa1"), pipe.test_set_root, name="crash", workers=1
    )


def step_lock(pipe: harness.Pipeline) -> None:
    wb = harness.open_wb(pipe.workdir)
    testsets.lock_test_set(
        wb, harness.login(wb, "qa1"), "crash", password=harness.ACCOUNTS["qa1"][2]
    )


def step_validate(pipe: harness.Pipeline) -> None:
    wb = harness.open_wb(pipe.workdir)
    runs.validate(
        wb,
        harness.login(wb, "qa1"),
        protocol=pipe.protocol_ref,
        model=pipe.model_ref,
        test_set=harness.TEST_SET,
        device="cpu",
    )


def step_build(pipe: harness.Pipeline) -> None:
    wb = harness.open_wb(pipe.workdir)
    reports.build_report(wb, harness.login(wb, "qa1"), pipe.run_uid)


def step_seal(pipe: harness.Pipeline) -> None:
    wb = harness.open_wb(pipe.workdir)
    reports.seal_report(wb, harness.login(wb, "qa1"), pipe.report_uid)


# ------------------------------------------------------------------ checks per step


def check_import(pipe: harness.Pipeline, reference: dict[str, str]) -> None:
    wb = _session(pipe)
    try:
        with wb.transaction(readonly=True) as s:
            ts = s.scalars(select(TestSet).where(TestSet.name == "crash")).first()
            if ts is not None:  # committed: every file is there
                rows = s.execute(
                    select(TestSetFile.path, TestSetFile.sha256).where(
                        TestSetFile.test_set_id == ts.id
                    )
                ).all()
                assert dict(rows) == reference
        if ts is None:
            step_import(pipe)  # re-run finishes
        with wb.transaction(readonly=True) as s:
            ts = s.scalars(select(TestSet).where(TestSet.name == "crash")).one()
            rows = s.execute(
                select(TestSetFile.path, TestSetFile.sha256).where(TestSetFile.test_set_id == ts.id)
            ).all()
        assert dict(rows) == reference
    finally:
        wb.close()


def check_lock(pipe: harness.Pipeline, reference: str) -> None:
    wb = _session(pipe)
    try:
        with wb.transaction(readonly=True) as s:
            ts = s.scalars(select(TestSet).where(TestSet.name == "crash")).one()
            status, digest, sig = ts.status, ts.manifest_digest, ts.lock_signature_id
        if status == "locked":
            assert digest == reference and sig is not None
        else:
            assert status == "draft" and digest is None and sig is None
            step_lock(pipe)
        assert testsets.get_test_set(wb, "crash").manifest_digest == reference
    finally:
        wb.close()


def _run_state(wb: Any) -> list[tuple[str, str, int, str | None]]:
    with wb.transaction(readonly=True) as s:
        out = []
        for run in s.scalars(select(Run).order_by(Run.id)):
            n = len(s.scalars(select(CaseResult.id).where(CaseResult.run_id == run.id)).all())
            out.append((run.status, run.results_sha256 or "", n, run.verdict))
        return out


def check_validate(pipe: harness.Pipeline, reference: runs.RunSummary) -> None:
    wb = _session(pipe)
    try:
        for status, results_sha, n_cases, verdict in _run_state(wb):
            if status == "completed":
                assert results_sha and n_cases == reference.n_cases and verdict
            else:
                assert (
                    status in ("running", "created", "failed") and not results_sha and not verdict
                )
                assert n_cases <= reference.n_cases
        step_validate(pipe)  # resumes the unfinished run or starts a new one
        summary = runs.list_runs(wb, harness.login(wb, "qa1"))[0]
        assert summary.status == "completed"
        assert summary.endpoints == reference.endpoints
        assert (summary.n_completed, summary.n_failed, summary.verdict) == (
            reference.n_completed,
            reference.n_failed,
            reference.verdict,
        )
        with wb.transaction(readonly=True) as s:
            run = s.scalars(select(Run).where(Run.run_uid == summary.run_uid)).one()
            ids = s.scalars(select(CaseResult.case_id).where(CaseResult.run_id == run.id)).all()
        assert len(ids) == len(set(ids)) == reference.n_cases  # no case stored twice
    finally:
        wb.close()


def check_build(pipe: harness.Pipeline, reference: harness.Pipeline) -> None:
    """The rebuilt report equals the one an uninterrupted build made (same uid, same state)."""
    ref_wb = _session(reference)
    with ref_wb.transaction(readonly=True) as s:
        reference_pdf = s.scalars(select(Report.pdf_path).order_by(Report.id.desc())).first()
    ref_wb.close()
    reference_results = _stable_results(reference_pdf)
    wb = _session(pipe)
    try:
        with wb.transaction(readonly=True) as s:
            before = s.scalars(select(Report).order_by(Report.id)).all()
            for r in before:  # every stored report has its file, byte for byte
                assert (
                    r.pdf_path and Path(r.pdf_path).is_file() and _sha(r.pdf_path) == r.pdf_sha256
                )
            n_before = len(before)
        step_build(pipe)
        with wb.transaction(readonly=True) as s:
            newest = s.scalars(select(Report).order_by(Report.id.desc())).first()
            assert newest is not None
            assert len(s.scalars(select(Report.id)).all()) == n_before + 1
            assert _stable_results(newest.pdf_path) == reference_results
            assert _sha(newest.pdf_path) == newest.pdf_sha256
    finally:
        wb.close()


def _stable_results(pdf: str | Path) -> Any:
    """The report's results.json without the moments and audit data that differ per build."""
    import json

    from workbench.reports.attachments import RESULTS_JSON, extract_attachments

    data = json.loads(extract_attachments(pdf)[RESULTS_JSON])
    return _drop_volatile(data)


def _drop_volatile(node: Any) -> Any:
    volatile = (
        "created_at",
        "generated_at",
        "audit",
        "entry_hash",
        "chain_head",
        "ts",
        "report_id",
    )
    if isinstance(node, dict):
        return {k: _drop_volatile(v) for k, v in node.items() if not any(x in k for x in volatile)}
    if isinstance(node, list):
        return [_drop_volatile(v) for v in node]
    return node


def check_seal(pipe: harness.Pipeline) -> None:
    wb = _session(pipe)
    try:
        info = next(r for r in reports.list_reports(wb) if r.report_uid == pipe.report_uid)
        if info.status == "sealed":
            assert info.sealed_path and _sha(info.sealed_path) == info.sealed_sha256
        else:
            assert info.status == "signed" and not info.sealed_sha256
            step_seal(pipe)
            info = next(r for r in reports.list_reports(wb) if r.report_uid == pipe.report_uid)
        assert reports.verify_report_file(wb, info.sealed_path).valid
    finally:
        wb.close()


check_build.wants_reference = True  # type: ignore[attr-defined]


# ------------------------------------------------------------------------- the trials


def _trials(
    tmp_path: Path,
    base: harness.Pipeline,
    step: Step,
    check: Callable[[harness.Pipeline], None],
    prepare: Callable[[harness.Pipeline], None] | None = None,
    seed: int = 0,
) -> dict[str, int]:
    reference_copy = harness.copy_workdir(base, tmp_path / "timing")
    if prepare:
        prepare(reference_copy)
    duration = _timed(step, reference_copy)
    if getattr(check, "wants_reference", False):
        check = functools.partial(check, reference=reference_copy)
    rng = random.Random(seed)
    killed = 0
    for trial in range(TRIALS):
        pipe = harness.copy_workdir(base, tmp_path / f"trial{trial}")
        if prepare:
            prepare(pipe)
        killed += run_and_kill(step, pipe, rng.uniform(0.0, duration * 0.7))
        harness.verify_chain(pipe.workdir)  # raises AuditChainError naming the first bad entry
        check(pipe)
        harness.verify_chain(pipe.workdir)
    return {"trials": TRIALS, "killed": killed, "duration_ms": int(duration * 1000)}


def _record(request: pytest.FixtureRequest, outcome: dict[str, int]) -> None:
    request.node.user_properties.append(("crash", outcome))
    print(f"\n{request.node.name}: {outcome}")


def test_kill_during_import(
    tmp_path: Path, built_pipeline: harness.Pipeline, request: pytest.FixtureRequest
) -> None:
    ref_pipe = harness.copy_workdir(built_pipeline, tmp_path / "ref")
    step_import(ref_pipe)
    wb = _session(ref_pipe)
    with wb.transaction(readonly=True) as s:
        ts = s.scalars(select(TestSet).where(TestSet.name == "crash")).one()
        reference = dict(
            s.execute(
                select(TestSetFile.path, TestSetFile.sha256).where(TestSetFile.test_set_id == ts.id)
            ).all()
        )
    wb.close()
    outcome = _trials(
        tmp_path, built_pipeline, step_import, lambda p: check_import(p, reference), seed=1
    )
    _record(request, outcome)
    assert outcome["killed"] >= TRIALS // 5


def _prepare_lock(pipe: harness.Pipeline) -> None:
    wb = harness.open_wb(pipe.workdir)
    qa = harness.login(wb, "qa1")
    testsets.import_test_set(wb, qa, pipe.test_set_root, name="crash", workers=1)
    testsets.check_quality(wb, qa, "crash")
    wb.close()


def test_kill_during_lock(
    tmp_path: Path, built_pipeline: harness.Pipeline, request: pytest.FixtureRequest
) -> None:
    reference = testsets.get_test_set(_session(built_pipeline), harness.TEST_SET).manifest_digest
    outcome = _trials(
        tmp_path,
        built_pipeline,
        step_lock,
        lambda p: check_lock(p, reference),
        prepare=_prepare_lock,
        seed=2,
    )
    _record(request, outcome)
    assert outcome["killed"] >= TRIALS // 5


def test_kill_during_inference_and_statistics(
    tmp_path: Path, built_pipeline: harness.Pipeline, request: pytest.FixtureRequest
) -> None:
    reference = _run(built_pipeline, built_pipeline.run_uid)
    outcome = _trials(
        tmp_path, built_pipeline, step_validate, lambda p: check_validate(p, reference), seed=3
    )
    _record(request, outcome)
    assert outcome["killed"] >= TRIALS // 5


def test_kill_during_report_build(
    tmp_path: Path, built_pipeline: harness.Pipeline, request: pytest.FixtureRequest
) -> None:
    outcome = _trials(tmp_path, built_pipeline, step_build, check_build, seed=4)
    _record(request, outcome)
    assert outcome["killed"] >= TRIALS // 5


def test_kill_during_sealing(
    tmp_path: Path, built_pipeline: harness.Pipeline, request: pytest.FixtureRequest
) -> None:
    outcome = _trials(tmp_path, built_pipeline, step_seal, check_seal, seed=5)
    _record(request, outcome)
    assert outcome["killed"] >= TRIALS // 5


def test_kill_the_real_cli_during_validate(
    tmp_path: Path, built_pipeline: harness.Pipeline
) -> None:
    """The same through ``workbench validate`` killed after its start-up, then re-run."""
    import subprocess

    pipe = harness.copy_workdir(built_pipeline, tmp_path / "cli")
    args = [
        "validate",
        "--protocol",
        pipe.protocol_ref,
        "--model",
        pipe.model_ref,
        "--testset",
        harness.TEST_SET,
        "--device",
        "cpu",
    ]
    command = [
        harness.PYTHON,
        "-c",
        "from workbench.cli import main; main()",
        *args,
        "--workdir",
        str(pipe.workdir),
    ]
    env = harness.env(WORKBENCH_USER="qa1", WORKBENCH_PASSWORD=harness.ACCOUNTS["qa1"][2])
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    # Kill once inference has started (the CLI prints its steps on stderr).
    assert proc.stderr is not None
    for line in proc.stderr:
        if "-> inference" in line:
            break
    time.sleep(random.Random(9).uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    verified = harness.cli(pipe.workdir, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    rerun = harness.cli(pipe.workdir, *args, user="qa1")
    assert rerun.returncode in (0, 3), rerun.stderr
    reference = _run(built_pipeline, built_pipeline.run_uid)
    summary = _latest_run(pipe)
    assert summary.status == "completed" and summary.endpoints == reference.endpoints
