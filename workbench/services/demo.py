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

The demo also runs a small reader study (:func:`ensure_simulated_reader_study`):
four *simulated* readers (accounts "Simulated Reader k (simulated)") read 40
cases without and with the demo-good model's output. Their ratings come from
the seeded binormal simulation the study's design pre-specifies
(:func:`workbench.studies.simulate_ratings`), enter through the reading
services like a person's (each rating, signature and report step audited), and
the study is analysed and its report built, signed and sealed. Nothing of it is
a clinical reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from workbench.errors import DuplicateError, NotFoundError
from workbench.records.models import ProtocolStatus, Run, RunStatus, utcnow
from workbench.services import (
    accounts,
    adjudication,
    models,
    protocols,
    reports,
    runs,
    studies,
    study_reports,
    testsets,
)
from workbench.services.context import Actor, Workbench

__all__ = [
    "DEMO_ACCOUNTS",
    "DEMO_READERS",
    "DEMO_STUDY_ID",
    "DEMO_TEST_SET",
    "DemoSummary",
    "PROTOCOL_DIR",
    "demo_study_design",
    "ensure_simulated_reader_study",
    "run_demo",
]

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
    "sim.reader1": ("Simulated Reader 1 (simulated)", "reviewer", "Sim-Reader-One-2026!"),
    "sim.reader2": ("Simulated Reader 2 (simulated)", "reviewer", "Sim-Reader-Two-2026!"),
    "sim.reader3": ("Simulated Reader 3 (simulated)", "reviewer", "Sim-Reader-Three-2026!"),
    "sim.reader4": ("Simulated Reader 4 (simulated)", "reviewer", "Sim-Reader-Four-2026!"),
}

#: The demo reader study's simulated readers, in design order.
DEMO_READERS = ("sim.reader1", "sim.reader2", "sim.reader3", "sim.reader4")

#: Id of the demo reader study.
DEMO_STUDY_ID = "demo-reader-study"


@dataclass
class DemoSummary:
    """What the demo did: verdicts per run and report paths."""

    workdir: Path
    test_set: str = ""
    manifest_digest: str = ""
    runs: list[runs.RunSummary] = field(default_factory=list)
    reports: list[reports.ReportInfo] = field(default_factory=list)
    study_report: study_reports.StudyReportInfo | None = None
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


def _run_order(path: Path) -> tuple[int, str]:
    """Detection protocols run last: they derive their marks from the probability maps
    the segmentation runs of the same models kept, instead of running the models again."""
    from workbench.protocols import load_protocol

    return (int(load_protocol(path).task.value == "detection"), path.name)


def _ensure_protocols(wb: Workbench, qa: Actor, approver: Actor) -> list[str]:
    refs = []
    for path in sorted(PROTOCOL_DIR.glob("*.yaml"), key=_run_order):
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


def demo_study_design(test_set: str, model_ref: str, *, n_cases: int = 40) -> str:
    """The demo reader study's design: 4 simulated readers x 2 arms x ``n_cases`` cases.

    The readers are simulated, so the design says so and pre-specifies the simulation:
    binormal separations 0.9 to 1.5 (unaided AUCs of about 0.74 to 0.86) and an aided
    shift of 0.6. A simulated reader remembers nothing, so the washout is 0 days.
    """
    return f"""\
kind: reader_study
id: {DEMO_STUDY_ID}
version: 1
title: Demo reader study - malignancy calls with and without {model_ref} (simulated readers)
test_set: {{name: {test_set}}}
truth: {{labels_column: consensus_malignant}}
arms:
  - {{id: unaided}}
  - {{id: aided, model: {model_ref}}}
readers: [{", ".join(DEMO_READERS)}]
design: fully_crossed
rating_scale: five_point
washout_days: 0
seed: {_SEED}
cases_per_arm: {n_cases}
primary_endpoint: auc_difference
analysis: {{method: obuchowski_rockette, covariance: jackknife}}
hypothesis: non_inferiority
margin: 0.05
level: 0.95
simulation:
  method: binormal
  separation: [0.9, 1.1, 1.3, 1.5]
  aided_shift: 0.6
"""


def ensure_simulated_reader_study(
    wb: Workbench,
    *,
    test_set: str,
    model_ref: str,
    credentials: Callable[[str], tuple[Actor, str]],
    admin: str,
    author: str,
    approver: str,
    n_cases: int = 40,
    echo: Callable[[str], None] = print,
) -> study_reports.StudyReportInfo:
    """Run the demo's simulated reader study to its sealed report (idempotent).

    Parameters
    ----------
    wb : Workbench
    test_set, model_ref : str
        The locked test set and the model shown in the aided arm (with a completed run).
    credentials : callable
        ``credentials(username) -> (actor, password)`` for ``admin``, ``author``,
        ``approver`` and the simulated readers.
    admin, author, approver : str
        Who creates the reader accounts, who designs the study and authors the report,
        and who approves both (another QA user).
    n_cases : int, default 40
        Cases per arm (drawn from the test set with the design's seed).
    echo : callable
        Prints a line of progress.

    Returns
    -------
    StudyReportInfo
        The sealed study report.
    """
    from workbench.studies import load_study_design, simulate_ratings

    admin_actor, _ = credentials(admin)
    with wb.transaction(readonly=True) as session:
        from workbench.records.users import list_users

        existing = {u.username for u in list_users(session)}
    for username in DEMO_READERS:
        if username not in existing:
            name, role, password = DEMO_ACCOUNTS[username]
            accounts.create_user(
                wb,
                admin_actor,
                username=username,
                full_name=name,
                role=role,
                password=password,
                must_change_password=False,
            )
    qa, qa_password = credentials(author)
    lead, lead_password = credentials(approver)
    text = demo_study_design(test_set, model_ref, n_cases=n_cases)
    design = load_study_design(text.encode("utf-8"))[0]
    info = studies.add_study(wb, qa, text.encode("utf-8"))
    ref = info.ref
    done = [r for r in study_reports.list_study_reports(wb, qa, ref) if r.status == "sealed"]
    if done:
        return done[0]
    if info.status == "draft":
        echo(f"Approving the simulated reader study {ref}")
        studies.approve_study(wb, lead, ref, password=lead_password)
    root = Path(testsets.get_test_set(wb, test_set).root_path)
    labels = pd.read_csv(root / "reference" / "labels.csv", dtype={"case_id": str})
    truth = labels.set_index("case_id")["consensus_malignant"]
    progress = {(p.reader, p.arm): p.status for p in studies.reading_progress(wb, qa, ref)}
    echo(f"Simulated readers read {ref} (seeded binormal ratings, labelled simulated)")
    simulated: pd.DataFrame | None = None
    for reader in design.readers:
        actor, password = credentials(reader)
        for arm in studies.arm_order(design, reader):
            if progress.get((reader, arm)) == "signed":
                continue
            studies.open_reading(wb, actor, ref, arm)
            order = studies.reading_order(wb, actor, ref, arm)
            if simulated is None:  # once, over the study's cases in id order: reproducible
                simulated = simulate_ratings(truth.loc[sorted(order)], design)
            mine = simulated[(simulated["reader"] == reader) & (simulated["arm"] == arm)]
            now = utcnow()
            studies.rate_cases(
                wb,
                actor,
                ref,
                arm,
                dict(zip(mine["case_id"], mine["rating"], strict=True)),
                shown_at={
                    c: now - timedelta(seconds=float(s))
                    for c, s in zip(mine["case_id"], mine["seconds"], strict=True)
                },
            )
            studies.sign_arm(wb, actor, ref, arm, password=password)
    result = studies.analyze_study(wb, qa, ref)
    echo(
        f"   - {ref}: AUC difference {result.difference.value:+.3f} "
        f"[{result.difference.ci_low:.3f}, {result.difference.ci_high:.3f}], "
        f"verdict {result.verdict.label}"
    )
    drafts = [r for r in study_reports.list_study_reports(wb, qa, ref) if r.status != "sealed"]
    report = drafts[0] if drafts else study_reports.build_study_report_pdf(wb, qa, ref)
    uid = report.report_uid
    if not any(s["meaning"] == "authored" for s in report.signatures):
        report = study_reports.sign_study_report(
            wb, qa, uid, meaning="authored", password=qa_password
        )
    if not any(s["meaning"] == "approved" for s in report.signatures):
        report = study_reports.sign_study_report(
            wb, lead, uid, meaning="approved", password=lead_password
        )
    echo(f"Sealing {uid}")
    return study_reports.seal_study_report(wb, lead, uid)


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
    # One run's discrepancies are left for a person to adjudicate in the app (not a
    # detection run's: the demo's detection runs are reported complete).
    detection_runs = {
        r.run_uid
        for r in summary.runs
        if r.results is not None and r.results.evaluation.task == "detection"
    }
    with wb.transaction(readonly=True) as session:
        candidates = [
            r.run_uid
            for r in session.scalars(select(Run).order_by(Run.id))
            if r.discrepancies and r.run_uid not in detection_runs
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
    good = next((m for m in model_refs if m.startswith("demo-good@")), None)
    if good is not None:
        summary.study_report = ensure_simulated_reader_study(
            wb,
            test_set=DEMO_TEST_SET,
            model_ref=good,
            credentials=lambda u: (_actor(wb, u), DEMO_ACCOUNTS[u][2]),
            admin="admin",
            author="qa.author",
            approver="qa.approver",
            echo=echo,
        )
        summary.notes.append(
            f"Reader study {DEMO_STUDY_ID} (simulated readers): report "
            f"{summary.study_report.report_uid} {summary.study_report.status}, "
            f"{summary.study_report.sealed_path}"
        )
    from workbench.services.audit_trail import verify_audit_chain

    status = verify_audit_chain(wb)
    summary.notes.append(
        f"Audit chain intact: {status.count} entries, head {status.head_hash[:16]}"
    )
    summary.ok = all(r.status == RunStatus.COMPLETED.value for r in summary.runs)
    return summary
