"""The validation run: locked data + registered model + approved protocol -> verdict.

:func:`validate` performs, in order, each step audited:

1. verify the test-set lock (every file re-hashed against the frozen manifest),
   the model files' SHA-256 and the protocol text's SHA-256;
2. the data-quality gate (the latest stored quality report must be free of
   critical findings);
3. inference, case by case; each finished case is stored at once with its
   audit entry, so a run that dies is resumed from the completed cases;
4. per-case metrics against the reference standard and the statistics of every
   endpoint overall and per stratum (detection: each case's marks matched to its
   reference lesions by the protocol's locked rule, every decision stored per case
   in ``matches.json`` beside ``marks.json`` and ``lesions.json``, their SHA-256
   recorded with the case; free-response endpoints from those matches);
5. the acceptance criteria, the discrepancy queue, and the stored results with
   their SHA-256.

Every case of the test set is accounted for: completed, failed (with the
reason) or excluded (with the reason).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import time
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
from workbench.dicom.lesions import LESION_COLUMNS
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
from workbench.inference.runner import CaseInput, CaseOutput, MarkRule, run_inference
from workbench.protocols import (
    CaseAccounting,
    EndpointResult,
    Protocol,
    RunContext,
    RunResults,
    Task,
    evaluate_detection,
    evaluate_endpoints,
    find_discrepancies,
    lesion_table,
    match_marks,
    match_summary,
    structure_column,
)
from workbench.protocols.cases import CaseSpec, build_cases
from workbench.protocols.evaluation import STRUCTURE_VALUES
from workbench.protocols.results import SupplementaryAnalyses
from workbench.protocols.schema import DetectionSource, ReferenceSource
from workbench.protocols.supplementary import supplementary_analysis
from workbench.records import audit
from workbench.records.anchors import unresolved_discrepancies
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
    "DetectionRecords",
    "RunPlan",
    "RunSummary",
    "detection_frames",
    "detection_records",
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


#: Per-case detection records written beside the case's ``marks.json``.
LESIONS_FILENAME = "lesions.json"
MATCHES_FILENAME = "matches.json"
#: Lesion attributes a ``seg_components`` reference provides besides the diameter and weight.
SEG_COMPONENT_ATTRIBUTES = ("n_voxels", "volume_ml")
_NON_IMAGE = ("SEG", "RTSTRUCT", "SR", "KO", "PR", "RTPLAN", "RTDOSE", "DOC")


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _records_json(frame: pd.DataFrame) -> bytes:
    """Canonical JSON of a frame's rows (sorted keys, no whitespace, NaN as null)."""
    rows = [
        {str(k): _json_value(v) for k, v in record.items()}
        for record in frame.to_dict(orient="records")
    ]
    return json.dumps(
        rows, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str
    ).encode("utf-8")


def _write_record_file(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return hashlib.sha256(data).hexdigest()


def _read_record_file(path: Path, expected_sha256: str) -> pd.DataFrame:
    """A stored per-case record file, refused when it no longer has its recorded SHA-256."""
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise IntegrityError(
            f"{path} no longer matches the SHA-256 recorded with its case "
            f"({expected_sha256[:12]}...); the run's detection records were changed."
        )
    return pd.DataFrame(json.loads(data.decode("utf-8")))


def _reference_lesion_table(
    protocol: Protocol, index_files: pd.DataFrame, root: Path, manifest: Manifest
) -> pd.DataFrame | None:
    """Reference lesions of a ``table`` or ``sr`` detection source, checked against the images.

    Read once when the run is planned, from the verified lock: the CSV must be a file of
    the locked manifest with its locked SHA-256. ``None`` for other protocols and for a
    ``seg_components`` source (read per case).

    Raises
    ------
    WorkflowError
        The table is not part of the locked test set, or a listed attribute is missing.
    IntegrityError
        The table changed since the lock.
    GeometryError
        A row (or SR content item) names an unknown UID or lies outside its image; the
        message names the row.
    """
    from workbench.dicom.lesions import lesions_from_sr, lesions_from_table

    det = protocol.reference_standard.detection
    if det is None:
        return None
    if det.source is DetectionSource.SEG_COMPONENTS:
        unknown = [a for a in det.attributes if a not in SEG_COMPONENT_ATTRIBUTES]
        if unknown:
            raise WorkflowError(
                f"reference_standard.detection.attributes names {unknown}; SEG components "
                f"provide {list(SEG_COMPONENT_ATTRIBUTES)} besides diameter and lesion_weight."
            )
        return None
    modality = index_files["modality"].fillna("").astype(str)
    images = index_files[~modality.isin(_NON_IMAGE)]
    if det.source is DetectionSource.TABLE:
        rel = det.table_path
        expected = manifest.entries.get(rel)
        if expected is None:
            raise WorkflowError(
                f"reference_standard.detection.table: {rel} is not a file of the locked test "
                "set; add it to the test-set folder before locking."
            )
        data = (root / rel).read_bytes() if (root / rel).is_file() else b""
        if hashlib.sha256(data).hexdigest() != expected:
            raise IntegrityError(
                f"{rel} in {root} no longer matches its locked SHA-256 ({expected[:12]}...)."
            )
        table = pd.read_csv(io.BytesIO(data))
        renames = {csv: ours for ours, csv in det.columns.items()}
        if det.weight_column:
            renames[det.weight_column] = "lesion_weight"
        missing = [c for c in renames if c not in table.columns]
        if missing:
            raise WorkflowError(
                f"reference_standard.detection: {rel} lacks column(s) {missing}; found "
                f"{list(table.columns)}."
            )
        lesions = lesions_from_table(
            table.rename(columns=renames),
            images,
            default_diameter_mm=det.default_diameter_mm,
            root=root,
        )
    else:
        paths = [root / str(rel) for rel in index_files.loc[modality == "SR", "path"]]
        lesions = lesions_from_sr(
            paths, images, default_diameter_mm=det.default_diameter_mm, root=root
        )
    missing = [a for a in det.attributes if a not in lesions.columns]
    if missing:
        raise WorkflowError(
            f"reference_standard.detection.attributes names {missing}, which the "
            f"{det.source.value} reference lacks; found columns {list(lesions.columns)}."
        )
    return lesions


def _case_lesions(plan: RunPlan, case: CaseSpec) -> pd.DataFrame:
    """A case's reference lesions (``case_id``, ``lesion_id``, geometry in LPS mm, weight)."""
    from workbench.dicom.lesions import lesions_from_mask

    det = plan.protocol.reference_standard.detection
    assert det is not None
    if det.source is DetectionSource.SEG_COMPONENTS:
        volume = load_series(case.image_paths)
        masks = [
            read_structure_mask(case.seg_paths[r], volume, ReferenceSource.SEG.value, None)
            for r in det.readers
        ]
        mask = combine_reader_masks(masks, list(det.readers), str(det.rule))
        lesions = lesions_from_mask(mask, volume.affine, min_voxels=det.min_voxels)
    else:
        table = plan.reference_lesions
        assert table is not None
        lesions = table[table["series_instance_uid"].astype(str) == case.series_uid]
    lesions = lesions.assign(case_id=case.case_id)
    lesions["lesion_id"] = lesions["lesion_id"].astype(str)
    keep = ["case_id", "lesion_id", *LESION_COLUMNS[1:], *det.attributes]
    return lesions[[c for c in dict.fromkeys(keep) if c in lesions.columns]].reset_index(drop=True)


def _case_marks(output: CaseOutput) -> pd.DataFrame:
    """The marks a case's output holds, checked against their recorded SHA-256."""
    from workbench.inference.detection import Mark, marks_to_frame

    if output.marks_path is None or output.marks_sha256 is None:
        raise WorkflowError(
            "the model produced no marks; a detection protocol needs a segmentation model "
            "(its probability map becomes marks by the protocol's candidates rule) or a model "
            "that emits marks"
        )
    data = Path(output.marks_path).read_bytes()
    if hashlib.sha256(data).hexdigest() != output.marks_sha256:
        raise IntegrityError(f"{output.marks_path} does not match its recorded SHA-256.")
    marks = [Mark(**item) for item in json.loads(data.decode("utf-8"))]
    return marks_to_frame(output.case_id, marks)


def _detection_outputs(
    plan: RunPlan,
    case: CaseSpec,
    output: CaseOutput,
    case_dir: Path,
    known_lesions: tuple[Path, str] | None = None,
) -> dict[str, Any]:
    """Match a case's marks to its reference lesions and store both, with their hashes.

    A failed case keeps its reference lesions (all missed) so that a protocol counting
    failures as errors counts them. ``known_lesions`` is the case's ``lesions.json`` of an
    earlier run of the same protocol version on the same locked test set, with its
    recorded SHA-256: the reference does not depend on the model, so it is read back
    (re-hashed) instead of being derived again.
    """
    matching = plan.protocol.matching
    assert matching is not None
    if known_lesions is not None:
        lesions = _read_record_file(*known_lesions)
        if lesions.empty:
            lesions = pd.DataFrame(columns=["case_id", "lesion_id"])
        lesions = lesions.assign(case_id=case.case_id)
    else:
        lesions = _case_lesions(plan, case)
    values: dict[str, Any] = {
        "lesions_sha256": _write_record_file(case_dir / LESIONS_FILENAME, _records_json(lesions))
    }
    completed = output.status == CaseStatus.COMPLETED
    marks = _case_marks(output) if completed else pd.DataFrame(columns=["case_id", "mark_id"])
    matches = match_marks(matching, lesions, marks, cases=[case.case_id])
    values["matches_sha256"] = _write_record_file(
        case_dir / MATCHES_FILENAME, _records_json(matches)
    )
    if completed:
        values["marks_sha256"] = output.marks_sha256
    values.update(match_summary(matches))
    return values


def _case_dir(runs_dir: Path, run_uid: str, case_id: str) -> Path:
    return runs_dir / run_uid / "seg" / "cases" / case_id


def detection_frames(
    runs_dir: Path, run_uid: str, frame: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every case's stored lesions and match decisions, each file checked against its hash.

    Parameters
    ----------
    runs_dir : Path
        The workdir's runs folder (``Workdir.runs_dir``).
    run_uid : str
    frame : pandas.DataFrame
        The run's case frame (:func:`case_frame`), with each case's recorded hashes.

    Returns
    -------
    (lesions, matches) : pandas.DataFrame
        One row per reference lesion (``case_id``, ``lesion_id``, geometry, weight,
        attributes) and one per matching decision
        (:data:`workbench.protocols.detection.MATCH_COLUMNS`).

    Raises
    ------
    IntegrityError
        A record file no longer has the SHA-256 recorded with its case.
    """
    from workbench.dicom.lesions import LESION_COLUMNS as columns
    from workbench.protocols.detection import MATCH_COLUMNS

    lesions: list[pd.DataFrame] = []
    matches: list[pd.DataFrame] = []
    for row in frame.to_dict(orient="records"):
        case_dir = _case_dir(runs_dir, run_uid, str(row["case_id"]))
        for name, key, out in (
            (LESIONS_FILENAME, "lesions_sha256", lesions),
            (MATCHES_FILENAME, "matches_sha256", matches),
        ):
            digest = row.get(key)
            if isinstance(digest, str) and digest:
                part = _read_record_file(case_dir / name, digest)
                if len(part):
                    out.append(part.assign(case_id=str(row["case_id"])))
    if matches:
        matches = [
            m[[*MATCH_COLUMNS, *(c for c in m.columns if c not in MATCH_COLUMNS)]] for m in matches
        ]
    lesion_frame = (
        pd.concat(lesions, ignore_index=True)
        if lesions
        else pd.DataFrame(columns=["case_id", *columns])
    )
    match_frame = (
        pd.concat(matches, ignore_index=True)
        if matches
        else pd.DataFrame(columns=list(MATCH_COLUMNS))
    )
    return lesion_frame, match_frame


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
    reference_lesions : pandas.DataFrame or None
        Detection protocols with a ``table`` or ``sr`` source: every reference lesion,
        read and checked against the images when the run is planned.
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
    reference_lesions: pd.DataFrame | None = None

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
        # The hashes audited at registration, never the mutable files column.
        model_files = model_service.registered_files(wb, context.model)
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
    det_ref = proto.reference_standard.detection
    references = find_reference_files(index.files, root, seg_ref.source.value) if seg_ref else None
    if det_ref is not None and det_ref.source is DetectionSource.SEG_COMPONENTS:
        references = find_reference_files(index.files, root, ReferenceSource.SEG.value)
    try:
        reference_lesions = _reference_lesion_table(proto, index.files, root, manifest)
    except WorkbenchError as error:
        _refuse(wb, actor, "run.refused", ts_name=test_set, detail=f"reference lesions: {error}")
        raise
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
        reference_lesions=reference_lesions,
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

    detection = proto.task is Task.DETECTION
    known_lesions = _known_lesions(wb, plan, run_id) if detection else {}

    def on_case(output: CaseOutput) -> None:
        case = by_id[output.case_id]
        metrics: dict[str, Any] = {"seconds": output.seconds}
        status: str = str(output.status)
        reason = output.reason
        if output.probability_sha256:
            metrics["probability_sha256"] = output.probability_sha256
        if detection:
            try:
                metrics.update(
                    _detection_outputs(
                        plan,
                        case,
                        output,
                        _case_dir(wb.workdir.runs_dir, run_uid, case.case_id),
                        known_lesions.get(case.case_id),
                    )
                )
            except (WorkbenchError, NotEstimableError, OSError, ValueError, KeyError) as error:
                status, reason = CaseStatus.FAILED.value, f"detection: {error}"
        segmentation_reference = proto.reference_standard.segmentation is not None
        score = output.score
        if status == CaseStatus.COMPLETED.value and segmentation_reference and output.mask_path:
            try:
                metrics.update(
                    _segmentation_metrics(proto, case, str(output.mask_path), plan.model_spec)
                )
            except (WorkbenchError, NotEstimableError) as error:
                status, reason = CaseStatus.FAILED.value, f"metrics: {error}"
        if status == CaseStatus.COMPLETED.value and not detection:
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

    pending = [c for c in to_run if c.case_id not in done]
    reuse = _reusable_probabilities(wb, plan, run_id, pending) if detection and pending else None
    if reuse is not None:
        _derive_marks(wb, actor, plan, run_uid, reuse, pending, on_case, progress)
    else:
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
            marks_rule=_mark_rule(proto) if detection else None,
            # kept for later detection runs of this model on this test set
            keep_probability=proto.task in (Task.SEGMENTATION, Task.DETECTION),
        )

    step("statistics")
    with wb.transaction(readonly=True) as session:
        frame = case_frame(session, run_id, proto)
    missing = sorted(set(by_id) - set(frame["case_id"]))
    if missing:
        raise WorkflowError(f"Run {run_uid}: cases {missing[:10]} have no stored outcome.")
    froc, froc_reason = None, ""
    if detection:
        lesions, matches = detection_frames(wb.workdir.runs_dir, run_uid, frame)
        analysis = evaluate_detection(proto, frame, lesions, matches)
        evaluation = analysis.evaluation
        froc, froc_reason = analysis.froc, analysis.froc_reason
        supplementary = SupplementaryAnalyses()
    else:
        evaluation = evaluate_endpoints(proto, frame)
        supplementary = supplementary_analysis(proto, frame)
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
        supplementary=supplementary,
        froc=froc,
        froc_reason=froc_reason,
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


def _known_lesions(wb: Workbench, plan: RunPlan, run_id: int) -> dict[str, tuple[Path, str]]:
    """Each case's ``lesions.json`` of the newest completed run of the same protocol version
    on the same test set (same locked manifest), with its recorded SHA-256."""
    with wb.transaction(readonly=True) as session:
        for run in session.scalars(
            select(Run)
            .where(
                Run.protocol_version_id == plan.protocol_version_id,
                Run.test_set_id == plan.test_set_id,
                Run.status == RunStatus.COMPLETED.value,
                Run.id != run_id,
            )
            .order_by(Run.id.desc())
        ):
            results = stored_results(run)
            if results is None or results.context.manifest_digest != (plan.context.manifest_digest):
                continue
            found = {}
            for c in session.scalars(select(CaseResult).where(CaseResult.run_id == run.id)):
                digest = (c.metrics or {}).get("lesions_sha256")
                if digest:
                    path = _case_dir(wb.workdir.runs_dir, run.run_uid, c.case_id)
                    found[c.case_id] = (path / LESIONS_FILENAME, str(digest))
            return found
    return {}


@dataclass(frozen=True, slots=True)
class _KeptProbabilities:
    """A completed run of the same model on the same locked test set with kept maps."""

    run_uid: str
    sha256: dict[str, str]


def _reusable_probabilities(
    wb: Workbench, plan: RunPlan, run_id: int, cases: list[CaseInput]
) -> _KeptProbabilities | None:
    """The newest completed run whose kept probability maps cover every case to run.

    Same registered model (and model digest), same test set locked with the same
    manifest digest, and a candidate threshold at or above the kept floor: a detection
    run then derives its marks from those maps instead of running the model again.
    """
    from workbench.inference.runner import PROBABILITY_FLOOR

    if _mark_rule(plan.protocol).threshold < PROBABILITY_FLOOR:
        return None
    wanted = {c.case_id for c in cases}
    with wb.transaction(readonly=True) as session:
        candidates = session.scalars(
            select(Run)
            .where(
                Run.model_id == plan.model_id,
                Run.test_set_id == plan.test_set_id,
                Run.status == RunStatus.COMPLETED.value,
                Run.id != run_id,
            )
            .order_by(Run.id.desc())
        ).all()
        for run in candidates:
            results = stored_results(run)
            if results is None or (
                results.context.model_digest,
                results.context.manifest_digest,
            ) != (plan.context.model_digest, plan.context.manifest_digest):
                continue
            kept = {
                c.case_id: str((c.metrics or {}).get("probability_sha256") or "")
                for c in session.scalars(
                    select(CaseResult).where(
                        CaseResult.run_id == run.id,
                        CaseResult.status == CaseStatus.COMPLETED.value,
                    )
                )
            }
            if all(kept.get(case_id) for case_id in wanted):
                return _KeptProbabilities(run.run_uid, {k: kept[k] for k in wanted})
    return None


def _derive_marks(
    wb: Workbench,
    actor: Actor,
    plan: RunPlan,
    run_uid: str,
    reuse: _KeptProbabilities,
    cases: list[CaseInput],
    on_case: Callable[[CaseOutput], None],
    progress: Progress,
) -> None:
    """Marks of every case from the kept probability maps of ``reuse.run_uid`` (audited).

    The maps are the same model's on the same locked images, each checked against the
    SHA-256 recorded with its case; the marks are those a fresh inference would give.
    """
    from workbench.inference.runner import (
        MARKS_FILENAME,
        PROBABILITY_FILENAME,
        marks_from_kept_probability,
    )

    rule = _mark_rule(plan.protocol)
    with wb.transaction() as session:
        audit.append(
            session,
            actor=actor.username,
            action="run.reuse_inference",
            record_type="run",
            record_id=run_uid,
            new={
                "source_run": reuse.run_uid,
                "what": "kept lesion probability maps of the same model on the same locked "
                "test set; marks derived by the protocol's candidates rule",
                "model_digest": plan.context.model_digest,
                "manifest_digest": plan.context.manifest_digest,
                "candidates": {"threshold": rule.threshold, "min_voxels": rule.min_voxels},
                "n_cases": len(cases),
            },
        )
    for done, case in enumerate(cases, start=1):
        started = time.perf_counter()
        source = _case_dir(wb.workdir.runs_dir, reuse.run_uid, case.case_id)
        sha = reuse.sha256[case.case_id]
        try:
            path, digest, n_marks = marks_from_kept_probability(
                source / PROBABILITY_FILENAME,
                sha,
                rule,
                _case_dir(wb.workdir.runs_dir, run_uid, case.case_id) / MARKS_FILENAME,
            )
            output = CaseOutput(
                case_id=case.case_id,
                status=CaseStatus.COMPLETED,
                marks_path=path,
                marks_sha256=digest,
                n_marks=n_marks,
                probability_path=source / PROBABILITY_FILENAME,
                probability_sha256=sha,
                seconds=time.perf_counter() - started,
            )
        except (WorkbenchError, OSError, ValueError) as error:
            output = CaseOutput(
                case_id=case.case_id,
                status=CaseStatus.FAILED,
                reason=f"marks from the kept probability map of {reuse.run_uid}: {error}",
                seconds=time.perf_counter() - started,
            )
        on_case(output)
        if progress is not None:
            progress(done, len(cases), f"{case.case_id}: marks from {reuse.run_uid}")


def _mark_rule(protocol: Protocol) -> MarkRule:
    """The runner's rule for a segmentation model's marks (the protocol's ``candidates``)."""
    rule = protocol.candidates
    if rule is None:
        return MarkRule()
    return MarkRule(threshold=rule.threshold, min_voxels=rule.min_voxels)


def _discrepancy_details(finding: str, row: dict[str, Any]) -> dict[str, Any]:
    """What a reviewer may see of a discrepant case: the finding and the case's figures.

    The score stays in the record (for the secondary analysis) and is hidden from
    blinded reviewers by :func:`workbench.services.adjudication.open_case`.
    """
    keep = (
        "series_instance_uid",
        "dice",
        "hd95",
        "surface_dice",
        "y_true",
        "score",
        "status",
        "n_lesions",
        "n_missed",
        "n_nl",
        "max_nl_score",
    )
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
            # detection: the marks and the stored matching decisions
            **{
                key: value
                for key, value in (metrics or {}).items()
                if key in ("marks_sha256", "lesions_sha256", "matches_sha256", "probability_sha256")
            },
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
    pending = len(unresolved_discrepancies(session, run))
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


@dataclass(frozen=True, slots=True)
class DetectionRecords:
    """Every matching decision of a detection run, as stored per case.

    Parameters
    ----------
    run_uid : str
    matching : str
        The protocol's locked matching rule, in words.
    lesions : pandas.DataFrame
        One row per reference lesion with its matching mark
        (:func:`workbench.protocols.lesion_table`): ``case_id``, ``lesion_id``,
        ``diameter``, ``lesion_weight``, ``status`` (``matched``/``missed``), ``mark_id``,
        ``rating``, ``iou``, ``distance_mm``, geometry and attributes.
    matches : pandas.DataFrame
        Every decision (:data:`workbench.protocols.detection.MATCH_COLUMNS`): ``LL``,
        ``NL``, ``below_floor`` marks and ``missed`` lesions.
    """

    run_uid: str
    matching: str
    lesions: pd.DataFrame
    matches: pd.DataFrame


def detection_records(
    wb: Workbench, actor: Actor, run_uid: str, *, case_id: str | None = None
) -> DetectionRecords:
    """A detection run's stored lesions and matches (``run.view``), each file re-hashed.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
    run_uid : str
    case_id : str, optional
        Only this case.

    Raises
    ------
    PermissionDeniedError
        A blinded reviewer asks before the run's adjudication is finished.
    WorkflowError
        Not a detection run.
    IntegrityError
        A stored record file no longer has the SHA-256 recorded with its case.
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, "run.view")
        run = get_one(session, Run, "run", run_uid=run_uid)
        reason = results_hidden_reason(session, user, run)
        if reason is not None:
            raise PermissionDeniedError(reason)
        pv = session.get(ProtocolVersion, run.protocol_version_id)
        assert pv is not None
        protocol = protocol_service.parsed_protocol(pv)
        if protocol.task is not Task.DETECTION or protocol.matching is None:
            raise WorkflowError(
                f"Run {run_uid} validates a {protocol.task.value} protocol; it has no "
                "detection records."
            )
        frame = case_frame(session, run.id, protocol)
    if case_id is not None:
        frame = frame[frame["case_id"].astype(str) == case_id]
        if frame.empty:
            raise WorkflowError(f"Run {run_uid} has no case {case_id!r}.")
    lesions, matches = detection_frames(wb.workdir.runs_dir, run_uid, frame)
    return DetectionRecords(
        run_uid=run_uid,
        matching=protocol.matching.describe(),
        lesions=lesion_table(lesions, matches),
        matches=matches,
    )
