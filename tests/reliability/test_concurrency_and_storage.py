"""Concurrent writers on one database, and a full disk during import and report writing.

Concurrency: several processes write audit entries (service calls that each append one)
and run validations at once on SQLite (and PostgreSQL when ``WORKBENCH_TEST_PG_URL`` is
set). Disk full: a child process runs the step under ``RLIMIT_FSIZE`` (SIGXFSZ ignored,
so writes past the limit fail with EFBIG exactly like ENOSPC on a full disk). This needs
no root and no mount; ``test_report_on_full_tmpfs`` adds a real full tmpfs when the
machine lets us mount one (root), and is skipped otherwise.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest
from sqlalchemy import func, select

from workbench import errors
from workbench.records import audit
from workbench.records.models import AuditEntry, CaseResult, Run, TestSet
from workbench.services import reports, runs, testsets

WRITERS, WRITES = 4, 60


def _child(target: Any, args: tuple[Any, ...], queue: Any) -> None:
    try:
        queue.put(("ok", target(*args)))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        queue.put(
            (
                "error",
                f"{type(error).__module__}.{type(error).__name__}: {error}",
                traceback.format_exc(),
            )
        )
    finally:
        queue.close()
        queue.join_thread()
        os._exit(0)


def in_processes(target: Any, args_list: list[tuple[Any, ...]], timeout: float = 300) -> list[Any]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(target, args, queue)) for args in args_list]
    for p in procs:
        p.start()
    results = [queue.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(30)
    return results


def _write_entries(workdir: str, db_url: str | None, writer: int, token: str = "w") -> int:
    from workbench.services.context import Workbench

    wb = Workbench.open(workdir, db_url)
    for i in range(WRITES):
        with wb.transaction() as session:
            audit.append(
                session,
                actor="qa1",
                action="test.concurrent_write",
                record_type="probe",
                record_id=f"{token}{writer}-{i}",
                new={"writer": writer, "i": i},
            )
    wb.close()
    return WRITES


def _db_url() -> list[str | None]:
    urls: list[str | None] = [None]
    if os.environ.get("WORKBENCH_TEST_PG_URL"):
        urls.append(os.environ["WORKBENCH_TEST_PG_URL"])
    return urls


@pytest.fixture
def fresh_db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the workdir), or a database of its own on the PostgreSQL test server.

    A server outlives test runs; a database of its own keeps earlier runs' entries and
    checkpoints (signed with keys of other workdirs) out of this one.
    """
    server = request.param
    if server is None:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"wb_concurrency_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize(
    "fresh_db_url", _db_url(), ids=lambda u: "postgres" if u else "sqlite", indirect=True
)
def test_concurrent_audit_writers_lose_nothing(tmp_path: Path, fresh_db_url: str | None) -> None:
    db_url = fresh_db_url
    workdir = tmp_path / "wb"
    wb = (
        harness.open_wb(workdir)
        if db_url is None
        else __import__("workbench.services.context", fromlist=["Workbench"]).Workbench.open(
            workdir, db_url
        )
    )
    with wb.transaction(readonly=True) as s:
        start = int(s.scalar(select(func.count()).select_from(AuditEntry)))
    # A token of this test run: a PostgreSQL server may hold entries of earlier runs.
    token = f"{os.getpid()}-{tmp_path.name}-w"
    results = in_processes(
        _write_entries, [(str(workdir), db_url, w, token) for w in range(WRITERS)]
    )
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors  # in particular no "database is locked"
    with wb.transaction(readonly=True) as s:
        ids = s.scalars(
            select(AuditEntry.record_id).where(
                AuditEntry.action == "test.concurrent_write",
                AuditEntry.record_id.like(f"{token}%"),
            )
        ).all()
        seqs = s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
        checkpoints = s.scalar(  # signed automatically every audit.CHECKPOINT_EVERY entries
            select(func.count()).where(AuditEntry.action == audit.CHECKPOINT_ACTION)
        )
    assert len(ids) == len(set(ids)) == WRITERS * WRITES  # none lost, none duplicated
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # gap-free
    assert checkpoints == (WRITERS * WRITES) // audit.CHECKPOINT_EVERY
    assert len(seqs) == start + WRITERS * WRITES + checkpoints
    from workbench.services.audit_trail import verify_audit_chain

    verify_audit_chain(wb)
    wb.close()


def _validate(workdir: str, protocol: str, model: str) -> str:
    wb = harness.open_wb(workdir)
    summary = runs.validate(
        wb,
        harness.login(wb, "qa1"),
        protocol=protocol,
        model=model,
        test_set=harness.TEST_SET,
        device="cpu",
    )
    wb.close()
    return summary.status


@pytest.mark.slow
def test_concurrent_validations_and_writers(wb_copy: harness.Pipeline) -> None:
    args = (str(wb_copy.workdir), wb_copy.protocol_ref, wb_copy.model_ref)
    ctx_results = in_processes(
        lambda kind, *a: _validate(*a) if kind == "v" else _write_entries(*a),
        [
            ("v", *args),
            ("v", *args),
            ("v", *args),
            ("w", str(wb_copy.workdir), None, 0),
            ("w", str(wb_copy.workdir), None, 1),
        ],
    )
    errors = [r for r in ctx_results if r[0] != "ok"]
    assert not errors, errors
    assert "locked" not in repr(ctx_results)
    harness.verify_chain(wb_copy.workdir)
    wb = harness.open_wb(wb_copy.workdir)
    with wb.transaction(readonly=True) as s:
        for run in s.scalars(select(Run)):
            ids = s.scalars(select(CaseResult.case_id).where(CaseResult.run_id == run.id)).all()
            assert len(ids) == len(set(ids)), f"{run.run_uid}: a case stored twice: {sorted(ids)}"
            assert run.status == "completed" and len(ids) == 3
    wb.close()


# ---------------------------------------------------------------------- disk full


def _limited(limit_bytes: int, target: Any, *args: Any) -> Any:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return target(*args)


def _import(workdir: str, root: str) -> str:
    wb = harness.open_wb(workdir)
    testsets.import_test_set(wb, harness.login(wb, "qa1"), root, name="full-disk", workers=1)
    return "imported"


def _build(workdir: str, run_uid: str) -> str:
    wb = harness.open_wb(workdir)
    return reports.build_report(wb, harness.login(wb, "qa1"), run_uid).report_uid


def _state(workdir: Path) -> tuple[int, int]:
    wb = harness.open_wb(workdir)
    with wb.transaction(readonly=True) as s:
        n_sets = int(s.scalar(select(func.count()).select_from(TestSet)))
    wb.close()
    return n_sets, len(list((workdir / "reports").glob("*.pdf")))


def _disk_full_outcome(wb_copy: harness.Pipeline, target: Any, *args: Any, headroom: int) -> Any:
    limit = 48 * 1024 + headroom  # files (WAL, PDF) may not grow past 48 KiB
    [outcome] = in_processes(_limited, [(limit, target, *args)])
    return outcome


def test_disk_full_during_import_leaves_the_database_consistent(wb_copy: harness.Pipeline) -> None:
    before = harness.table_counts(wb_copy.workdir)
    outcome = _disk_full_outcome(
        wb_copy, _import, str(wb_copy.workdir), str(wb_copy.test_set_root), headroom=4096
    )
    assert outcome[0] == "error", outcome
    harness.verify_chain(wb_copy.workdir)
    after = harness.table_counts(wb_copy.workdir)
    changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert set(changed) <= {"audit_log"}, changed  # nothing half-imported
    # The database still works: the import succeeds once there is room again.
    _import(str(wb_copy.workdir), str(wb_copy.test_set_root))


def test_disk_full_during_import_is_a_clear_error(wb_copy: harness.Pipeline) -> None:
    outcome = _disk_full_outcome(
        wb_copy, _import, str(wb_copy.workdir), str(wb_copy.test_set_root), headroom=4096
    )
    assert outcome[0] == "error" and outcome[1].startswith("workbench.errors."), outcome[1]
    assert "disk" in outcome[1].lower() or "space" in outcome[1].lower()


def test_disk_full_during_report_writing_leaves_no_record(wb_copy: harness.Pipeline) -> None:
    before = harness.table_counts(wb_copy.workdir)
    outcome = _disk_full_outcome(wb_copy, _build, str(wb_copy.workdir), wb_copy.run_uid, headroom=0)
    assert outcome[0] == "error", outcome
    harness.verify_chain(wb_copy.workdir)
    after = harness.table_counts(wb_copy.workdir)
    changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert set(changed) <= {"audit_log"}, changed
    assert "ReportError" in outcome[1] or "OSError" in outcome[1], outcome[1]
    assert _build(str(wb_copy.workdir), wb_copy.run_uid)  # works again once there is room


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path("/tmp/wb-mount-probe")
    probe.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
    )
    if done.returncode == 0:
        subprocess.run(["umount", str(probe)], capture_output=True)
        return True
    return False


@pytest.mark.skipif(not _can_mount(), reason="needs root and a working 'mount -t tmpfs'")
def test_report_on_full_tmpfs(wb_copy: harness.Pipeline, tmp_path: Path) -> None:
    reports_dir = wb_copy.workdir / "reports"
    shutil.rmtree(reports_dir)
    reports_dir.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(reports_dir)], check=True
    )
    try:
        before = harness.table_counts(wb_copy.workdir)
        wb = harness.open_wb(wb_copy.workdir)
        with pytest.raises(errors.ReportError, match="No space left on device"):
            reports.build_report(wb, harness.login(wb, "qa1"), wb_copy.run_uid)
        wb.close()
        after = harness.table_counts(wb_copy.workdir)
        changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        assert set(changed) <= {"audit_log"}, changed
        harness.verify_chain(wb_copy.workdir)
    finally:
        subprocess.run(["umount", str(reports_dir)], check=False)
