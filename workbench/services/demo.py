"""The headless demonstration: the whole flow on synthetic data, idempotently.

``run_demo`` synthesizes a CT phantom test set, imports, quality-checks and
locks it, builds and registers two candidate models (one trained without one
scanner's data), approves the shipped protocols, runs every model under every
protocol, queues discrepancies, and builds and signs the PDF reports.

Everything is done through the services with demonstration accounts, so the
audit trail of the demo workdir is a real one. The demo's clinical reviewer is
*simulated* and says so: its account is named "Demo Reviewer (simulated)" and
each of its decisions carries a comment that it is a scripted demonstration
decision. Discrepancies of one run are deliberately left open so that a person
can adjudicate them in the app.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from workbench.errors import DuplicateError, NotFoundError
from workbench.records.models import ProtocolStatus, Run, RunStatus
from workbench.services import accounts, adjudication, models, protocols, reports, runs, testsets
from workbench.services.context import Actor, Workbench

__all__ = ["DEMO_ACCOUNTS", "DemoSummary", "run_demo", "PROTOCOL_DIR", "DEMO_TEST_SET"]

#: Folder of the protocols shipped with the project.
PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "validation_protocols"

#: Name of the demo test set (the shipped protocols refer to it).
DEMO_TEST_SET = "demo-phantoms"

_SEED = 2026

#: Demonstration accounts: username -> (full name, role, password). Passwords are
#: for the local demo workdir only; they are also written to DIR/demo-accounts.json (0600).
DEMO_ACCOUNTS: dict[str, tuple[str, str, str]] = {
    "admin": ("Ada Admin", "admin", "Harbor-Lamp-2026!"),
    "qa.author": ("Quinn Avery (QA)", "qa", "Quill-Maple-2026!"),
    "qa.approver": ("Pat Morgan (QA lead)", "qa", "Stone-Birch-2026!"),
    "dr.reviewer": ("Demo Reviewer (simulated)", "reviewer", "Cedar-Drift-2026!"),
    "dr.second": ("Dr. Sam Rivera (radiologist)", "reviewer", "Orbit-Fern-2026!"),
    "auditor": ("Alex Auditor", "auditor", "Ledger-Mint-2026!"),
}


@dataclass
class DemoSummary:
    """What the demo did: verdicts per run and report paths."""

    workdir: Path
    test_set: str = ""
    manifest_digest: str = ""
    runs: list[runs.RunSummary] = field(default_factory=list)
    reports: list[reports.ReportInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ok: bool = True


def _actor(wb: Workbench, username: str) -> Actor:
    return accounts.login(wb, username, DEMO_ACCOUNTS[username][2])


def _ensure_accounts(wb: Workbench) -> None:
    with wb.transaction(readonly=True) as session:
        from workbench.records.users import list_users

        existing = {u.username for u in list_users(session)}
    if "admin" not in existing:
        name, _role, password = DEMO_ACCOUNTS["admin"]
        accounts.bootstrap_admin(wb, username="admin", full_name=name, password=password)
    admin = _actor(wb, "admin")
    for username, (name, role, password) in DEMO_ACCOUNTS.items():
        if username == "admin" or username in existing:
            continue
        accounts.create_user(
            wb,
            admin,
            username=username,
            full_name=name,
            role=role,
            password=password,
            must_change_password=False,
        )
    secrets_file = wb.workdir.root / "demo-accounts.json"
    if not secrets_file.exists():
        secrets_file.write_text(
            json.dumps(
                {u: {"role": r, "password": p} for u, (_, r, p) in DEMO_ACCOUNTS.items()}, indent=2
            ),
            encoding="utf-8",
        )
        os.chmod(secrets_file, 0o600)


def _ensure_test_set(
    wb: Workbench, qa: Actor, n_cases: int, echo: Callable[[str], None], bar: Any
) -> testsets.TestSetInfo:
    from workbench.dicom.synth import generate_test_set

    try:
        info = testsets.get_test_set(wb, DEMO_TEST_SET)
    except NotFoundError:
        info = None
    if info is None:
        root = wb.workdir.testsets_dir / DEMO_TEST_SET
        if not (root / "dataset.json").exists():
            echo(f"Synthesizing {n_cases} CT phantom cases into {root}")
            generate_test_set(root, n_cases=n_cases, seed=_SEED, progress=bar("synthesize"))
        echo("Importing and indexing the test set")
        info = testsets.import_test_set(wb, qa, root, name=DEMO_TEST_SET, progress=bar("index"))
    if info.status != "locked":
        echo("Running the data-quality gate")
        testsets.check_quality(wb, qa, DEMO_TEST_SET)
        echo("Locking the test set (e-signed by qa.author)")
        info = testsets.lock_test_set(
            wb, qa, DEMO_TEST_SET, password=DEMO_ACCOUNTS["qa.author"][2], progress=bar("re-hash")
        )
    return info


def _ensure_models(
    wb: Workbench,
    qa: Actor,
    root: Path,
    echo: Callable[[str], None],
    progress: Callable[[int, int, str], None] | None = None,
) -> list[str]:
    from workbench.inference.demo_models import build_demo_models

    registered = {m.ref: m for m in models.list_models(wb)}
    out_dir = wb.workdir.root / "demo-models"
    built = None
    refs: list[str] = []
    marker = out_dir / "built.json"
    if marker.exists():
        refs = json.loads(marker.read_text(encoding="utf-8"))
    if refs and all(ref in registered for ref in refs):
        return refs
    echo("Training the demo candidate models (a few minutes on a CPU)")
    built = build_demo_models(root, out_dir, seed=_SEED, progress=progress)
    refs = []
    for candidate in built:
        ref = f"{candidate.spec.name}@{candidate.spec.version}"
        if ref not in registered:
            models.register_model(
                wb, qa, candidate.path, candidate.spec, card={"training": candidate.training}
            )
        refs.append(ref)
    marker.write_text(json.dumps(refs), encoding="utf-8")
    return refs


def _ensure_protocols(wb: Workbench, qa: Actor, approver: Actor) -> list[str]:
    refs = []
    for path in sorted(PROTOCOL_DIR.glob("*.yaml")):
        try:
            info = protocols.add_protocol_version(wb, qa, path)
        except DuplicateError:
            raise
        if info.status == ProtocolStatus.DRAFT.value:
            info = protocols.approve_protocol(
                wb, approver, info.ref, password=DEMO_ACCOUNTS["qa.approver"][2]
            )
        refs.append(info.ref)
    return refs


def _completed_run(wb: Workbench, qa: Actor, protocol_ref: str, model_ref: str) -> str | None:
    for summary in runs.list_runs(wb, qa):
        if (
            summary.protocol == protocol_ref
            and summary.model == model_ref
            and summary.test_set == DEMO_TEST_SET
            and summary.status == RunStatus.COMPLETED.value
        ):
            return summary.run_uid
    return None


def _simulated_adjudication(wb: Workbench, reviewer: Actor, run_uid: str) -> int:
    """Decide every open discrepancy of a run with a scripted, labelled decision."""
    decided = 0
    for item in adjudication.queue(wb, reviewer, run_uid):
        if item.status != "open" or item.read_by_me:
            continue
        case = adjudication.open_case(wb, reviewer, item.discrepancy_id)
        dice = case.details.get("dice")
        decision = (
            "both_acceptable" if isinstance(dice, int | float) and dice >= 0.3 else "indeterminate"
        )
        adjudication.adjudicate(
            wb,
            reviewer,
            item.discrepancy_id,
            decision=decision,
            comment=(
                "Scripted decision of the simulated demo reviewer (synthetic data); "
                "not a clinical judgement."
            ),
            password=DEMO_ACCOUNTS["dr.reviewer"][2],
        )
        decided += 1
    return decided


def run_demo(
    wb: Workbench,
    *,
    n_cases: int = 60,
    echo: Callable[[str], None] = print,
    progress_factory: Callable[[str], Any] | None = None,
) -> DemoSummary:
    """Run the whole demonstration flow (idempotent: finished steps are kept).

    Parameters
    ----------
    wb : Workbench
    n_cases : int, default 60
        Number of synthetic cases.
    echo : callable
        Prints a line of progress.
    progress_factory : callable, optional
        ``factory(description)`` returns a ``progress(done, total, message)`` callback.

    Returns
    -------
    DemoSummary
    """
    bars: list[Any] = []

    def bar(description: str) -> Any:
        if progress_factory is None:
            return None
        made = progress_factory(description)
        bars.append(made)
        return made

    summary = DemoSummary(workdir=wb.workdir.root)
    _ensure_accounts(wb)
    qa, approver = _actor(wb, "qa.author"), _actor(wb, "qa.approver")
    reviewer = _actor(wb, "dr.reviewer")
    info = _ensure_test_set(wb, qa, n_cases, echo, bar)
    summary.test_set, summary.manifest_digest = info.name, info.manifest_digest or ""
    model_refs = _ensure_models(wb, qa, Path(info.root_path), echo, bar("training"))
    protocol_refs = _ensure_protocols(wb, qa, approver)
    leave_open = None
    for protocol_ref in protocol_refs:
        for model_ref in model_refs:
            run_uid = _completed_run(wb, qa, protocol_ref, model_ref)
            if run_uid is None:
                echo(f"Validating {model_ref} under {protocol_ref}")
                result = runs.validate(
                    wb,
                    qa,
                    protocol=protocol_ref,
                    model=model_ref,
                    test_set=DEMO_TEST_SET,
                    progress=bar(f"{model_ref}"),
                    on_step=lambda s: echo(f"   - {s}"),
                )
                run_uid = result.run_uid
            summary.runs.append(runs.get_run(wb, qa, run_uid))
    for b in bars:
        if hasattr(b, "close"):
            b.close()
    # One run's discrepancies are left for a person to adjudicate in the app.
    with wb.transaction(readonly=True) as session:
        candidates = [
            r.run_uid for r in session.scalars(select(Run).order_by(Run.id)) if r.discrepancies
        ]
    if candidates:
        leave_open = candidates[-1]
    for run_summary in summary.runs:
        uid = run_summary.run_uid
        report = reports.latest_report(wb, uid)
        if report is not None and report.status == "sealed":
            summary.reports.append(report)
            continue
        if uid != leave_open:
            _simulated_adjudication(wb, reviewer, uid)
        if report is None or not reports.is_current(wb, report.report_uid):
            echo(f"Building the report of {uid}")
            report = reports.build_report(wb, qa, uid)
        report = reports.ensure_signed(
            wb, qa, report.report_uid, "authored", DEMO_ACCOUNTS["qa.author"][2]
        )
        if uid == leave_open:
            summary.notes.append(
                f"Discrepancies of {uid} are left open for adjudication in the app; its report "
                f"{report.report_uid} awaits review, approval and sealing."
            )
            summary.reports.append(report)
            continue
        second = _actor(wb, "dr.second")
        report = reports.ensure_signed(
            wb, second, report.report_uid, "reviewed", DEMO_ACCOUNTS["dr.second"][2]
        )
        report = reports.ensure_signed(
            wb, approver, report.report_uid, "approved", DEMO_ACCOUNTS["qa.approver"][2]
        )
        echo(f"Sealing {report.report_uid}")
        report = reports.seal_report(wb, approver, report.report_uid)
        summary.reports.append(report)
    from workbench.services.audit_trail import verify_audit_chain

    status = verify_audit_chain(wb)
    summary.notes.append(
        f"Audit chain intact: {status.count} entries, head {status.head_hash[:16]}"
    )
    summary.ok = all(r.status == RunStatus.COMPLETED.value for r in summary.runs)
    return summary
