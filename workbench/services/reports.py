"""Report use cases: build the draft PDF, e-sign it, seal it, verify a PDF.

The report's numbers all come from the stored run (``Run.results``, the case
results, the adjudications and the audit trail); this module only arranges
them into :class:`~workbench.reports.ReportContent`.

Life cycle: ``draft`` (built; e-signatures are collected on the SHA-256 of
its ``results.json``) -> ``signed`` (every signature the protocol requires is
present) -> ``sealed`` (the final PDF, with the signature manifestations
printed, is PAdES-sealed with the workbench's certificate and its SHA-256
written to the audit trail). Approval is refused while discrepancies are
unadjudicated when the protocol requires adjudication; the author of a report
cannot approve it.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench import __version__
from workbench.errors import (
    PermissionDeniedError,
    RecordLockedError,
    ReportError,
    SignatureError,
    WorkflowError,
)
from workbench.protocols import Protocol, load_protocol, metric_info
from workbench.records import audit, signatures
from workbench.records.models import (
    AuditEntry,
    ProtocolVersion,
    QualityReport,
    RegisteredModel,
    Report,
    ReportStatus,
    Run,
    RunStatus,
    Signature,
    TestSet,
    User,
    utcnow,
)
from workbench.reports import (
    build_report as build_pdf,
)
from workbench.reports import content as rc
from workbench.reports import (
    ensure_signing_identity,
    seal_pdf,
    verify_pdf,
)
from workbench.reports.attachments import RESULTS_JSON, report_attachments
from workbench.reports.keys import SigningIdentity
from workbench.services.adjudication import adjudication_summary
from workbench.services.context import Actor, Workbench, current_user, get_one
from workbench.services.runs import case_frame

__all__ = [
    "ReportInfo",
    "ReportCheck",
    "build_report",
    "sign_report",
    "ensure_signed",
    "seal_report",
    "verify_report_file",
    "list_reports",
    "latest_report",
    "is_current",
    "signing_identity",
]

_MEANING_PERMISSION = {
    "authored": "report.sign.author",
    "reviewed": "report.sign.review",
    "approved": "report.sign.approve",
}


@dataclass(frozen=True, slots=True)
class ReportInfo:
    """A stored report.

    Parameters
    ----------
    report_uid, run_uid, status : str
    pdf_path, pdf_sha256 : str or None
        The draft PDF.
    sealed_path, sealed_sha256 : str or None
        The sealed final PDF.
    content_sha256 : str or None
        SHA-256 of ``results.json``: what every e-signature signs.
    signatures : list of dict
        Printed name, role, meaning, UTC time of each e-signature.
    missing_signatures : list of str
        ``role (meaning)`` still required.
    """

    report_uid: str
    run_uid: str
    status: str
    pdf_path: str | None
    pdf_sha256: str | None
    sealed_path: str | None
    sealed_sha256: str | None
    content_sha256: str | None
    created_by: str
    created_at: str
    signatures: list[dict[str, Any]] = field(default_factory=list)
    missing_signatures: list[str] = field(default_factory=list)


def _protocol(session: Session, run: Run) -> Protocol:
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    assert pv is not None
    return load_protocol(pv.yaml_text.encode("utf-8"))


def _signature_rows(session: Session, report: Report) -> list[Signature]:
    return list(
        session.scalars(
            select(Signature)
            .where(Signature.record_type == "report", Signature.record_id == report.report_uid)
            .order_by(Signature.id)
        )
    )


def _missing(protocol: Protocol, sigs: list[Signature]) -> list[str]:
    have = {(s.role, s.meaning) for s in sigs}
    return [
        f"{r.role.value} ({r.meaning})"
        for r in protocol.signatures
        if (r.role.value, r.meaning) not in have
    ]


def _info(session: Session, report: Report) -> ReportInfo:
    run = session.get(Run, report.run_id)
    assert run is not None
    sigs = _signature_rows(session, report)
    return ReportInfo(
        report_uid=report.report_uid,
        run_uid=run.run_uid,
        status=report.status,
        pdf_path=report.pdf_path,
        pdf_sha256=report.pdf_sha256,
        sealed_path=report.sealed_path,
        sealed_sha256=report.sealed_sha256,
        content_sha256=report.content_sha256,
        created_by=report.created_by,
        created_at=report.created_at.isoformat(),
        signatures=[
            {
                "printed_name": s.printed_name,
                "username": s.username,
                "role": s.role,
                "meaning": s.meaning,
                "signed_at": s.signed_at.isoformat(),
                "signature_id": s.id,
            }
            for s in sigs
        ],
        missing_signatures=_missing(_protocol(session, run), sigs),
    )


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return os.environ.get("WORKBENCH_COMMIT", "unknown")
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _estimate(data: dict[str, Any] | None, *, n: int = 0, reason: str = "") -> rc.ReportEstimate:
    if not data or any(data.get(k) is None for k in ("value", "ci_low", "ci_high")):
        return rc.ReportEstimate.missing("not_estimable", reason or "not estimable", n=n)
    return rc.ReportEstimate(
        value=float(data["value"]),
        ci_low=float(data["ci_low"]),
        ci_high=float(data["ci_high"]),
        level=float(data.get("level", 0.95)),
        method=str(data.get("method", "")),
        n=int(data.get("n", n) or n),
    )


def _stratum_estimate(row: dict[str, Any]) -> rc.ReportEstimate:
    n = int(row.get("n") or 0)
    if row.get("value") is None or row.get("ci_low") is None or row.get("ci_high") is None:
        status = (
            "insufficient_n"
            if "insufficient" in str(row.get("reason", "")).lower()
            or (str(row.get("verdict")) == "NOT_ASSESSED" and row.get("value") is None)
            else "not_estimable"
        )
        return rc.ReportEstimate.missing(status, str(row.get("reason") or status), n=n)
    return rc.ReportEstimate(
        value=float(row["value"]),
        ci_low=float(row["ci_low"]),
        ci_high=float(row["ci_high"]),
        level=float(row.get("level") or 0.95),
        method=str(row.get("method", "")),
        n=n,
    )


def _verdict(value: Any) -> rc.Verdict:
    text = str(value or "").lower()
    if text == "pass":
        return rc.Verdict.PASS
    if text == "fail":
        return rc.Verdict.FAIL
    return rc.Verdict.NOT_EVALUABLE


def _direction(text: str) -> str:
    for op in ("<=", ">=", "<", ">"):
        if op in text:
            return op
    return ">="


def _criterion_threshold(protocol: Protocol, endpoint_id: str) -> tuple[float | None, str]:
    for ep in protocol.endpoints:
        if ep.id == endpoint_id:
            return float(ep.criterion.threshold), str(ep.criterion.operator.value)
    return None, ">="


def _content(
    session: Session, report: Report, *, final: bool, signatures_list: list[Signature]
) -> rc.ReportContent:
    run = session.get(Run, report.run_id)
    assert run is not None
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    model = session.get(RegisteredModel, run.model_id)
    test_set = session.get(TestSet, run.test_set_id)
    assert pv is not None and model is not None and test_set is not None
    protocol = load_protocol(pv.yaml_text.encode("utf-8"))
    results = run.results or {}
    evaluation = results.get("evaluation", {})
    supplementary = results.get("supplementary", {})
    accounting = results.get("accounting", {})
    frame = case_frame(session, run.id, protocol)
    author = session.scalars(select(User).where(User.username == report.created_by)).first()
    env = run.environment or {}

    # Dataset.
    counts = []
    for column, label in (
        ("manufacturer", "Scanner manufacturer"),
        ("manufacturer_model_name", "Scanner model"),
        ("patient_sex", "Sex"),
    ):
        if column in frame:
            tally = Counter(str(v) for v in frame[column].fillna("unknown"))
            counts.append(
                rc.FactorCounts(
                    factor=label,
                    levels=tuple(
                        rc.LevelCount(level=k, n_cases=v) for k, v in sorted(tally.items())
                    ),
                )
            )
    for factor in protocol.strata:
        if factor.edges and factor.source_column in frame:
            from workbench.protocols import stratum_labels

            tally = Counter(stratum_labels(frame, factor))
            counts.append(
                rc.FactorCounts(
                    factor=f"{factor.factor} (years)",
                    levels=tuple(
                        rc.LevelCount(level=k, n_cases=v) for k, v in sorted(tally.items())
                    ),
                )
            )
    quality = session.scalars(
        select(QualityReport)
        .where(QualityReport.test_set_id == test_set.id)
        .order_by(QualityReport.id.desc())
        .limit(1)
    ).first()
    q_payload = (quality.findings if quality else None) or {}
    findings = list(q_payload.get("findings", []))
    by_check: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in findings:
        by_check.setdefault((str(f.get("check")), str(f.get("severity"))), []).append(f)
    quality_summary = rc.DataQualitySummary(
        passed=bool(quality.passed) if quality else False,
        findings=tuple(
            rc.QualityFinding(
                check=c, severity=s, count=len(items), message=str(items[0].get("message", ""))
            )
            for (c, s), items in sorted(by_check.items())
        ),
        suite=protocol.data_quality_suite,
    )
    phi_findings = [f for f in findings if str(f.get("check", "")).startswith("phi")]
    summary = test_set.summary or {}
    phi = rc.PhiCheck(
        passed=not any(f.get("severity") == "critical" for f in phi_findings),
        files_checked=int(summary.get("n_dicom", 0)),
        findings=len(phi_findings),
        summary=(
            "PS3.15 Basic Application Level Confidentiality Profile attributes, sequences, "
            "private tags, dates and PatientIdentityRemoved checked in every file."
        ),
    )
    seg_ref = protocol.reference_standard.segmentation
    readers = tuple(
        rc.ReaderInfo(
            reader_id=r,
            role="segmentation reader",
            qualification="simulated reader (synthetic data)",
        )
        for r in (seg_ref.readers if seg_ref else [])
    ) + tuple(
        rc.ReaderInfo(
            reader_id=f"reader{k}", role="malignancy rating", qualification="simulated reader"
        )
        for k in (1, 2, 3)
        if f"reader{k}_malignant" in frame
    )
    dataset = rc.DatasetSummary(
        n_cases=int(accounting.get("n_cases", len(frame))),
        n_series=int(summary.get("n_series", 0)),
        n_files=int(summary.get("n_files", 0)),
        counts=tuple(counts),
        reference_standard=protocol.reference_standard.description
        or (f"labels column {protocol.reference_standard.labels_column}"),
        readers=readers,
        inclusion_criteria=("Every CT series of the locked test set with a reference standard.",),
        exclusion_criteria=(
            "No reference labels row or reference segmentation for the series.",
            "Modality other than CT.",
        ),
        n_included=int(accounting.get("n_cases", 0)) - int(accounting.get("n_excluded", 0)),
        excluded_cases=tuple(
            rc.CaseNote(case_id=str(c["case_id"]), reason=str(c.get("reason") or ""))
            for c in accounting.get("excluded", [])
        ),
        failed_cases=tuple(
            rc.CaseNote(case_id=str(c["case_id"]), reason=str(c.get("reason") or ""))
            for c in accounting.get("failed", [])
        ),
        quality=quality_summary,
        phi_check=phi,
    )

    # Methods.
    metric_methods = []
    thresholds = []
    for ep in protocol.endpoints:
        info = metric_info(ep.metric)
        metric_methods.append(
            rc.MetricMethod(
                metric=f"{ep.id}: {info.label}",
                definition=ep.description or info.label,
                ci_method=f"{ep.ci.method or info.ci_methods[0]} ({ep.ci.level:.0%})",
            )
        )
        if ep.operating_threshold is not None:
            thresholds.append(
                rc.ThresholdSpec(
                    name=f"{ep.id} operating threshold", value=float(ep.operating_threshold)
                )
            )
    thresholds.append(
        rc.ThresholdSpec(
            name="surface Dice tolerance (mm)",
            value=float(results.get("surface_dice_tolerance_mm", 2.0)),
        )
    )
    sub = protocol.subgroup_acceptance
    methods = rc.MethodsSummary(
        metrics=tuple(metric_methods),
        ci_level=float(protocol.endpoints[0].ci.level),
        thresholds=tuple(thresholds),
        strata=tuple(
            rc.StratumSpec(
                factor=s.factor,
                levels=tuple(
                    sorted(
                        {
                            str(r.get("stratum"))
                            for e in evaluation.get("endpoints", [])
                            for r in e.get("strata", [])
                            if r.get("factor") == s.factor
                        }
                    )
                ),
                min_n=s.min_n,
            )
            for s in protocol.strata
        ),
        multiplicity=(
            f"{sub.rule.value} with {sub.multiplicity.value} adjustment ({sub.family.value})"
            if sub
            else "none (no subgroup acceptance rule)"
        ),
        primary_analysis=(
            f"Failed cases: {protocol.failed_cases.value}. Excluded cases are listed. "
            "Primary analysis on the reference standard before adjudication."
        ),
        software=f"Validation Workbench {__version__} (workbench.stats: numpy/scipy/statsmodels)",
    )

    # Results.
    metric_results = []
    acceptance = []
    for e in evaluation.get("endpoints", []):
        info = metric_info(e["metric"])
        threshold, op = _criterion_threshold(protocol, e["endpoint_id"])
        overall = _estimate(
            e.get("estimate"), n=int(e.get("n_cases") or 0), reason=e.get("reason", "")
        )
        per_stratum = tuple(
            rc.StratumEstimate(
                factor=str(r["factor"]), level=str(r["stratum"]), estimate=_stratum_estimate(r)
            )
            for r in e.get("strata", [])
        )
        digits = 1 if info.unit == "mm" else 3
        metric_results.append(
            rc.MetricResult(
                key=e["endpoint_id"],
                label=info.label,
                overall=overall,
                per_stratum=per_stratum,
                threshold=threshold,
                direction=op,
                digits=digits,
                unit=info.unit,
            )
        )
        acceptance.append(
            rc.AcceptanceRow(
                endpoint=e["endpoint_id"],
                criterion=e.get("criterion_text", ""),
                estimate=overall,
                verdict=_verdict(e.get("overall_verdict")),
                primary=bool(e.get("primary", True)),
                digits=digits,
            )
        )
        for r in e.get("strata", []):
            if str(r.get("verdict")) in ("PASS", "FAIL", "NOT_ESTIMABLE"):
                acceptance.append(
                    rc.AcceptanceRow(
                        endpoint=e["endpoint_id"],
                        criterion=e.get("subgroup_rule_text") or e.get("criterion_text", ""),
                        estimate=_stratum_estimate(r),
                        verdict=_verdict(r.get("verdict")),
                        primary=bool(e.get("primary", True)),
                        stratum=f"{r['factor']} = {r['stratum']}",
                        digits=digits,
                    )
                )
    heterogeneity = tuple(
        rc.HeterogeneityTest(
            metric=h["endpoint_id"],
            factor=h["factor"],
            statistic=float(h["statistic"]),
            df=int(h.get("df") or 0),
            p_value=float(h["p_value"]),
            method=str(h.get("method", "")),
        )
        for h in supplementary.get("heterogeneity", [])
        if "statistic" in h
    )
    roc = None
    roc_data = supplementary.get("roc")
    if roc_data and "fpr" in roc_data:
        roc = rc.RocCurve(
            fpr=tuple(roc_data["fpr"]),
            tpr=tuple(roc_data["tpr"]),
            tpr_low=tuple(roc_data["lower"]),
            tpr_high=tuple(roc_data["upper"]),
            auc=_estimate(roc_data.get("auc")),
            band_method=(
                f"{roc_data.get('band', 'pointwise')} bootstrap band "
                f"({roc_data.get('level', 0.95):.0%})"
            ),
            operating_point=tuple(roc_data["operating_point"])
            if roc_data.get("operating_point")
            else None,
        )
    agreement = []
    for a in supplementary.get("agreement", []):
        est = (
            rc.ReportEstimate(
                value=float(a["kappa"]),
                ci_low=float(a["ci_low"]),
                ci_high=float(a["ci_high"]),
                method="asymptotic (Fleiss-Cohen-Everitt)",
                n=int(a.get("n") or 0),
            )
            if a.get("status", "ok") == "ok" and a.get("kappa") is not None
            else rc.ReportEstimate.missing(
                "not_estimable", str(a.get("reason") or "not estimable"), n=int(a.get("n") or 0)
            )
        )
        agreement.append(
            rc.AgreementRow(
                comparison=f"{a['rater_a']} vs {a['rater_b']}",
                kind=a["kind"],
                statistic="Cohen's kappa",
                estimate=est,
            )
        )
    fk = supplementary.get("fleiss_kappa_readers")
    if fk and "value" in fk:
        agreement.append(
            rc.AgreementRow(
                comparison="reader1, reader2, reader3",
                kind="among readers",
                statistic="Fleiss' kappa",
                estimate=_estimate(fk),
            )
        )
    distributions = tuple(
        rc.DistributionGroup(label=k, values=tuple(v))
        for k, v in sorted(supplementary.get("distributions", {}).items())
    )
    results_section = rc.ResultsSection(
        metrics=tuple(metric_results),
        heterogeneity=heterogeneity,
        roc=roc,
        distribution_metric="Dice" if distributions else "",
        distributions=distributions,
        agreement=tuple(agreement),
    )

    # Adjudication.
    adj = adjudication_summary(session, run)
    decisions = []
    blinding = {d.case_id: d.blinding or {} for d in run.discrepancies}
    for case in adj["cases"]:
        reads = case["reads"]
        last = reads[-1] if reads else None
        decisions.append(
            rc.AdjudicationDecision(
                case_id=case["case_id"],
                kind=case["rule"],
                model_output=f"shown as {blinding.get(case['case_id'], {}).get('model', '?')}",
                reference=f"shown as {blinding.get(case['case_id'], {}).get('reference', '?')}",
                decision=case["interpretation"] or "pending",
                adjudicator=f"{last['reviewer_name']} ({last['reviewer']})" if last else "",
                decided_at=datetime.fromisoformat(last["at"]) if last else None,
                rationale=last["comment"] if last else "",
            )
        )
    post = []
    secondary = adj.get("secondary")
    if secondary:
        for e in secondary["evaluation"].get("endpoints", []):
            info = metric_info(e["metric"])
            post.append(
                rc.MetricResult(
                    key=f"{e['endpoint_id']} (secondary)",
                    label=f"{info.label}, post-adjudication",
                    overall=_estimate(e.get("estimate"), reason=e.get("reason", "")),
                )
            )
    adjudication = rc.AdjudicationSummary(
        n_discrepancies=adj["n_discrepancies"],
        n_adjudicated=adj["n_adjudicated"],
        decisions=tuple(decisions),
        outcome_counts=dict(adj["counts"]),
        post_adjudication=tuple(post),
        note=(
            "Reviewers saw the model and reference outputs as A and B in a random order per case. "
            "The post-adjudication analysis is SECONDARY; acceptance uses the primary analysis."
        ),
    )

    # Signatures and audit.
    entries = list(
        session.scalars(
            select(AuditEntry)
            .where(
                (AuditEntry.record_id == run.run_uid)
                | (AuditEntry.record_id.like(f"{run.run_uid}/%"))
                | (
                    (AuditEntry.record_type == "report")
                    & (AuditEntry.record_id == report.report_uid)
                )
                | (
                    (AuditEntry.record_type == "discrepancy")
                    & (AuditEntry.record_id.in_([str(d.id) for d in run.discrepancies]))
                )
            )
            .order_by(AuditEntry.seq)
        )
    )
    head = audit.head(session)
    deviations = []
    if accounting.get("n_failed"):
        deviations.append(
            rc.Deviation(
                deviation_id="D1",
                description=(
                    f"{accounting['n_failed']} case(s) failed during inference or analysis."
                ),
                impact=f"Handled per protocol ('failed_cases: {protocol.failed_cases.value}').",
            )
        )
    limitations = (
        "Synthetic data: the demo test set consists of generated CT phantoms and simulated "
        "readers; "
        "results do not describe clinical performance."
        if test_set.name.startswith("demo")
        else "Results apply to the population, scanners and protocol of this test set only.",
        "Subgroups below the protocol's minimum n are reported as 'insufficient n' and not judged.",
        "Confidence intervals quantify sampling uncertainty only, not bias in the reference "
        "standard.",
    )
    return rc.ReportContent(
        report_id=report.report_uid,
        title=f"Validation report: {model.name} {model.version} - {pv.title}",
        status=rc.ReportStatus.FINAL if final else rc.ReportStatus.DRAFT,
        created_at=report.created_at,
        author=author.full_name if author else report.created_by,
        model=rc.ModelInfo(
            name=model.name,
            version=model.version,
            sha256=model.digest,
            task=model.task,
            description=model.intended_use or "",
        ),
        protocol=rc.ProtocolInfo(
            protocol_id=pv.protocol_id,
            version=pv.version,
            sha256=pv.sha256,
            title=pv.title,
            yaml_text=pv.yaml_text,
            approved_by=pv.approved_by or "",
            approved_at=pv.approved_at,
        ),
        test_set=rc.TestSetInfo(
            name=test_set.name,
            manifest_digest=test_set.manifest_digest or "",
            locked_at=test_set.locked_at,
            locked_by=test_set.locked_by or "",
            manifest_entries=_manifest_entries(test_set),
        ),
        software=rc.SoftwareInfo(workbench_version=__version__, workbench_commit=_git_commit()),
        environment=rc.RunEnvironment(
            run_id=run.run_uid,
            device=run.device or "",
            platform=str(env.get("platform", "")),
            python=str(env.get("python", "")),
            packages={str(k): str(v) for k, v in (env.get("packages") or {}).items()},
            started_at=run.started_at,
            finished_at=run.finished_at,
        ),
        intended_use=protocol.intended_use,
        dataset=dataset,
        methods=methods,
        results=results_section,
        acceptance=tuple(acceptance),
        deviations=tuple(deviations),
        adjudication=adjudication,
        limitations=limitations,
        required_signatures=tuple(
            rc.RequiredSignature(role=r.role.value, meaning=r.meaning) for r in protocol.signatures
        ),
        signatures=tuple(
            rc.SignatureEntry(
                printed_name=s.printed_name,
                username=s.username,
                role=s.role,
                meaning=s.meaning,
                signed_at=s.signed_at,
                signature_id=str(s.id),
                content_sha256=s.content_sha256,
            )
            for s in signatures_list
        ),
        audit_trail=tuple(
            rc.AuditEntry(
                sequence=e.seq,
                timestamp=e.ts,
                actor=e.actor,
                action=e.action,
                record_type=e.record_type,
                record_id=e.record_id or "",
                entry_hash=e.entry_hash,
                previous_hash=e.prev_hash,
            )
            for e in entries
        ),
        audit_chain_head=head.entry_hash if head else "",
        per_case=tuple(_per_case_rows(frame)),
    )


def _manifest_entries(test_set: TestSet) -> dict[str, str]:
    if not test_set.manifest_json:
        return {}
    from workbench.dicom.manifest import Manifest

    return dict(Manifest.from_json(test_set.manifest_json).entries)


def _per_case_rows(frame: Any) -> list[dict[str, Any]]:
    keep = [
        c
        for c in (
            "case_id",
            "status",
            "reason",
            "score",
            "y_true",
            "dice",
            "iou",
            "hd95",
            "assd",
            "surface_dice",
            "segmentation_status",
            "manufacturer",
            "manufacturer_model_name",
            "patient_sex",
            "patient_age_years",
            "mask_sha256",
        )
        if c in frame
    ]
    rows = []
    for row in frame[keep].to_dict(orient="records"):
        clean: dict[str, Any] = {}
        for k, v in row.items():
            if v is None or (isinstance(v, float) and v != v):
                clean[k] = None
            elif hasattr(v, "item"):
                clean[k] = v.item()
            else:
                clean[k] = v
        rows.append(clean)
    return rows


def signing_identity(wb: Workbench) -> SigningIdentity:
    """The sealing identity: a configured certificate, else the local workbench CA.

    ``WORKBENCH_SIGNING_KEY``, ``WORKBENCH_SIGNING_CERT`` and optionally
    ``WORKBENCH_SIGNING_CHAIN`` / ``WORKBENCH_SIGNING_PASSPHRASE`` name a
    deployment's own key and certificate (PEM or DER).
    """
    key, cert = os.environ.get("WORKBENCH_SIGNING_KEY"), os.environ.get("WORKBENCH_SIGNING_CERT")
    if key and cert:
        return SigningIdentity.from_files(
            key,
            cert,
            os.environ.get("WORKBENCH_SIGNING_CHAIN"),
            os.environ.get("WORKBENCH_SIGNING_PASSPHRASE"),
        )
    return ensure_signing_identity(wb.workdir.keys_dir)


def build_report(wb: Workbench, actor: Actor, run_uid: str) -> ReportInfo:
    """Build the draft PDF of a completed run (``report.build``).

    Returns
    -------
    ReportInfo
        Status ``draft``; its ``content_sha256`` is what signers sign.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "report.build")
        run = get_one(session, Run, "run", run_uid=run_uid)
        if run.status != RunStatus.COMPLETED.value:
            raise WorkflowError(
                f"Run {run_uid} is {run.status}; only a completed run has a report."
            )
        number = len(list(session.scalars(select(Report).where(Report.run_id == run.id)))) + 1
        report = Report(
            report_uid=f"VR-{run_uid.removeprefix('RUN-')}-{number}",
            run_id=run.id,
            status=ReportStatus.DRAFT.value,
            created_by=user.username,
            created_at=utcnow().replace(microsecond=0),
        )
        session.add(report)
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="report.create",
            record_type="report",
            record_id=report.report_uid,
            new={"run": run_uid, "status": report.status},
        )
        content = _content(session, report, final=False, signatures_list=[])
        wb.workdir.reports_dir.mkdir(parents=True, exist_ok=True)
        path = wb.workdir.reports_dir / f"{report.report_uid}-draft.pdf"
        built = build_pdf(content, path)
        report.pdf_path = str(path)
        report.pdf_sha256 = built.sha256
        report.content_sha256 = built.results_sha256
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="report.build",
            record_type="report",
            record_id=report.report_uid,
            new={
                "pdf_sha256": built.sha256,
                "results_sha256": built.results_sha256,
                "pages": built.pages,
                "attachments": built.attachments,
            },
        )
        return _info(session, report)


def sign_report(
    wb: Workbench, actor: Actor, report_uid: str, *, meaning: str, password: str
) -> ReportInfo:
    """E-sign a report's content with a meaning the protocol requires.

    Raises
    ------
    RecordLockedError
        The report is sealed.
    WorkflowError
        Meaning not required, already signed with it, or approval while
        discrepancies are unadjudicated (when the protocol requires adjudication).
    PermissionDeniedError
        Role may not sign with this meaning, or the author tries to approve.
    """
    permission = _MEANING_PERMISSION.get(meaning)
    if permission is None:
        raise SignatureError(
            f"Expected a report signature meaning of {sorted(_MEANING_PERMISSION)}; "
            f"found {meaning!r}."
        )
    with wb.transaction() as session:
        user = current_user(session, actor, permission)
        report = get_one(session, Report, "report", report_uid=report_uid)
        if report.status == ReportStatus.SEALED.value:
            raise RecordLockedError(f"Report {report_uid} is sealed; it can no longer be signed.")
        run = session.get(Run, report.run_id)
        assert run is not None
        protocol = _protocol(session, run)
        required = [
            r for r in protocol.signatures if r.meaning == meaning and r.role.value == user.role
        ]
        if not required:
            raise WorkflowError(
                f"The protocol does not ask for a '{meaning}' signature by role '{user.role}'."
            )
        existing = _signature_rows(session, report)
        if any(s.meaning == meaning for s in existing):
            raise WorkflowError(f"Report {report_uid} already carries a '{meaning}' signature.")
        for other in required[0].distinct_from:
            if any(s.meaning == other and s.username == user.username for s in existing):
                raise PermissionDeniedError(
                    f"{user.username} signed this report as '{other}' and cannot also sign it as "
                    f"'{meaning}' (separation of duties)."
                )
        if meaning == "approved" and report.created_by == user.username:
            raise PermissionDeniedError("The author of a report cannot approve it.")
        if meaning == "approved" and protocol.adjudication.required_before_approval:
            open_items = [d.case_id for d in run.discrepancies if d.status != "adjudicated"]
            if open_items:
                raise WorkflowError(
                    f"Report {report_uid} cannot be approved: {len(open_items)} discrepanc"
                    f"{'y is' if len(open_items) == 1 else 'ies are'} not adjudicated "
                    f"(e.g. {', '.join(open_items[:5])})."
                )
        assert report.content_sha256 is not None
        _require_current(session, report)
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=meaning,
            record_type="report",
            record_id=report.report_uid,
            content_sha256=report.content_sha256,
        )
        old_status = report.status
        missing = _missing(protocol, [*existing, signature])
        if not missing:
            report.status = ReportStatus.SIGNED.value
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="report.sign",
            record_type="report",
            record_id=report.report_uid,
            old={"status": old_status},
            new={"status": report.status, "meaning": meaning, "signature_id": signature.id},
        )
        return _info(session, report)


def _current_results_sha256(session: Session, report: Report) -> str:
    """SHA-256 of the ``results.json`` the report would have if built now."""
    content = _content(session, report, final=False, signatures_list=[])
    return next(a.sha256 for a in report_attachments(content) if a.name == RESULTS_JSON)


def _require_current(session: Session, report: Report) -> None:
    """Refuse to sign or seal a draft whose results changed since it was built.

    Adjudication decisions recorded after the draft was built change what the
    report says, so a signature on the old draft would not cover them.
    """
    if _current_results_sha256(session, report) != report.content_sha256:
        run = session.get(Run, report.run_id)
        raise WorkflowError(
            f"Report {report.report_uid} is out of date: the run's results or adjudications "
            "changed after it was built. Build a new report "
            f"('workbench report build {run.run_uid if run else ''}') and sign that one."
        )


def is_current(wb: Workbench, report_uid: str) -> bool:
    """Whether a draft still shows the run's current results and adjudications."""
    with wb.transaction(readonly=True) as session:
        report = get_one(session, Report, "report", report_uid=report_uid)
        return _current_results_sha256(session, report) == report.content_sha256


def ensure_signed(
    wb: Workbench, actor: Actor, report_uid: str, meaning: str, password: str
) -> ReportInfo:
    """Sign with ``meaning`` unless the report already carries that signature."""
    with wb.transaction(readonly=True) as session:
        report = get_one(session, Report, "report", report_uid=report_uid)
        if any(s.meaning == meaning for s in _signature_rows(session, report)):
            return _info(session, report)
    return sign_report(wb, actor, report_uid, meaning=meaning, password=password)


def seal_report(wb: Workbench, actor: Actor, report_uid: str) -> ReportInfo:
    """Render the final PDF with its signatures and apply the PAdES seal (``report.seal``).

    Raises
    ------
    WorkflowError
        A required signature is missing, or discrepancies are unadjudicated.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "report.seal")
        report = get_one(session, Report, "report", report_uid=report_uid)
        if report.status == ReportStatus.SEALED.value:
            raise RecordLockedError(f"Report {report_uid} is already sealed.")
        run = session.get(Run, report.run_id)
        assert run is not None
        protocol = _protocol(session, run)
        sigs = _signature_rows(session, report)
        missing = _missing(protocol, sigs)
        if missing:
            raise WorkflowError(
                f"Report {report_uid} cannot be sealed before its required signatures: "
                + ", ".join(missing)
                + "."
            )
        if protocol.adjudication.required_before_approval and any(
            d.status != "adjudicated" for d in run.discrepancies
        ):
            raise WorkflowError(f"Report {report_uid} has unadjudicated discrepancies.")
        _require_current(session, report)
        for s in sigs:
            check = signatures.verify(session, s.id, report.content_sha256 or "")
            if not check.valid:
                raise SignatureError(
                    f"Signature {s.id} on {report_uid} does not verify: {check.status}"
                )
        content = _content(session, report, final=True, signatures_list=sigs)
        final_path = wb.workdir.reports_dir / f"{report.report_uid}-final.pdf"
        sealed_path = wb.workdir.reports_dir / f"{report.report_uid}.pdf"
        built = build_pdf(content, final_path)
        if built.results_sha256 != report.content_sha256:
            raise ReportError(
                f"The final report's results SHA-256 {built.results_sha256[:12]} differs from the "
                f"signed one {str(report.content_sha256)[:12]}; the stored results changed."
            )
        sealed_sha = seal_pdf(
            final_path,
            sealed_path,
            signing_identity(wb),
            reason=f"Validation report {report.report_uid}, sealed by {user.full_name}",
            location="Validation Workbench",
        )
        final_path.unlink(missing_ok=True)
        old_status = report.status
        report.sealed_path = str(sealed_path)
        report.sealed_sha256 = sealed_sha
        report.status = ReportStatus.SEALED.value
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="report.seal",
            record_type="report",
            record_id=report.report_uid,
            old={"status": old_status},
            new={"status": report.status, "sealed_sha256": sealed_sha, "pages": built.pages},
        )
        return _info(session, report)


@dataclass(frozen=True, slots=True)
class ReportCheck:
    """Outcome of :func:`verify_report_file`."""

    path: str
    valid: bool
    reason: str
    report_uid: str | None = None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One line per check: OK/FAIL, name, detail."""
        return [
            f"  {'OK  ' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in self.checks
        ]


def verify_report_file(wb: Workbench, path: str | Path) -> ReportCheck:
    """Check a PDF: seal valid and whole-file, trusted, matches its record and signatures.

    Needs no account, so that an inspector can run it; the outcome is audited.
    """
    pdf = Path(path)
    checks: list[tuple[str, bool, str]] = []
    if not pdf.is_file():
        return ReportCheck(
            str(pdf), False, f"{pdf} does not exist", checks=[("file", False, "missing")]
        )
    outcome = verify_pdf(pdf, trust_roots=signing_identity(wb).trust_roots)
    checks.append(
        ("PAdES seal", outcome.signed and outcome.intact, outcome.signer_subject or "no signature")
    )
    checks.append(
        (
            "covers whole file",
            outcome.covers_whole_file,
            "no bytes added after sealing"
            if outcome.covers_whole_file
            else "modified after sealing",
        )
    )
    checks.append(
        (
            "trusted certificate",
            outcome.trusted,
            "chains to the workbench CA" if outcome.trusted else "not trusted",
        )
    )
    uid = outcome.report_id
    with wb.transaction() as session:
        report = (
            session.scalars(select(Report).where(Report.report_uid == uid)).first() if uid else None
        )
        if report is None:
            checks.append(("database record", False, f"no report record '{uid}'"))
        else:
            checks.append(
                (
                    "database record",
                    report.sealed_sha256 == outcome.file_sha256,
                    (
                        "sealed SHA-256 matches record "
                        if report.sealed_sha256 == outcome.file_sha256
                        else "sealed SHA-256 differs from record "
                    )
                    + report.report_uid,
                )
            )
            checks.append(
                (
                    "results hash",
                    report.content_sha256 == outcome.results_sha256,
                    f"results.json {str(outcome.results_sha256)[:16]}",
                )
            )
            for s in _signature_rows(session, report):
                check = signatures.verify(session, s.id, outcome.results_sha256 or "")
                checks.append(
                    (f"e-signature {s.meaning} by {s.printed_name}", check.valid, check.status)
                )
        valid = all(ok for _, ok, _ in checks) and outcome.valid
        reason = "; ".join([*outcome.problems, *(f"{n}: {d}" for n, ok, d in checks if not ok)])
        audit.append(
            session,
            actor="system",
            action="report.verify",
            record_type="report",
            record_id=uid or pdf.name,
            new={"file_sha256": outcome.file_sha256, "valid": valid, "reason": reason[:500]},
        )
    return ReportCheck(str(pdf), valid, reason or "valid", uid, checks)


def list_reports(wb: Workbench) -> list[ReportInfo]:
    """Every report, newest first."""
    with wb.transaction(readonly=True) as session:
        return [
            _info(session, r) for r in session.scalars(select(Report).order_by(Report.id.desc()))
        ]


def latest_report(wb: Workbench, run_uid: str) -> ReportInfo | None:
    """The newest report of a run, if any."""
    with wb.transaction(readonly=True) as session:
        run = get_one(session, Run, "run", run_uid=run_uid)
        report = session.scalars(
            select(Report).where(Report.run_id == run.id).order_by(Report.id.desc())
        ).first()
        return _info(session, report) if report else None


_ = (RegisteredModel, ProtocolVersion)
