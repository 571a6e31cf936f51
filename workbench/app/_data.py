"""Read-only accessors the pages need that the services do not offer yet.

Each function is a thin wrapper over services and records queries; none
computes a statistic. They are candidates to move into :mod:`workbench.services`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import PermissionDeniedError
from workbench.protocols import Protocol, load_protocol
from workbench.records.models import (
    CaseResult,
    Discrepancy,
    ProtocolVersion,
    QualityReport,
    Run,
    TestSet,
    TestSetFile,
    User,
)
from workbench.services import adjudication, runs, testsets
from workbench.services.context import Actor, Workbench, current_user, get_one

__all__ = [
    "must_change_password",
    "run_record",
    "RunRecord",
    "aggregate_results_refusal",
    "run_case_frame",
    "latest_quality_findings",
    "series_demographics",
    "file_sha256s",
    "CaseImages",
    "case_images",
    "open_case",
]


def must_change_password(wb: Workbench, username: str) -> bool:
    """Whether the account must change its password before doing anything else."""
    with wb.transaction(readonly=True) as session:
        user = session.scalars(select(User).where(User.username == username)).first()
        return bool(user is not None and user.must_change_password)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The stored results of a run and the protocol it ran under.

    Parameters
    ----------
    run_uid, status : str
    results_sha256 : str or None
    results : dict
        ``Run.results`` as stored.
    protocol_ref, protocol_yaml, task : str
    reviewers_see_aggregate_results : bool
    started_by, started_at, finished_at, device : str or None
    """

    run_uid: str
    status: str
    results_sha256: str | None
    results: dict[str, Any]
    protocol_ref: str
    protocol_yaml: str
    task: str
    reviewers_see_aggregate_results: bool
    started_by: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    device: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)


def run_record(wb: Workbench, run_uid: str) -> RunRecord:
    """The stored run with its protocol (no permission needed beyond ``run.view``)."""
    with wb.transaction(readonly=True) as session:
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        pv = session.get(ProtocolVersion, run.protocol_version_id)
        assert pv is not None
        protocol = load_protocol(pv.yaml_text.encode("utf-8"))
        return RunRecord(
            run_uid=run.run_uid,
            status=run.status,
            results_sha256=run.results_sha256,
            results=dict(run.results or {}),
            protocol_ref=f"{pv.protocol_id}@{pv.version}",
            protocol_yaml=pv.yaml_text,
            task=protocol.task.value,
            reviewers_see_aggregate_results=protocol.adjudication.reviewers_see_aggregate_results,
            started_by=run.started_by,
            started_at=run.started_at.isoformat() if run.started_at else None,
            finished_at=run.finished_at.isoformat() if run.finished_at else None,
            device=run.device,
            environment=dict(run.environment or {}),
        )


def aggregate_results_refusal(wb: Workbench, actor: Actor, run_uid: str) -> str | None:
    """Why ``actor`` may not see the aggregate results of a run, or None.

    The rule lives in :func:`workbench.services.runs.results_hidden_reason`.
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, "run.view")
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        return runs.results_hidden_reason(session, user, run)


def run_case_frame(wb: Workbench, actor: Actor, run_uid: str) -> pd.DataFrame:
    """The per-case frame of a run (:func:`workbench.services.runs.run_results`)."""
    return runs.run_results(wb, actor, run_uid)[1]


def latest_quality_findings(wb: Workbench, name: str) -> dict[str, Any] | None:
    """The stored findings of a test set's latest data-quality report, with its counts."""
    with wb.transaction(readonly=True) as session:
        test_set = get_one(session, TestSet, "test set", name=name)
        report: QualityReport | None = testsets.latest_quality(session, test_set)
        if report is None:
            return None
        return {
            "created_at": report.created_at.isoformat() if report.created_at else None,
            "created_by": report.created_by,
            "passed": report.passed,
            "critical": report.n_critical,
            "major": report.n_major,
            "minor": report.n_minor,
            "findings": list((report.findings or {}).get("findings", [])),
        }


def series_demographics(wb: Workbench, name: str) -> pd.DataFrame:
    """One row per image series of a test set: scanner, sex and age from its index."""
    with wb.transaction(readonly=True) as session:
        test_set = get_one(session, TestSet, "test set", name=name)
        files = testsets.load_index(session, test_set).files
    if not len(files):
        return pd.DataFrame(
            columns=["series_instance_uid", "scanner", "patient_sex", "patient_age"]
        )
    images = files[files["modality"].fillna("") != "SEG"].drop_duplicates("series_instance_uid")
    return pd.DataFrame(
        {
            "series_instance_uid": images["series_instance_uid"],
            "scanner": images["manufacturer"].fillna("?")
            + " "
            + images["manufacturer_model_name"].fillna("?"),
            "patient_sex": images["patient_sex"].fillna("?"),
            "patient_age": images["patient_age"].fillna(""),
        }
    ).reset_index(drop=True)


def file_sha256s(wb: Workbench, paths: list[str]) -> dict[str, str]:
    """The recorded SHA-256 of test-set files and model outputs, by absolute path.

    Test-set files come from the locked index; model masks from the case
    results. Paths without a record are left out.
    """
    wanted = {str(Path(p)) for p in paths}
    found: dict[str, str] = {}
    with wb.transaction(readonly=True) as session:
        for test_set in session.scalars(select(TestSet)):
            root = Path(test_set.root_path)
            relative = []
            for path in wanted:
                try:
                    relative.append(Path(path).relative_to(root).as_posix())
                except ValueError:
                    continue
            for start in range(0, len(relative), 500):
                chunk = relative[start : start + 500]
                for rel, sha in session.execute(
                    select(TestSetFile.path, TestSetFile.sha256).where(
                        TestSetFile.test_set_id == test_set.id, TestSetFile.path.in_(chunk)
                    )
                ):
                    found[str(root / rel)] = sha
        rest = [p for p in wanted if p not in found]
        for start in range(0, len(rest), 500):
            for mask_path, mask_sha in session.execute(
                select(CaseResult.mask_path, CaseResult.mask_sha256).where(
                    CaseResult.mask_path.in_(rest[start : start + 500])
                )
            ):
                if mask_sha:
                    found[str(mask_path)] = mask_sha
    return found


@dataclass(frozen=True, slots=True)
class CaseImages:
    """The images of one case of a run, unblinded (for QA and auditors).

    Parameters
    ----------
    run_uid, case_id, status : str
    ct_paths : list of str
    model_mask : str or None
    reference_segs : list of str
    reference_rule : str
    metrics : dict
    """

    run_uid: str
    case_id: str
    status: str
    ct_paths: list[str]
    model_mask: str | None
    reference_segs: list[str]
    reference_rule: str
    metrics: dict[str, Any]


def _case_files(
    session: Session, run: Run, case_id: str
) -> tuple[list[str], list[str], str, Protocol]:
    """CT slices and reference SEGs of one case of a run, the reference rule and the protocol."""
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    test_set = session.get(TestSet, run.test_set_id)
    assert pv is not None and test_set is not None
    protocol = load_protocol(pv.yaml_text.encode("utf-8"))
    root = Path(test_set.root_path)
    labels_path = root / testsets.LABELS_PATH
    series_uid = None
    if labels_path.is_file():
        labels = pd.read_csv(labels_path, dtype={"case_id": str})
        match = labels.loc[labels["case_id"] == case_id, "series_instance_uid"]
        series_uid = str(match.iloc[0]) if len(match) else None
    files = session.scalars(select(TestSetFile).where(TestSetFile.test_set_id == test_set.id)).all()
    ct = sorted(
        str(root / f.path)
        for f in files
        if f.series_instance_uid == series_uid and f.modality != "SEG"
    )
    segs = sorted(
        str(root / f.path)
        for f in files
        if f.modality == "SEG" and (f.header or {}).get("referenced_series_uid") == series_uid
    )
    seg_ref = protocol.reference_standard.segmentation
    if seg_ref is not None:
        segs = [p for p in segs if Path(p).stem in seg_ref.readers]
    return ct, segs, (str(seg_ref.rule) if seg_ref else "labels"), protocol


def case_images(wb: Workbench, actor: Actor, run_uid: str, case_id: str) -> CaseImages:
    """CT slices, model mask and reference SEGs of one case (``run.view``).

    Raises
    ------
    PermissionDeniedError
        The actor may not see the run's results yet (see :func:`aggregate_results_refusal`).
    """
    refusal = aggregate_results_refusal(wb, actor, run_uid)
    if refusal:
        raise PermissionDeniedError(refusal)
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "run.view")
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        result: CaseResult = get_one(
            session, CaseResult, "case result", run_id=run.id, case_id=case_id
        )
        ct, segs, rule, _protocol = _case_files(session, run, case_id)
        return CaseImages(
            run_uid=run_uid,
            case_id=case_id,
            status=result.status,
            ct_paths=ct,
            model_mask=result.mask_path,
            reference_segs=segs,
            reference_rule=rule,
            metrics=dict(result.metrics or {}),
        )


def open_case(wb: Workbench, actor: Actor, discrepancy_id: int) -> adjudication.AdjudicationCase:
    """:func:`workbench.services.adjudication.open_case`, tolerating text ``details``.

    The service expects ``Discrepancy.details`` to be a mapping, but
    :mod:`workbench.protocols` stores the finding as text; until the service
    handles that, the same blinded case is assembled here from the records.
    """
    try:
        return adjudication.open_case(wb, actor, discrepancy_id)
    except AttributeError:
        pass
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "discrepancy.adjudicate")
        d: Discrepancy = get_one(session, Discrepancy, "discrepancy", id=discrepancy_id)
        run = d.run
        ct, segs, rule, protocol = _case_files(session, run, d.case_id)
        result = session.scalars(
            select(CaseResult).where(CaseResult.run_id == run.id, CaseResult.case_id == d.case_id)
        ).first()
        blinding = d.blinding or {"model": "A", "reference": "B"}
        model_label, reference_label = blinding["model"], blinding["reference"]
        overlays: dict[str, list[str]] = {}
        calls: dict[str, str] = {}
        if protocol.task.value == "segmentation":
            overlays[model_label] = [result.mask_path] if result and result.mask_path else []
            overlays[reference_label] = segs
        else:
            threshold = next(
                (ep.operating_threshold for ep in protocol.endpoints if ep.operating_threshold), 0.5
            )
            score = result.score if result else None
            calls[model_label] = (
                "no output" if score is None else ("malignant" if score >= threshold else "benign")
            )
            column = protocol.reference_standard.labels_column
            frame = runs.case_frame(session, run.id, protocol)
            truth = None
            if column and column in frame and len(frame):
                values = frame.loc[frame["case_id"] == d.case_id, column]
                truth = None if values.empty or pd.isna(values.iloc[0]) else int(values.iloc[0])
            calls[reference_label] = (
                "unknown" if truth is None else ("malignant" if truth == 1 else "benign")
            )
        details = d.details if isinstance(d.details, dict) else {"finding": str(d.details or "")}
        return adjudication.AdjudicationCase(
            discrepancy_id=d.id,
            case_id=d.case_id,
            task=protocol.task.value,
            ct_paths=ct,
            overlays=overlays,
            calls=calls,
            reference_rule=rule,
            unblinded=None if protocol.adjudication.reviewers_blinded else {"model": model_label},
            details={k: v for k, v in details.items() if k not in ("score", "model")},
        )
