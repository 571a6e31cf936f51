"""The validation run: locked data + registered model + approved protocol -> verdict.

:func:`validate` performs, in order, each step audited:

1. verify the test-set lock (every file re-hashed against the frozen manifest),
   the model files' SHA-256 and the protocol text's SHA-256;
2. the data-quality gate (the latest stored quality report must be free of
   critical findings);
3. inference, case by case; each finished case is stored at once with its
   audit entry, so a run that dies is resumed from the completed cases;
4. per-case metrics against the reference standard and the statistics of every
   endpoint overall and per stratum;
5. the acceptance criteria, the discrepancy queue, and the stored results with
   their SHA-256.

Every case of the test set is accounted for: completed, failed (with the
reason) or excluded (with the reason).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench import __version__
from workbench.dicom.manifest import verify_manifest
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.volume import load_series
from workbench.errors import (
    IntegrityError,
    NotEstimableError,
    PermissionDeniedError,
    QualityGateError,
    WorkbenchError,
    WorkflowError,
)
from workbench.inference.environment import snapshot
from workbench.inference.loading import load_model
from workbench.inference.registry import ModelSpec, verify_model_files
from workbench.inference.runner import CaseInput, CaseOutput, run_inference
from workbench.protocols import Protocol, evaluate_endpoints, find_discrepancies, load_protocol
from workbench.records import audit
from workbench.records.models import (
    CaseResult,
    CaseStatus,
    Discrepancy,
    DiscrepancyStatus,
    ProtocolStatus,
    ProtocolVersion,
    RegisteredModel,
    Run,
    RunStatus,
    TestSet,
    User,
    utcnow,
)
from workbench.services import models as model_service
from workbench.services import protocols as protocol_service
from workbench.services.context import (
    Actor,
    Progress,
    Workbench,
    current_user,
    get_one,
    sha256_json,
)
from workbench.services.testsets import LABELS_PATH, frozen_manifest, latest_quality, load_index
from workbench.stats import segmentation_metrics

__all__ = [
    "RunSummary",
    "combine_reader_masks",
    "validate",
    "list_runs",
    "get_run",
    "case_frame",
    "SURFACE_DICE_TOLERANCE_MM",
]

#: Time limit per case (seconds) unless the caller or ``WORKBENCH_CASE_TIMEOUT_S`` says otherwise.
DEFAULT_CASE_TIMEOUT_S = 900.0

#: Tolerance of the normalized surface Dice, in mm.
SURFACE_DICE_TOLERANCE_MM = 2.0


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Outcome of a validation run.

    Parameters
    ----------
    run_uid : str
    status : str
    verdict : str or None
        ``"pass"`` or ``"fail"`` once completed.
    protocol, model, test_set : str
        ``id@version``, ``name@version`` and the test-set name.
    n_cases, n_completed, n_failed, n_excluded : int
    endpoints : list of dict
        Per endpoint: id, metric, criterion text, estimate, CI, verdict and subgroup verdicts.
    n_discrepancies : int
    results_sha256 : str or None
    """

    run_uid: str
    status: str
    verdict: str | None
    protocol: str
    model: str
    test_set: str
    n_cases: int
    n_completed: int
    n_failed: int
    n_excluded: int
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    n_discrepancies: int = 0
    results_sha256: str | None = None
    error: str | None = None


def _summary(session: Session, run: Run) -> RunSummary:
    protocol = session.get(ProtocolVersion, run.protocol_version_id)
    model = session.get(RegisteredModel, run.model_id)
    test_set = session.get(TestSet, run.test_set_id)
    assert protocol is not None and model is not None and test_set is not None
    results = run.results or {}
    accounting = results.get("accounting", {})
    n_disc = len(run.discrepancies)
    return RunSummary(
        run_uid=run.run_uid,
        status=run.status,
        verdict=run.verdict,
        protocol=f"{protocol.protocol_id}@{protocol.version}",
        model=f"{model.name}@{model.version}",
        test_set=test_set.name,
        n_cases=int(accounting.get("n_cases", 0)),
        n_completed=int(accounting.get("n_completed", 0)),
        n_failed=int(accounting.get("n_failed", 0)),
        n_excluded=int(accounting.get("n_excluded", 0)),
        endpoints=list(results.get("evaluation", {}).get("endpoints", [])),
        n_discrepancies=n_disc,
        results_sha256=run.results_sha256,
        error=run.error,
    )


@dataclass(frozen=True, slots=True)
class _Case:
    case_id: str
    series_uid: str
    ct_paths: tuple[Path, ...]
    seg_paths: dict[str, Path]
    labels: dict[str, Any]
    exclusion: str | None


def _cases(root: Path, index_files: pd.DataFrame, protocol: Protocol) -> list[_Case]:
    """One case per CT series, joined with its reference labels and reader SEGs."""
    labels_path = root / LABELS_PATH
    labels = (
        pd.read_csv(labels_path, dtype={"case_id": str})
        if labels_path.is_file()
        else pd.DataFrame()
    )
    by_series = (
        {str(r["series_instance_uid"]): r for r in labels.to_dict(orient="records")}
        if "series_instance_uid" in labels
        else {}
    )
    images = index_files[index_files["modality"].fillna("") != "SEG"]
    segs = index_files[index_files["modality"].fillna("") == "SEG"]
    readers = (
        protocol.reference_standard.segmentation.readers
        if protocol.reference_standard.segmentation
        else []
    )
    cases: list[_Case] = []
    for series_uid, group in images.groupby("series_instance_uid", sort=True):
        label = by_series.get(str(series_uid), {})
        case_id = str(label.get("case_id") or group["patient_id"].iloc[0] or series_uid)
        seg_paths: dict[str, Path] = {}
        if "referenced_series_uid" in segs:
            for rel in segs.loc[segs["referenced_series_uid"] == series_uid, "path"]:
                stem = Path(str(rel)).stem
                seg_paths[stem] = root / str(rel)
        exclusion = None
        if not label:
            exclusion = "no row in reference/labels.csv for this series"
        elif protocol.reference_standard.labels_column and pd.isna(
            label.get(protocol.reference_standard.labels_column)
        ):
            exclusion = f"reference label '{protocol.reference_standard.labels_column}' missing"
        elif readers and any(r not in seg_paths for r in readers):
            missing = [r for r in readers if r not in seg_paths]
            exclusion = f"reference segmentation by {', '.join(missing)} missing"
        if group["modality"].iloc[0] != "CT":
            exclusion = f"modality {group['modality'].iloc[0]} is not CT"
        cases.append(
            _Case(
                case_id=case_id,
                series_uid=str(series_uid),
                ct_paths=tuple(root / str(p) for p in sorted(group["path"])),
                seg_paths=seg_paths,
                labels={k: (None if pd.isna(v) else v) for k, v in label.items()},
                exclusion=exclusion,
            )
        )
    return sorted(cases, key=lambda c: c.case_id)


def combine_reader_masks(masks: list[np.ndarray], readers: list[str], rule: str) -> np.ndarray:
    """The reference mask from the readers' masks by the protocol's rule.

    Parameters
    ----------
    masks : list of ndarray of bool
        One mask per reader, aligned with the same volume.
    readers : list of str
        The readers' names (``reader1``...), in the order of ``masks``.
    rule : str
        ``majority`` (a voxel is lesion where at least half of the readers marked it;
        with two readers their union), ``union``, ``intersection`` or a reader's name.

    Returns
    -------
    ndarray of bool
    """
    if not masks:
        raise ValueError("Expected at least one reader mask; found none.")
    if rule.startswith("reader"):
        if rule not in readers:
            raise ValueError(f"Rule {rule!r} names no listed reader; readers are {readers}.")
        return np.asarray(masks[readers.index(rule)], dtype=bool)
    stack = np.stack(masks).astype(np.uint8)
    if rule == "union":
        return np.asarray(stack.any(axis=0))
    if rule == "intersection":
        return np.asarray(stack.all(axis=0))
    return np.asarray(stack.sum(axis=0) * 2 >= len(masks))


def _reference_mask(protocol: Protocol, case: _Case, volume: Any) -> np.ndarray:
    seg_ref = protocol.reference_standard.segmentation
    assert seg_ref is not None
    masks = [read_seg_mask(case.seg_paths[r], volume) for r in seg_ref.readers]
    return combine_reader_masks(masks, list(seg_ref.readers), str(seg_ref.rule))


def _segmentation_metrics(protocol: Protocol, case: _Case, mask_path: str) -> dict[str, Any]:
    volume = load_series(case.ct_paths)
    reference = _reference_mask(protocol, case, volume)
    predicted = read_seg_mask(mask_path, volume)
    result = segmentation_metrics(
        predicted, reference, spacing=volume.spacing, tolerance=SURFACE_DICE_TOLERANCE_MM
    )
    values: dict[str, Any] = {"segmentation_status": str(result.status)}
    for name in ("dice", "iou", "hd95", "hausdorff", "assd", "surface_dice"):
        value = getattr(result, name, None)
        values[name] = None if value is None or not math.isfinite(float(value)) else float(value)
    if getattr(result, "reason", None):
        values["segmentation_note"] = result.reason
    values["reference_voxels"] = int(reference.sum())
    values["predicted_voxels"] = int(predicted.sum())
    return values


def _strata(case: _Case) -> dict[str, Any]:
    keys = (
        "scanner_id",
        "manufacturer",
        "manufacturer_model_name",
        "institution_name",
        "patient_sex",
        "patient_age_years",
    )
    return {k: case.labels.get(k) for k in keys if k in case.labels}


def _find_unfinished(
    session: Session, protocol_id: int, model_id: int, test_set_id: int
) -> Run | None:
    return session.scalars(
        select(Run)
        .where(
            Run.protocol_version_id == protocol_id,
            Run.model_id == model_id,
            Run.test_set_id == test_set_id,
            Run.status.in_([RunStatus.CREATED.value, RunStatus.RUNNING.value]),
        )
        .order_by(Run.id.desc())
    ).first()


def validate(
    wb: Workbench,
    actor: Actor,
    *,
    protocol: str,
    model: str,
    test_set: str,
    device: str | None = None,
    progress: Progress = None,
    on_step: Callable[[str], None] | None = None,
    case_timeout_s: float | None = None,
) -> RunSummary:
    """Run a validation: verify inputs, gate on data quality, infer, analyse, judge.

    An interrupted run of the same protocol, model and test set is resumed:
    completed cases are kept, the others are processed.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``run.start``.
    protocol : str
        ``id@version`` (or ``id`` for the newest approved version).
    model : str
        ``name@version``.
    test_set : str
        Test-set name.
    device : str, optional
        ``"cuda"`` or ``"cpu"``; default CUDA when available.
    progress : callable, optional
        ``progress(done, total, message)`` for the inference loop.
    on_step : callable, optional
        Called with the name of each step as it starts.
    case_timeout_s : float, optional
        Time limit per case; a case that exceeds it fails with "time limit exceeded".
        Default ``$WORKBENCH_CASE_TIMEOUT_S``, else :data:`DEFAULT_CASE_TIMEOUT_S`.

    Returns
    -------
    RunSummary

    Raises
    ------
    WorkflowError
        Unlocked test set, unapproved protocol, or protocol/test-set mismatch.
    IntegrityError
        The test set, the model files or the protocol text changed.
    QualityGateError
        Critical data-quality findings.
    """
    step = on_step or (lambda _name: None)
    step("verify inputs")
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "run.start")
        pv = protocol_service.lookup(session, protocol, approved_only=True)
        if pv.status != ProtocolStatus.APPROVED.value:
            raise WorkflowError(
                f"Protocol {pv.protocol_id}@{pv.version} is {pv.status}; only an approved "
                "protocol version can be run."
            )
        if hashlib.sha256(pv.yaml_text.encode("utf-8")).hexdigest() != pv.sha256:
            raise IntegrityError(
                f"Protocol {pv.protocol_id}@{pv.version}: the stored text no longer matches its "
                "recorded SHA-256."
            )
        proto = load_protocol(pv.yaml_text.encode("utf-8"))
        reg = model_service._lookup(session, model)
        ts = get_one(session, TestSet, "test set", name=test_set)
        manifest = frozen_manifest(ts)
        if proto.test_set.name != ts.name:
            raise WorkflowError(
                f"Protocol {pv.protocol_id}@{pv.version} is written for test set "
                f"'{proto.test_set.name}', not '{ts.name}'."
            )
        if proto.test_set.manifest_digest and proto.test_set.manifest_digest != ts.manifest_digest:
            raise WorkflowError(
                f"Protocol expects manifest {proto.test_set.manifest_digest[:12]}, test set "
                f"'{ts.name}' is locked with {str(ts.manifest_digest)[:12]}."
            )
        quality = latest_quality(session, ts)
        index = load_index(session, ts)
        root = Path(ts.root_path)
        ids = (pv.id, reg.id, ts.id)
        model_files = dict(reg.files or {})
        storage_path = reg.storage_path
        spec = ModelSpec.model_validate(reg.spec)
        model_ref = f"{reg.name}@{reg.version}"
        model_digest = reg.digest
        protocol_ref = f"{pv.protocol_id}@{pv.version}"
        protocol_sha = pv.sha256

    diff = verify_manifest(root, manifest)
    if not diff.ok:
        _refuse(
            wb, actor, "run.refused", ts_name=test_set, detail=f"test set changed: {diff.summary()}"
        )
        raise IntegrityError(
            f"Test set '{test_set}' no longer matches its locked manifest ({diff.summary()}); "
            "the run is refused."
        )
    try:
        verify_model_files(storage_path, model_files)
    except WorkbenchError as error:
        _refuse(wb, actor, "run.refused", ts_name=test_set, detail=f"model changed: {error}")
        raise
    step("data-quality gate")
    if quality is None or not quality.passed:
        _refuse(wb, actor, "run.refused", ts_name=test_set, detail="data-quality gate")
        raise QualityGateError(
            f"Test set '{test_set}' has no passing data-quality report; the run is refused."
        )

    cases = _cases(root, index.files, proto)
    # One validation of a (protocol, model, test set) at a time: a second caller waits
    # here, then resumes an unfinished run or starts a new one. The OS releases the
    # lock when a process dies, so a killed run is resumed by the next call.
    lock = _ValidationLock(wb.workdir.runs_dir / f".validate-{ids[0]}-{ids[1]}-{ids[2]}.lock")
    with lock:
        return _claim_and_execute(
            wb,
            actor,
            ids=ids,
            cases=cases,
            proto=proto,
            quality_id=quality.id,
            storage_path=storage_path,
            model_files=model_files,
            spec=spec,
            device=device,
            progress=progress,
            step=step,
            case_timeout_s=case_timeout_s
            or float(os.environ.get("WORKBENCH_CASE_TIMEOUT_S", DEFAULT_CASE_TIMEOUT_S)),
            context={
                "protocol": protocol_ref,
                "protocol_sha256": protocol_sha,
                "model": model_ref,
                "model_digest": model_digest,
                "test_set": test_set,
                "manifest_digest": manifest.digest,
            },
        )


class _ValidationLock:
    """An exclusive advisory file lock (``flock``) held for the duration of a run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None

    def __enter__(self) -> _ValidationLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+b")  # noqa: SIM115 - closed in __exit__
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _claim_and_execute(
    wb: Workbench,
    actor: Actor,
    *,
    ids: tuple[int, int, int],
    cases: list[_Case],
    proto: Protocol,
    quality_id: int,
    storage_path: str,
    model_files: dict[str, str],
    spec: ModelSpec,
    device: str | None,
    progress: Progress,
    step: Callable[[str], None],
    context: dict[str, Any],
    case_timeout_s: float,
) -> RunSummary:
    with wb.transaction() as session:
        user = current_user(session, actor, "run.start")
        run = _find_unfinished(session, *ids)
        if run is None:
            run = Run(
                run_uid=f"RUN-{uuid.uuid4().hex[:12].upper()}",
                protocol_version_id=ids[0],
                model_id=ids[1],
                test_set_id=ids[2],
                status=RunStatus.RUNNING.value,
                started_by=user.username,
                started_at=utcnow(),
            )
            session.add(run)
            session.flush()
            audit.append(
                session,
                actor=user.username,
                action="run.start",
                record_type="run",
                record_id=run.run_uid,
                new={**context, "quality_report_id": quality_id, "n_cases": len(cases)},
            )
        else:
            audit.append(
                session,
                actor=user.username,
                action="run.resume",
                record_type="run",
                record_id=run.run_uid,
                new={"status": run.status},
            )
        run_uid = run.run_uid
        run_id = run.id
        done_ids = {
            c.case_id: c.status
            for c in session.scalars(select(CaseResult).where(CaseResult.run_id == run.id))
        }

    try:
        return _execute(
            wb,
            actor,
            run_id=run_id,
            run_uid=run_uid,
            proto=proto,
            cases=cases,
            done=done_ids,
            storage_path=storage_path,
            model_files=model_files,
            spec=spec,
            device=device,
            progress=progress,
            step=step,
            context=context,
            case_timeout_s=case_timeout_s,
        )
    except Exception as error:
        with wb.transaction() as session:
            run = session.get(Run, run_id)
            assert run is not None
            run.status = RunStatus.FAILED.value
            run.error = f"{type(error).__name__}: {error}"[:2000]
            run.finished_at = utcnow()
            audit.append(
                session,
                actor=actor.username,
                action="run.fail",
                record_type="run",
                record_id=run_uid,
                new={"status": run.status, "error": run.error},
            )
        raise


def _refuse(wb: Workbench, actor: Actor, action: str, *, ts_name: str, detail: str) -> None:
    with wb.transaction() as session:
        audit.append(
            session,
            actor=actor.username,
            action=action,
            record_type="test_set",
            record_id=ts_name,
            new={"refused": detail},
        )


def _execute(
    wb: Workbench,
    actor: Actor,
    *,
    run_id: int,
    run_uid: str,
    proto: Protocol,
    cases: list[_Case],
    done: dict[str, str],
    storage_path: str,
    model_files: dict[str, str],
    spec: ModelSpec,
    device: str | None,
    progress: Progress,
    step: Callable[[str], None],
    context: dict[str, Any],
    case_timeout_s: float,
) -> RunSummary:
    by_id = {c.case_id: c for c in cases}
    # Exclusions are decided before inference and stored first.
    with wb.transaction() as session:
        for case in cases:
            if case.exclusion and case.case_id not in done:
                _store_case(
                    session,
                    actor,
                    run_id,
                    run_uid,
                    case,
                    status=CaseStatus.EXCLUDED.value,
                    reason=case.exclusion,
                )
                done[case.case_id] = CaseStatus.EXCLUDED.value

    step("inference")
    loaded = load_model(storage_path, spec, device, expected_hashes=model_files)
    environment = snapshot()
    to_run = [
        CaseInput(case_id=c.case_id, ct_paths=c.ct_paths) for c in cases if c.exclusion is None
    ]
    out_dir = wb.workdir.runs_dir / run_uid / "seg"
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_case(output: CaseOutput) -> None:
        case = by_id[output.case_id]
        metrics: dict[str, Any] = {"seconds": output.seconds}
        status: str = str(output.status)
        reason = output.reason
        segmentation_reference = proto.reference_standard.segmentation is not None
        if status == CaseStatus.COMPLETED.value and segmentation_reference and output.mask_path:
            try:
                metrics.update(_segmentation_metrics(proto, case, str(output.mask_path)))
            except (WorkbenchError, NotEstimableError) as error:
                status, reason = CaseStatus.FAILED.value, f"metrics: {error}"
        with wb.transaction() as session:
            _store_case(
                session,
                actor,
                run_id,
                run_uid,
                case,
                status=status,
                reason=reason,
                score=output.score,
                mask_path=str(output.mask_path) if output.mask_path else None,
                mask_sha256=output.mask_sha256,
                metrics=metrics,
            )

    run_inference(
        to_run,
        loaded,
        spec,
        out_dir=out_dir,
        completed=frozenset(done),
        on_case=on_case,
        progress=progress,
        case_timeout_s=case_timeout_s,
    )

    step("statistics")
    with wb.transaction(readonly=True) as session:
        frame = case_frame(session, run_id, proto)
    missing = sorted(set(by_id) - set(frame["case_id"]))
    if missing:
        raise WorkflowError(f"Run {run_uid}: cases {missing[:10]} have no stored outcome.")
    evaluation = evaluate_endpoints(proto, frame)
    candidates = find_discrepancies(proto, frame)
    counts = frame["status"].value_counts().to_dict()
    results = {
        "run_uid": run_uid,
        **context,
        "workbench_version": __version__,
        "surface_dice_tolerance_mm": SURFACE_DICE_TOLERANCE_MM,
        "accounting": {
            "n_cases": len(cases),
            "n_completed": int(counts.get("completed", 0)),
            "n_failed": int(counts.get("failed", 0)),
            "n_excluded": int(counts.get("excluded", 0)),
            "failed": frame.loc[frame["status"] == "failed", ["case_id", "reason"]].to_dict(
                orient="records"
            ),
            "excluded": frame.loc[frame["status"] == "excluded", ["case_id", "reason"]].to_dict(
                orient="records"
            ),
        },
        "evaluation": evaluation.to_dict(),
    }
    results["supplementary"] = supplementary_analysis(proto, frame)
    results = audit.to_jsonable(results)
    results_sha = sha256_json(results)
    step("acceptance and discrepancies")
    with wb.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        rng_seed = int(hashlib.sha256(run_uid.encode()).hexdigest()[:8], 16)
        existing = {d.case_id for d in run.discrepancies}
        rows = {str(r["case_id"]): r for r in frame.to_dict(orient="records")}
        for candidate in candidates:
            if candidate.case_id in existing:
                continue
            rng = random.Random(f"{rng_seed}:{candidate.case_id}")  # noqa: S311 - blinding order
            model_is = rng.choice(["A", "B"])
            record = Discrepancy(
                run_id=run_id,
                case_id=candidate.case_id,
                rule=candidate.rule,
                details=_discrepancy_details(candidate.details, rows.get(candidate.case_id, {})),
                blinding={"model": model_is, "reference": "B" if model_is == "A" else "A"},
                status=DiscrepancyStatus.OPEN.value,
            )
            session.add(record)
            session.flush()
            audit.append(
                session,
                actor=actor.username,
                action="discrepancy.create",
                record_type="discrepancy",
                record_id=record.id,
                new={"run": run_uid, "case_id": candidate.case_id, "rule": candidate.rule},
            )
        run.status = RunStatus.COMPLETED.value
        run.finished_at = utcnow()
        run.device = str(loaded.device)
        run.environment = audit.to_jsonable(environment)
        run.results = results
        run.results_sha256 = results_sha
        run.verdict = str(evaluation.verdict).lower() if evaluation.verdict else None
        if run.verdict not in ("pass", "fail"):
            run.verdict = "fail"
        session.flush()
        audit.append(
            session,
            actor=actor.username,
            action="run.complete",
            record_type="run",
            record_id=run_uid,
            new={
                "status": run.status,
                "verdict": run.verdict,
                "results_sha256": results_sha,
                "accounting": {
                    k: v for k, v in results["accounting"].items() if k.startswith("n_")
                },
                "device": run.device,
            },
        )
        session.refresh(run)  # the discrepancies added above
        return _summary(session, run)


def _discrepancy_details(finding: str, row: dict[str, Any]) -> dict[str, Any]:
    """What a reviewer may see of a discrepant case: the finding and the case's figures.

    The score stays in the record (for the secondary analysis) and is hidden from
    blinded reviewers by :func:`workbench.services.adjudication.open_case`.
    """
    keep = ("series_instance_uid", "dice", "hd95", "surface_dice", "y_true", "score", "status")
    details: dict[str, Any] = {"finding": finding}
    for key in keep:
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            details[key] = value.item() if hasattr(value, "item") else value
    return audit.to_jsonable(details)


def _heterogeneity_args(metric: str, threshold: float | None) -> tuple[str, dict[str, Any]] | None:
    """The ``workbench.stats.stratified`` metric name and columns behind an endpoint metric."""
    if metric == "auc":
        return "auc", {"y_true": "y_true", "y_score": "score"}
    if metric in ("sensitivity", "specificity", "ppv", "npv", "accuracy") and threshold is not None:
        return metric, {"y_true": "y_true", "y_score": "score", "threshold": threshold}
    for column in ("dice", "surface_dice", "hd95", "assd"):
        for summary in ("mean", "median"):
            if metric == f"{column}_{summary}":
                return summary, {"value": column}
    return None


def supplementary_analysis(protocol: Protocol, frame: pd.DataFrame) -> dict[str, Any]:
    """Figures' data and secondary statistics stored with the results.

    ROC curve with a pointwise bootstrap band (classification), Cohen's kappa of
    the model against each reader and among readers, Fleiss' kappa of the
    readers, heterogeneity tests across the strata of every endpoint, and the
    per-scanner distribution of the primary per-case metric. Only completed
    cases enter these descriptive analyses.

    Parameters
    ----------
    protocol : Protocol
    frame : pandas.DataFrame
        :func:`case_frame` of the run.

    Returns
    -------
    dict
        JSON-ready; a part that cannot be estimated carries its reason instead.
    """
    from workbench.protocols import stratum_labels
    from workbench.stats import (
        fleiss_kappa,
        heterogeneity_test,
        pairwise_kappas,
        roc_curve_with_band,
    )

    out: dict[str, Any] = {"heterogeneity": [], "agreement": [], "distributions": {}}
    done = frame[frame["status"] == "completed"].copy()
    if not len(done):
        return out
    for factor in protocol.strata:
        done[factor.factor] = stratum_labels(done, factor)
    threshold = next(
        (ep.operating_threshold for ep in protocol.endpoints if ep.operating_threshold is not None),
        0.5,
    )
    if protocol.task.value == "classification" and "y_true" in done:
        try:
            curve = roc_curve_with_band(
                done["y_true"].astype(int), done["score"].astype(float), n_boot=500, seed=0
            )
            y = done["y_true"].astype(int)
            called = done["score"].astype(float) >= threshold
            out["roc"] = {
                "fpr": curve.fpr.tolist(),
                "tpr": curve.tpr.tolist(),
                "lower": curve.lower.tolist(),
                "upper": curve.upper.tolist(),
                "band": curve.band,
                "level": curve.level,
                "auc": curve.auc.as_dict(),
                "operating_point": [
                    float((called & (y == 0)).sum() / max(int((y == 0).sum()), 1)),
                    float((called & (y == 1)).sum() / max(int((y == 1).sum()), 1)),
                ],
                "threshold": threshold,
            }
        except WorkbenchError as error:
            out["roc"] = {"not_estimable": str(error)}
    readers = [
        c for c in ("reader1_malignant", "reader2_malignant", "reader3_malignant") if c in done
    ]
    if readers:
        ratings = done[readers].copy()
        if protocol.task.value == "classification" and "score" in done:
            ratings.insert(0, "model", (done["score"].astype(float) >= threshold).astype(int))
            model_rows = pairwise_kappas(ratings, reference="model", categories=[0, 1])
            out["agreement"].extend(
                {"kind": "model vs reader", **r} for r in model_rows.to_dict("records")
            )
        among = pairwise_kappas(done[readers], categories=[0, 1])
        out["agreement"].extend({"kind": "reader vs reader", **r} for r in among.to_dict("records"))
        counts = np.stack(
            [(done[readers] == 0).sum(axis=1), (done[readers] == 1).sum(axis=1)], axis=1
        )
        try:
            out["fleiss_kappa_readers"] = fleiss_kappa(counts).as_dict()
        except WorkbenchError as error:
            out["fleiss_kappa_readers"] = {"not_estimable": str(error)}
    for endpoint in protocol.endpoints:
        args = _heterogeneity_args(endpoint.metric.value, endpoint.operating_threshold)
        if args is None:
            continue
        name, options = args
        for factor in protocol.strata:
            try:
                test = heterogeneity_test(
                    done, name, by=factor.factor, min_n=factor.min_n, **options
                )
                out["heterogeneity"].append(
                    {
                        "endpoint_id": endpoint.id,
                        "factor": factor.factor,
                        "statistic": float(test.statistic),
                        "df": int(getattr(test, "df", 0) or 0),
                        "p_value": float(test.p_value),
                        "method": str(getattr(test, "method", "")),
                    }
                )
            except WorkbenchError as error:
                out["heterogeneity"].append(
                    {
                        "endpoint_id": endpoint.id,
                        "factor": factor.factor,
                        "not_estimable": str(error),
                    }
                )
    metric_column = "dice" if "dice" in done else None
    if metric_column and "manufacturer" in done:
        out["distribution_metric"] = metric_column
        for level, group in done.groupby("manufacturer", sort=True):
            values = pd.to_numeric(group[metric_column], errors="coerce").dropna()
            out["distributions"][str(level)] = [float(v) for v in values]
    return out


def _store_case(
    session: Session,
    actor: Actor,
    run_id: int,
    run_uid: str,
    case: _Case,
    *,
    status: str,
    reason: str | None,
    score: float | None = None,
    mask_path: str | None = None,
    mask_sha256: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    if score is not None and not math.isfinite(score):
        status, reason, score = CaseStatus.FAILED.value, reason or "non-finite score", None
    record = CaseResult(
        run_id=run_id,
        case_id=case.case_id,
        status=status,
        reason=reason,
        score=score,
        mask_path=mask_path,
        mask_sha256=mask_sha256,
        metrics=audit.to_jsonable(metrics or {}),
        strata=audit.to_jsonable(_strata(case)),
    )
    session.add(record)
    session.flush()
    audit.append(
        session,
        actor=actor.username,
        action="case.record",
        record_type="case_result",
        record_id=f"{run_uid}/{case.case_id}",
        new={
            "status": status,
            "reason": reason,
            "score": score,
            "mask_sha256": mask_sha256,
        },
    )


def case_frame(session: Session, run_id: int, protocol: Protocol | None = None) -> pd.DataFrame:
    """One row per stored case of a run: status, score, metrics, strata and labels.

    Parameters
    ----------
    session : Session
    run_id : int
    protocol : Protocol, optional
        When given, ``y_true`` is taken from its reference labels column.

    Returns
    -------
    pandas.DataFrame
    """
    rows = []
    run = session.get(Run, run_id)
    assert run is not None
    test_set = session.get(TestSet, run.test_set_id)
    assert test_set is not None
    labels_path = Path(test_set.root_path) / LABELS_PATH
    labels = (
        pd.read_csv(labels_path, dtype={"case_id": str}).set_index("case_id")
        if labels_path.is_file()
        else pd.DataFrame()
    )
    for c in session.scalars(
        select(CaseResult).where(CaseResult.run_id == run_id).order_by(CaseResult.case_id)
    ):
        row: dict[str, Any] = {
            "case_id": c.case_id,
            "status": c.status,
            "reason": c.reason,
            "score": c.score,
            "mask_sha256": c.mask_sha256,
        }
        row.update(c.metrics or {})
        row.update(c.strata or {})
        if c.case_id in labels.index:
            for key, value in labels.loc[c.case_id].items():
                row.setdefault(str(key), value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if protocol is not None and protocol.reference_standard.labels_column and len(frame):
        column = protocol.reference_standard.labels_column
        if column in frame:
            frame["y_true"] = frame[column]
    return frame


def results_hidden_reason(session: Session, user: User, run: Run) -> str | None:
    """Why ``user`` may not see a run's aggregate results yet, or ``None``.

    A clinical reviewer may not see them while the run still has discrepancies to
    adjudicate when its protocol sets ``adjudication.reviewers_see_aggregate_results:
    false``, so that the aggregate numbers cannot sway the adjudication.
    """
    if user.role != "reviewer":
        return None
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    assert pv is not None
    protocol = load_protocol(pv.yaml_text.encode("utf-8"))
    if protocol.adjudication.reviewers_see_aggregate_results:
        return None
    pending = sum(d.status != DiscrepancyStatus.ADJUDICATED.value for d in run.discrepancies)
    if not pending:
        return None
    return (
        f"Run {run.run_uid} has {pending} discrepanc{'y' if pending == 1 else 'ies'} still to "
        "adjudicate and its protocol does not let reviewers see aggregate results before "
        "adjudication is finished."
    )


def _visible_summary(session: Session, user: User, run: Run) -> RunSummary:
    summary = _summary(session, run)
    if results_hidden_reason(session, user, run) is None:
        return summary
    return replace(summary, verdict=None, endpoints=[], results_sha256=None)


def list_runs(wb: Workbench, actor: Actor) -> list[RunSummary]:
    """Every run, newest first (``run.view``; verdicts hidden from blinded reviewers)."""
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, "run.view")
        return [
            _visible_summary(session, user, r)
            for r in session.scalars(select(Run).order_by(Run.id.desc()))
        ]


def get_run(wb: Workbench, actor: Actor, run_uid: str) -> RunSummary:
    """One run by its uid (``run.view``; verdict hidden from blinded reviewers)."""
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, "run.view")
        return _visible_summary(session, user, get_one(session, Run, "run", run_uid=run_uid))


def run_results(wb: Workbench, actor: Actor, run_uid: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """A run's stored results and its per-case frame (``run.view``).

    Raises
    ------
    PermissionDeniedError
        A blinded reviewer asks before the run's adjudication is finished.
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, "run.view")
        run = get_one(session, Run, "run", run_uid=run_uid)
        reason = results_hidden_reason(session, user, run)
        if reason is not None:
            raise PermissionDeniedError(reason)
        pv = session.get(ProtocolVersion, run.protocol_version_id)
        assert pv is not None
        frame = case_frame(session, run.id, load_protocol(pv.yaml_text.encode("utf-8")))
        return dict(run.results or {}), frame
