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
import io
import math
import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench import __version__
from workbench.dicom.manifest import Manifest, verify_manifest
from workbench.dicom.reference import (
    combine_reader_masks,
    read_structure_mask,
    reference_structures,
)
from workbench.dicom.references import find_reference_files
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.volume import load_series
from workbench.errors import (
    IntegrityError,
    NotEstimableError,
    PermissionDeniedError,
    QualityGateError,
    SegmentationError,
    WorkbenchError,
    WorkflowError,
)
from workbench.inference.environment import snapshot
from workbench.inference.executor import InferenceExecutor
from workbench.inference.loading import load_model
from workbench.inference.registry import ModelSpec, ScoreActivation, verify_model_files
from workbench.inference.runner import CaseInput, CaseOutput, run_inference
from workbench.protocols import (
    CaseAccounting,
    EndpointResult,
    Protocol,
    RunContext,
    RunResults,
    evaluate_endpoints,
    find_discrepancies,
    structure_column,
)
from workbench.protocols.cases import CaseSpec, build_cases
from workbench.protocols.evaluation import STRUCTURE_VALUES
from workbench.protocols.schema import ReferenceSource
from workbench.protocols.supplementary import supplementary_analysis
from workbench.records import audit
from workbench.records.models import (
    CaseResult,
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
from workbench.services.preflight import preflight_cases
from workbench.services.testsets import (
    LABELS_PATH,
    frozen_manifest,
    latest_quality,
    load_index,
    quality_gate,
)
from workbench.stats import segmentation_metrics
from workbench.vocabulary import CaseStatus, Verdict

__all__ = [
    "RunPlan",
    "RunSummary",
    "plan_run",
    "stored_results",
    "run_results",
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
    """A validation run as its readers see it.

    Parameters
    ----------
    run_uid : str
    status : str
        ``created``, ``running``, ``completed`` or ``failed``.
    verdict : Verdict or None
        Once completed: PASS, FAIL or NOT_EVALUABLE (see ``results`` for the reason);
        ``None`` while running, or when hidden from a blinded reviewer.
    protocol, model, test_set : str
        ``id@version``, ``name@version`` and the test-set name.
    n_cases, n_completed, n_failed, n_excluded : int
    n_discrepancies : int
    results_sha256 : str or None
    error : str or None
        Why a failed run failed.
    results : RunResults or None
        The typed results of a completed run (``None`` while running, or when
        hidden from a blinded reviewer).
    """

    run_uid: str
    status: str
    verdict: Verdict | None
    protocol: str
    model: str
    test_set: str
    n_cases: int
    n_completed: int
    n_failed: int
    n_excluded: int
    n_discrepancies: int = 0
    results_sha256: str | None = None
    error: str | None = None
    results: RunResults | None = None

    @property
    def endpoints(self) -> tuple[EndpointResult, ...]:
        """The evaluated endpoints (empty while running or hidden)."""
        return () if self.results is None else self.results.endpoints

    @property
    def verdict_reason(self) -> str:
        """Why the verdict is not PASS ('' when it is, or unknown)."""
        return "" if self.results is None else self.results.verdict_reason


def stored_results(run: Run) -> RunResults | None:
    """A run's typed results, read (and migrated) from the stored form; None until completed."""
    return RunResults.from_dict(run.results) if run.results else None


def _summary(session: Session, run: Run) -> RunSummary:
    protocol = session.get(ProtocolVersion, run.protocol_version_id)
    model = session.get(RegisteredModel, run.model_id)
    test_set = session.get(TestSet, run.test_set_id)
    assert protocol is not None and model is not None and test_set is not None
    from workbench.records import anchors

    # The verdict and results shown must be the ones audited when the run completed.
    anchors.require_equal(anchors.check_run(session, run))
    results = stored_results(run)
    accounting = results.accounting if results is not None else None
    return RunSummary(
        run_uid=run.run_uid,
        status=run.status,
        verdict=None if run.verdict is None else Verdict.parse(run.verdict),
        protocol=f"{protocol.protocol_id}@{protocol.version}",
        model=f"{model.name}@{model.version}",
        test_set=test_set.name,
        n_cases=accounting.n_cases if accounting else 0,
        n_completed=accounting.n_completed if accounting else 0,
        n_failed=accounting.n_failed if accounting else 0,
        n_excluded=accounting.n_excluded if accounting else 0,
        n_discrepancies=len(run.discrepancies),
        results_sha256=run.results_sha256,
        error=run.error,
        results=results,
    )


def _reader_mask(
    protocol: Protocol, path: Path, volume: Any, reference: str | int | None = None
) -> np.ndarray:
    """One reader's reference mask on ``volume``, read by the protocol's reference source.

    ``reference`` names a structure of a multi-structure protocol; by default the
    single-structure protocol's ``roi`` (SEG segment label or RTSTRUCT ROI) or ``label``.
    """
    seg_ref = protocol.reference_standard.segmentation
    assert seg_ref is not None
    if reference is None:
        reference = seg_ref.label if seg_ref.source is ReferenceSource.NIFTI else seg_ref.roi
    return read_structure_mask(path, volume, seg_ref.source.value, reference)


def _reference_mask(
    protocol: Protocol, case: CaseSpec, volume: Any, reference: str | int | None = None
) -> np.ndarray:
    seg_ref = protocol.reference_standard.segmentation
    assert seg_ref is not None
    masks = [_reader_mask(protocol, case.seg_paths[r], volume, reference) for r in seg_ref.readers]
    return combine_reader_masks(masks, list(seg_ref.readers), str(seg_ref.rule))


def _metric_values(predicted: np.ndarray, reference: np.ndarray, volume: Any) -> dict[str, Any]:
    result = segmentation_metrics(
        predicted, reference, spacing=volume.spacing, tolerance=SURFACE_DICE_TOLERANCE_MM
    )
    values: dict[str, Any] = {"segmentation_status": str(result.status)}
    for name in STRUCTURE_VALUES:
        value = getattr(result, name, None)
        values[name] = None if value is None or not math.isfinite(float(value)) else float(value)
    if getattr(result, "reason", None):
        values["segmentation_note"] = result.reason
    values["reference_voxels"] = int(reference.sum())
    values["predicted_voxels"] = int(predicted.sum())
    return values


def _missing_structure(
    protocol: Protocol,
    case: CaseSpec,
    reference: str | int,
    name: str,
    held: dict[Path, tuple[str | int, ...]],
) -> str | None:
    """Why a structure's reference is missing for a case (None when every reader has it).

    ``held`` caches each reference file's structures across the case's structures.
    """
    seg_ref = protocol.reference_standard.segmentation
    assert seg_ref is not None
    lacking = []
    for reader in seg_ref.readers:
        path = case.seg_paths[reader]
        if path not in held:
            held[path] = reference_structures(path, seg_ref.source.value)
        if reference not in held[path]:
            lacking.append(f"{reader} ({path.name}: has {list(held[path])})")
    if not lacking:
        return None
    return f"reference of structure {name!r} ({reference!r}) missing for " + ", ".join(lacking)


def _segmentation_metrics(
    protocol: Protocol, case: CaseSpec, mask_path: str, spec: ModelSpec | None = None
) -> dict[str, Any]:
    """Per-case metrics of the model's mask against the reference.

    A multi-structure protocol gets each structure's metrics under
    ``<structure>/<metric>`` (:func:`workbench.protocols.structure_column`): the model's
    class ``model_class`` of its arg-max label map (segment ``k`` of the predicted SEG for
    ``output_classes[k]``) against the readers' structure ``reference``. A structure that a
    reader's reference lacks gets ``<structure>/excluded`` with the reason instead.
    """
    volume = load_series(case.image_paths)
    seg_ref = protocol.reference_standard.segmentation
    assert seg_ref is not None
    if not seg_ref.structures:
        reference = _reference_mask(protocol, case, volume)
        predicted = read_seg_mask(mask_path, volume)
        return _metric_values(predicted, reference, volume)
    classes = list(spec.input.output_classes) if spec is not None else []
    values: dict[str, Any] = {}
    held: dict[Path, tuple[str | int, ...]] = {}
    for structure in seg_ref.structures:
        if structure.model_class not in classes[1:]:
            raise SegmentationError(
                f"structure {structure.name!r}: model class {structure.model_class!r} is not a "
                f"foreground class of the model's output_classes {classes}."
            )
        why = _missing_structure(protocol, case, structure.reference, structure.name, held)
        if why is not None:
            values[structure_column(structure.name, "excluded")] = why
            continue
        reference = _reference_mask(protocol, case, volume, structure.reference)
        predicted = read_seg_mask(
            mask_path, volume, segment_number=classes.index(structure.model_class)
        )
        for key, value in _metric_values(predicted, reference, volume).items():
            values[structure_column(structure.name, key)] = value
    return values


def _classification_outputs(
    protocol: Protocol, spec: ModelSpec, output: CaseOutput
) -> tuple[float | None, dict[str, Any]]:
    """The case's score and stored class outputs for multi-class labels.

    With ``input.score_classes`` the model's class probabilities are stored as
    ``probability:<class>`` and its arg-max class as ``predicted_class``. With the
    protocol's ``positive_classes`` the score becomes the probability of those
    classes (one-vs-rest): their sum for a softmax output, their maximum for a
    multi-label (sigmoid) output.
    """
    probabilities = output.class_probabilities
    if not probabilities:
        return output.score, {}
    values: dict[str, Any] = {f"probability:{k}": v for k, v in probabilities.items()}
    values["predicted_class"] = max(probabilities, key=lambda k: probabilities[k])
    score = output.score
    positive = protocol.reference_standard.positive_classes
    if positive and all(c in probabilities for c in positive):
        chosen = [probabilities[c] for c in positive]
        softmax = spec.input.score_activation == ScoreActivation.SOFTMAX
        score = min(1.0, float(sum(chosen))) if softmax else float(max(chosen))
        values["model_score"] = output.score
    return score, values


def _case_attributes(case: CaseSpec) -> dict[str, Any]:
    """What a case brings into the analysis besides the model's output, frozen with the run.

    Every column of its ``reference/labels.csv`` row (reference labels, readers' calls,
    strata such as scanner and demographics) and its series UID, read once from the
    verified, locked test set when the run starts; later readers of the run (statistics,
    report, adjudication) use these stored values, never the file.
    """
    return {"series_instance_uid": case.series_uid, **case.attributes}


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


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything a run needs, verified before inference starts.

    Built by :func:`plan_run` inside one read-only transaction and checked against
    the files on disk (manifest, model hashes); the run then only executes it.

    Parameters
    ----------
    protocol_version_id, model_id, test_set_id : int
        Database ids of the three inputs (the key of a resumable run).
    protocol : Protocol
        The approved protocol, parsed once from its verified text.
    context : RunContext
        The inputs' names and hashes, as stored with the results.
    quality_report_id : int
        The passing data-quality report the run relies on.
    model_storage_path : str
    model_files : Mapping of str to str
        ``{relative path: sha256}`` of the registered model files.
    model_spec : ModelSpec
    cases : tuple of CaseSpec
        Every case of the test set, with its exclusion reason where it has one.
    device : str or None
    case_timeout_s : float
    executor : InferenceExecutor or None
        Where inference runs; ``None`` for the local default.
    """

    protocol_version_id: int
    model_id: int
    test_set_id: int
    protocol: Protocol
    context: RunContext
    quality_report_id: int
    model_storage_path: str
    model_files: dict[str, str]
    model_spec: ModelSpec
    cases: tuple[CaseSpec, ...]
    device: str | None
    case_timeout_s: float
    executor: InferenceExecutor | None = None

    @property
    def key(self) -> tuple[int, int, int]:
        """``(protocol version, model, test set)`` ids: one unfinished run per key."""
        return (self.protocol_version_id, self.model_id, self.test_set_id)


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
    executor: InferenceExecutor | None = None,
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
    executor : InferenceExecutor, optional
        Where inference runs (e.g. a Ray cluster); default the local executor.

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
    plan = plan_run(
        wb,
        actor,
        protocol=protocol,
        model=model,
        test_set=test_set,
        device=device,
        case_timeout_s=case_timeout_s,
        executor=executor,
        step=step,
    )
    # One validation of a (protocol, model, test set) at a time: a second caller waits
    # here, then resumes an unfinished run or starts a new one. The OS releases the
    # lock when a process dies, so a killed run is resumed by the next call.
    p_id, m_id, t_id = plan.key
    lock = _ValidationLock(wb.workdir.runs_dir / f".validate-{p_id}-{m_id}-{t_id}.lock")
    with lock:
        return _claim_and_execute(wb, actor, plan, progress=progress, step=step)


def plan_run(
    wb: Workbench,
    actor: Actor,
    *,
    protocol: str,
    model: str,
    test_set: str,
    device: str | None = None,
    case_timeout_s: float | None = None,
    executor: InferenceExecutor | None = None,
    step: Callable[[str], None] | None = None,
) -> RunPlan:
    """Verify a run's inputs and return its plan (see :func:`validate` for the checks).

    Refusals (changed test set or model files, no passing data-quality report) are
    written to the audit trail before the error is raised.
    """
    step = step or (lambda _name: None)
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "run.start")
        pv = protocol_service.lookup(session, protocol, approved_only=True)
        if pv.status != ProtocolStatus.APPROVED.value:
            raise WorkflowError(
                f"Protocol {pv.protocol_id}@{pv.version} is {pv.status}; only an approved "
                "protocol version can be run."
            )
        proto = protocol_service.resolved_protocol(wb, pv)
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
        gate_open, unwaived = quality_gate(session, ts)
        index = load_index(session, ts)
        root = Path(ts.root_path)
        ids = (pv.id, reg.id, ts.id)
        model_files = dict(reg.files or {})
        storage_path = reg.storage_path
        spec = ModelSpec.model_validate(reg.spec)
        context = RunContext(
            protocol=f"{pv.protocol_id}@{pv.version}",
            protocol_sha256=pv.sha256,
            model=f"{reg.name}@{reg.version}",
            model_digest=reg.digest,
            test_set=test_set,
            manifest_digest=manifest.digest,
        )

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
    if quality is None or not gate_open:
        _refuse(wb, actor, "run.refused", ts_name=test_set, detail="data-quality gate")
        raise QualityGateError(
            f"Test set '{test_set}' has no passing data-quality report ({unwaived} critical "
            "finding(s) not waived); the run is refused."
        )
    labels = _read_locked_labels(root, manifest)
    seg_ref = proto.reference_standard.segmentation
    references = find_reference_files(index.files, root, seg_ref.source.value) if seg_ref else None
    cases = build_cases(index.files, labels, proto, root, references=references)
    problems = preflight_cases(proto, cases, labels, test_set_name=test_set, spec=spec)
    blocking = [p for p in problems if p.blocking]
    if blocking:
        _refuse(
            wb,
            actor,
            "run.refused",
            ts_name=test_set,
            detail="pre-flight: " + "; ".join(p.line() for p in blocking)[:2000],
        )
        raise WorkflowError(
            f"Pre-flight found {len(blocking)} problem(s); the run is refused:\n"
            + "\n".join(f"  {p.line()}" for p in blocking)
        )
    return RunPlan(
        protocol_version_id=ids[0],
        model_id=ids[1],
        test_set_id=ids[2],
        protocol=proto,
        context=context,
        quality_report_id=quality.id,
        model_storage_path=storage_path,
        model_files=model_files,
        model_spec=spec,
        cases=tuple(cases),
        device=device,
        case_timeout_s=case_timeout_s
        or float(os.environ.get("WORKBENCH_CASE_TIMEOUT_S", DEFAULT_CASE_TIMEOUT_S)),
        executor=executor,
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
    plan: RunPlan,
    *,
    progress: Progress,
    step: Callable[[str], None],
) -> RunSummary:
    with wb.transaction() as session:
        user = current_user(session, actor, "run.start")
        run = _find_unfinished(session, *plan.key)
        if run is None:
            run = Run(
                run_uid=f"RUN-{uuid.uuid4().hex[:12].upper()}",
                protocol_version_id=plan.protocol_version_id,
                model_id=plan.model_id,
                test_set_id=plan.test_set_id,
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
                new={
                    **plan.context.to_dict(),
                    "quality_report_id": plan.quality_report_id,
                    "n_cases": len(plan.cases),
                },
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
            plan,
            run_id=run_id,
            run_uid=run_uid,
            done=done_ids,
            progress=progress,
            step=step,
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
    plan: RunPlan,
    *,
    run_id: int,
    run_uid: str,
    done: dict[str, str],
    progress: Progress,
    step: Callable[[str], None],
) -> RunSummary:
    proto = plan.protocol
    by_id = {c.case_id: c for c in plan.cases}
    # Exclusions are decided before inference and stored first.
    with wb.transaction() as session:
        for case in plan.cases:
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
    loaded = load_model(
        plan.model_storage_path, plan.model_spec, plan.device, expected_hashes=plan.model_files
    )
    environment = snapshot()
    to_run = [
        CaseInput(case_id=c.case_id, ct_paths=c.image_paths)
        for c in plan.cases
        if c.exclusion is None
    ]
    out_dir = wb.workdir.runs_dir / run_uid / "seg"
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_case(output: CaseOutput) -> None:
        case = by_id[output.case_id]
        metrics: dict[str, Any] = {"seconds": output.seconds}
        status: str = str(output.status)
        reason = output.reason
        segmentation_reference = proto.reference_standard.segmentation is not None
        score = output.score
        if status == CaseStatus.COMPLETED.value and segmentation_reference and output.mask_path:
            try:
                metrics.update(
                    _segmentation_metrics(proto, case, str(output.mask_path), plan.model_spec)
                )
            except (WorkbenchError, NotEstimableError) as error:
                status, reason = CaseStatus.FAILED.value, f"metrics: {error}"
        if status == CaseStatus.COMPLETED.value:
            score, extra = _classification_outputs(proto, plan.model_spec, output)
            metrics.update(extra)
        with wb.transaction() as session:
            _store_case(
                session,
                actor,
                run_id,
                run_uid,
                case,
                status=status,
                reason=reason,
                score=score,
                mask_path=str(output.mask_path) if output.mask_path else None,
                mask_sha256=output.mask_sha256,
                metrics=metrics,
            )

    run_inference(
        to_run,
        loaded,
        plan.model_spec,
        out_dir=out_dir,
        executor=plan.executor,
        completed=frozenset(done),
        on_case=on_case,
        progress=progress,
        case_timeout_s=plan.case_timeout_s,
    )

    step("statistics")
    with wb.transaction(readonly=True) as session:
        frame = case_frame(session, run_id, proto)
    missing = sorted(set(by_id) - set(frame["case_id"]))
    if missing:
        raise WorkflowError(f"Run {run_uid}: cases {missing[:10]} have no stored outcome.")
    evaluation = evaluate_endpoints(proto, frame)
    candidates = find_discrepancies(proto, frame)
    results = RunResults(
        run_uid=run_uid,
        context=plan.context,
        workbench_version=__version__,
        surface_dice_tolerance_mm=SURFACE_DICE_TOLERANCE_MM,
        accounting=CaseAccounting.from_frame(
            frame,
            n_cases=len(plan.cases),
            structures=proto.reference_standard.segmentation.structure_names
            if proto.reference_standard.segmentation is not None
            else (),
        ),
        evaluation=evaluation,
        supplementary=supplementary_analysis(proto, frame),
    )
    stored = results.to_dict()
    results_sha = sha256_json(stored)
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
        run.results = stored
        run.results_sha256 = results_sha
        run.verdict = results.verdict.value
        session.flush()
        accounting = results.accounting
        audit.append(
            session,
            actor=actor.username,
            action="run.complete",
            record_type="run",
            record_id=run_uid,
            new={
                "status": run.status,
                "verdict": run.verdict,
                "verdict_reason": results.verdict_reason,
                "results_sha256": results_sha,
                "accounting": {
                    "n_cases": accounting.n_cases,
                    "n_completed": accounting.n_completed,
                    "n_failed": accounting.n_failed,
                    "n_excluded": accounting.n_excluded,
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
    per_structure = ("/dice", "/hd95", "/surface_dice", "/excluded")
    details: dict[str, Any] = {"finding": finding}
    for key in [*keep, *(k for k in row if str(k).endswith(per_structure))]:
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            details[key] = value.item() if hasattr(value, "item") else value
    return audit.to_jsonable(details)


def _store_case(
    session: Session,
    actor: Actor,
    run_id: int,
    run_uid: str,
    case: CaseSpec,
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
        strata=audit.to_jsonable(_case_attributes(case)),
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


def _read_locked_labels(root: Path, manifest: Manifest) -> pd.DataFrame | None:
    """``reference/labels.csv`` of a locked test set, read only if it has its locked hash.

    Returns
    -------
    DataFrame or None
        ``None`` when the locked test set has no labels file.

    Raises
    ------
    IntegrityError
        The file changed since the lock.
    """
    expected = manifest.entries.get(LABELS_PATH)
    path = root / LABELS_PATH
    if expected is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != expected:
        raise IntegrityError(
            f"{LABELS_PATH} in {root} no longer matches its locked SHA-256 "
            f"({expected[:12]}...); its labels are not used. Run 'workbench testset verify'."
        )
    return pd.read_csv(io.BytesIO(data), dtype={"case_id": str})


def _locked_labels(test_set: TestSet) -> pd.DataFrame:
    """Labels of a run stored by release 0.1 (its cases kept a few label columns only)."""
    labels = _read_locked_labels(Path(test_set.root_path), frozen_manifest(test_set))
    if labels is None or "case_id" not in labels:
        return pd.DataFrame()
    return labels.set_index("case_id")


def case_frame(session: Session, run_id: int, protocol: Protocol | None = None) -> pd.DataFrame:
    """One row per stored case of a run: status, score, metrics and the case's attributes.

    The attributes (reference labels, readers' calls, strata) are those stored with
    each case when the run read them from the locked test set.

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
        row.update({k: v for k, v in (c.strata or {}).items() if k != "case_id"})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame) and "series_instance_uid" not in frame:
        # Stored by release 0.1: join the remaining label columns from the verified lock.
        test_set = session.get(TestSet, run.test_set_id)
        assert test_set is not None
        labels = _locked_labels(test_set)
        extra = [c for c in labels.columns if c not in frame]
        if extra:
            frame = frame.join(labels[extra], on="case_id")
    if protocol is not None and protocol.reference_standard.labels_column and len(frame):
        reference = protocol.reference_standard
        column = reference.labels_column
        if column in frame and not reference.is_multiclass:
            frame["y_true"] = frame[column]
        elif column in frame and reference.positive_classes is not None:
            # one-vs-rest: 1 for a positive category, 0 for another, missing stays missing
            frame["y_true"] = frame[column].map(reference.binary_truth).astype(float)
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
    protocol = protocol_service.parsed_protocol(pv)
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
    return replace(summary, verdict=None, results=None, results_sha256=None)


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


def run_results(wb: Workbench, actor: Actor, run_uid: str) -> tuple[RunResults, pd.DataFrame]:
    """A completed run's typed results and its per-case frame (``run.view``).

    Raises
    ------
    PermissionDeniedError
        A blinded reviewer asks before the run's adjudication is finished.
    WorkflowError
        The run has no results yet (still running, or failed).
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, "run.view")
        run = get_one(session, Run, "run", run_uid=run_uid)
        reason = results_hidden_reason(session, user, run)
        if reason is not None:
            raise PermissionDeniedError(reason)
        results = stored_results(run)
        if results is None:
            raise WorkflowError(
                f"Run {run_uid} is {run.status} and has no results"
                + (f" ({run.error})." if run.error else ".")
            )
        pv = session.get(ProtocolVersion, run.protocol_version_id)
        assert pv is not None
        frame = case_frame(session, run.id, protocol_service.parsed_protocol(pv))
        return results, frame
