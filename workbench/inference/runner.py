"""Run a loaded model over the cases of a test set, one auditable output per case.

For each case (one CT series) the runner

1. reads the series (:func:`workbench.dicom.volume.load_series`) and prepares
   it as the model expects (:func:`~workbench.inference.preprocess.preprocess_volume`);
2. runs the model: sliding-window inference
   (``monai.inferers.sliding_window_inference``) for segmentation models, one
   call on the volume resized to ``roi_size`` for classification-only models;
3. checks the outputs (shape, finite values, probabilities in [0, 1]);
4. brings the predicted mask back to the source slices and writes it as a
   DICOM SEG (AUTOMATIC, Algorithm Identification naming the model and
   version) whose UIDs derive from the model digest and the case id, so a
   rerun writes byte-identical files;
4b. for a detection protocol (``marks_rule``), turns the lesion probability map
   on the source grid into marks by the documented rule
   (:func:`workbench.inference.detection.marks_from_probability`) and writes them
   as ``marks.json`` beside the SEG, with their SHA-256. A model that emits marks
   itself hands the same :class:`~workbench.inference.detection.Mark` list to the
   same file, so everything downstream reads one format. With
   ``keep_probability`` the lesion probability map itself is kept, sparse
   (``probability.npz``: voxels at or above :data:`PROBABILITY_FLOOR`), so that a
   later detection run of the same model on the same locked test set derives its
   marks from it (:func:`marks_from_kept_probability`) instead of re-running the
   model: the marks are the same for any candidate threshold at or above the floor;
5. hands a :class:`CaseOutput` to ``on_case`` at once, in case order.

A case that fails at any step is reported as failed with its reason; no case
is dropped. Cases listed in ``completed`` are skipped, which is how a run that
was interrupted is resumed.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.inferers import sliding_window_inference

from workbench.errors import InferenceError, ModelError
from workbench.inference.environment import deterministic_mode, select_device, snapshot
from workbench.inference.executor import (
    InferenceExecutor,
    InProcessExecutor,
    lower_thread_priority,
)
from workbench.inference.loading import LoadedModel, ScoreSelector, load_model
from workbench.inference.preprocess import Preprocessed, preprocess_volume, restore_original_grid
from workbench.inference.registry import ModelSpec, ModelTask, ScoreActivation
from workbench.vocabulary import CaseStatus

__all__ = [
    "CaseInput",
    "CaseOutput",
    "CaseStatus",
    "InferenceSummary",
    "CaseProcessor",
    "MarkRule",
    "PROBABILITY_FLOOR",
    "marks_from_kept_probability",
    "read_kept_probability",
    "PackedCase",
    "PackedOutput",
    "run_inference",
    "mask_sha256",
    "seg_uids",
    "cases_from_test_set",
]

Progress = Callable[[int, int, str], None]
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SEG_FILENAME = "prediction_seg.dcm"
MARKS_FILENAME = "marks.json"
PROBABILITY_FILENAME = "probability.npz"
#: Lesion probabilities below this are not kept (marks need voxels >= their threshold).
PROBABILITY_FLOOR = 0.05
ENVIRONMENT_FILENAME = "environment.json"


@dataclass(frozen=True, slots=True)
class MarkRule:
    """How a segmentation model's probability map becomes detection marks.

    Attributes
    ----------
    threshold : float
        Voxels whose lesion probability is at least this form the components.
    min_voxels : int
        Smaller components are not marks.
    """

    threshold: float = 0.5
    min_voxels: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], found {self.threshold!r}")
        if self.min_voxels < 1:
            raise ValueError(f"min_voxels must be >= 1, found {self.min_voxels!r}")


@dataclass(frozen=True, slots=True)
class CaseInput:
    """One case to run: a CT series.

    Attributes
    ----------
    case_id : str
        Identifier of the case (letters, digits, ``._-``); names its output folder.
    ct_paths : tuple of Path
        The files of the CT series, in any order.
    """

    case_id: str
    ct_paths: tuple[Path, ...]

    def __post_init__(self) -> None:
        if not _CASE_ID.match(self.case_id):
            raise ValueError(
                "case_id should be 1-128 letters, digits, '.', '_' or '-', starting with a "
                f"letter or digit. Found {self.case_id!r}."
            )
        object.__setattr__(self, "ct_paths", tuple(Path(p) for p in self.ct_paths))


@dataclass(frozen=True, slots=True)
class CaseOutput:
    """What inference produced for one case.

    Attributes
    ----------
    case_id : str
    status : CaseStatus
        ``completed`` or ``failed``.
    reason : str or None
        Why the case failed (``None`` when completed).
    score : float or None
        Probability from the score output (classification / both), in [0, 1].
    mask_path : Path or None
        The DICOM SEG of the predicted mask (segmentation / both).
    mask_sha256 : str or None
        SHA-256 of the predicted mask: its (z, y, x) C-order uint8 0/1 bytes.
    seg_sha256 : str or None
        SHA-256 of the DICOM SEG file.
    mask_voxels : int or None
        Voxels in the predicted mask.
    seconds : float
        Wall time spent on the case (reading, inference, writing).
    class_probabilities : dict of str to float or None
        Classification models with ``input.score_classes``: each class's probability
        (softmax over the classes, or each class's sigmoid for a multi-label output).
    marks_path : Path or None
        Detection runs: the case's marks (``marks.json``, canonical JSON).
    marks_sha256 : str or None
        SHA-256 of ``marks.json``
        (:func:`workbench.inference.detection.marks_sha256`).
    n_marks : int or None
        Marks in ``marks.json``.
    probability_path : Path or None
        With ``keep_probability``: the sparse lesion probability map on the source grid.
    probability_sha256 : str or None
        SHA-256 of ``probability.npz``.
    """

    case_id: str
    status: CaseStatus
    reason: str | None = None
    score: float | None = None
    mask_path: Path | None = None
    mask_sha256: str | None = None
    seg_sha256: str | None = None
    mask_voxels: int | None = None
    seconds: float = 0.0
    class_probabilities: dict[str, float] | None = None
    marks_path: Path | None = None
    marks_sha256: str | None = None
    n_marks: int | None = None
    probability_path: Path | None = None
    probability_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (paths as strings)."""
        data = asdict(self)
        data["status"] = self.status.value
        data["mask_path"] = str(self.mask_path) if self.mask_path is not None else None
        for key in ("marks_path", "probability_path"):
            value = getattr(self, key)
            data[key] = str(value) if value is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseOutput:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["status"] = CaseStatus(values["status"])
        if values.get("class_probabilities") is not None:
            values["class_probabilities"] = {
                str(k): float(v) for k, v in values["class_probabilities"].items()
            }
        if values.get("mask_path") is not None:
            values["mask_path"] = Path(values["mask_path"])
        for key in ("marks_path", "probability_path"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class InferenceSummary:
    """Result of :func:`run_inference`.

    Attributes
    ----------
    outputs : tuple of CaseOutput
        One per case run now (skipped cases excluded), in case order.
    total, completed, failed, skipped : int
        Cases asked for; completed now; failed now; skipped because already completed.
    skipped_ids : tuple of str
    model_name, model_version, model_digest : str
    device : str
    mixed_precision : bool
    deterministic : dict
        Torch determinism settings in force during the run.
    environment : dict
        :func:`~workbench.inference.environment.snapshot` (also in ``environment_path``).
    environment_path : Path
    seconds : float
    """

    outputs: tuple[CaseOutput, ...]
    total: int
    completed: int
    failed: int
    skipped: int
    skipped_ids: tuple[str, ...]
    model_name: str
    model_version: str
    model_digest: str
    device: str
    mixed_precision: bool
    deterministic: dict[str, Any] = field(repr=False)
    environment: dict[str, Any] = field(repr=False)
    environment_path: Path
    seconds: float


@dataclass(frozen=True, slots=True)
class _Prepared:
    case: CaseInput
    data: Preprocessed | None
    source_paths: tuple[Path, ...]
    source_headers: tuple[pydicom.Dataset, ...]
    content_datetime: dt.datetime | None
    error: str | None
    started: float
    affine: np.ndarray | None = None  # source voxel (x, y, z, 1) -> LPS mm, for marks


@dataclass(frozen=True, slots=True)
class _Computed:
    """A case after its forward pass, before its outputs are written."""

    prepared: _Prepared
    score: float | None
    probabilities: torch.Tensor | None
    class_probabilities: dict[str, float] | None = None
    marks: list[Any] | None = None  # a detection model's marks (inference.detection.Mark)


#: What a forward pass gives: the score, the class probabilities of a segmentation
#: (C, *spatial) and the classification classes' probabilities.
def _resized(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``image`` (batch, channels, *spatial) resized to ``size``, as classification and
    detection models see it (linear, ``align_corners`` off: the mapping detection marks
    are placed back through)."""
    return torch.nn.functional.interpolate(
        image,
        size=tuple(size),
        mode="trilinear" if image.ndim == 5 else "bilinear",  # 3D or 2D input
        align_corners=False,
    )


_Inferred = tuple[float | None, torch.Tensor | None, dict[str, float] | None, list[Any] | None]


@dataclass(frozen=True, slots=True)
class PackedCase:
    """A case's files, read by the driver for a worker that cannot see them.

    Attributes
    ----------
    case_id : str
    files : tuple of (str, bytes)
        File name and content of each CT file.
    error : str or None
        Why the files could not be read (the case then fails on the worker).
    """

    case_id: str
    files: tuple[tuple[str, bytes], ...]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PackedOutput:
    """A case's output as a worker without the output storage returns it.

    Attributes
    ----------
    output : CaseOutput
        With ``mask_path=None`` and ``marks_path=None``.
    seg : bytes or None
        The DICOM SEG file.
    marks : bytes or None
        The ``marks.json`` file (detection runs).
    probability : bytes or None
        The ``probability.npz`` file (``keep_probability``).
    """

    output: CaseOutput
    seg: bytes | None
    marks: bytes | None = None
    probability: bytes | None = None


class _CaseTimeout(Exception):
    pass


def mask_sha256(mask: np.ndarray) -> str:
    """SHA-256 of a mask's (z, y, x) C-order uint8 0/1 bytes."""
    return hashlib.sha256(np.ascontiguousarray(mask, dtype=np.uint8).tobytes()).hexdigest()


def seg_uids(model_digest: str, case_id: str) -> tuple[str, str]:
    """Series and SOP Instance UIDs of a case's SEG, derived from (model digest, case id).

    Returns
    -------
    tuple of str
        ``(series_instance_uid, sop_instance_uid)``, ``2.25.`` UUID-derived UIDs.
    """
    # UUID-derived UIDs (PS3.5 B.2): a name-based UUID (RFC 9562 version 5) as an integer.
    series = uuid.uuid5(uuid.NAMESPACE_OID, f"{model_digest}/{case_id}/seg-series")
    sop = uuid.uuid5(uuid.NAMESPACE_OID, f"{model_digest}/{case_id}/seg-instance")
    return f"2.25.{series.int}", f"2.25.{sop.int}"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _source_datetime(header: pydicom.Dataset) -> dt.datetime | None:
    """Study date/time of the source series: the reproducible default SEG content time."""
    date = str(header.get("StudyDate", "") or header.get("SeriesDate", "") or "")
    time_ = str(header.get("StudyTime", "") or "000000").split(".")[0].ljust(6, "0")[:6]
    if len(date) != 8:
        return None
    try:
        return dt.datetime.strptime(date + time_, "%Y%m%d%H%M%S")
    except ValueError:
        return None


class CaseProcessor:
    """The per-case work of a run, split into ``prepare`` (I/O) and ``__call__`` (model).

    Instances pickle without the torch module: on another process (a Ray
    worker) the model is reloaded from :attr:`LoadedModel.path` and its files
    are verified against the hashes recorded when it was first loaded.

    Parameters
    ----------
    model : LoadedModel
    spec : ModelSpec
    out_dir : Path
    device : torch.device
    mixed_precision : bool
    case_timeout_s : float or None
    content_datetime : datetime or None
        Date/time written into every SEG; ``None`` uses each source study's.
    marks_rule : MarkRule or None
        Detection runs: also write the marks of the probability map (``marks.json``).
    keep_probability : bool
        Also keep the sparse lesion probability map (``probability.npz``).
    """

    def __init__(
        self,
        model: LoadedModel,
        spec: ModelSpec,
        out_dir: Path,
        device: torch.device,
        *,
        mixed_precision: bool = False,
        case_timeout_s: float | None = None,
        content_datetime: dt.datetime | None = None,
        marks_rule: MarkRule | None = None,
        keep_probability: bool = False,
    ) -> None:
        self.model: LoadedModel | None = model
        self.spec = spec
        self.out_dir = out_dir
        self.device = device
        self.mixed_precision = mixed_precision
        self.case_timeout_s = case_timeout_s
        self.content_datetime = content_datetime
        self.marks_rule = marks_rule
        self.keep_probability = keep_probability
        self._model_path = model.path
        self._model_hashes = dict(model.file_hashes)
        self.digest = model.digest

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["model"] = None
        state["device"] = str(self.device)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.device = torch.device(state["device"])

    def _module(self) -> torch.nn.Module:
        if self.model is None:
            self.model = load_model(
                self._model_path, self.spec, self.device, expected_hashes=self._model_hashes
            )
        return self.model.module

    # -- hooks for executors that run cases in other processes (see executor.py) --
    def warm_up(self) -> None:
        """Load the model now, verifying its files against the registered SHA-256 hashes.

        A processor that was pickled to another process has no model; executors
        call this once per worker before its first case, so that a changed or
        unreadable model stops the run instead of failing its cases one by one.

        Raises
        ------
        ModelIntegrityError
            The model files differ from the hashes recorded when it was loaded.
        ModelError
            The files cannot be loaded.
        """
        self._module()

    def failed(self, case: CaseInput, reason: str) -> CaseOutput:
        """The output of a case that could not be processed at all (e.g. its worker was lost)."""
        return self._failed(case, reason, time.perf_counter())

    def pack_case(self, case: CaseInput) -> PackedCase:
        """Read a case's files so that a worker without access to them can process it.

        Never raises: a file that cannot be read makes the packed case fail on the worker.
        """
        try:
            files = tuple((Path(p).name, Path(p).read_bytes()) for p in case.ct_paths)
        except OSError as error:
            return PackedCase(case.case_id, (), _reason("reading", error))
        return PackedCase(case.case_id, files, None)

    def run_packed(self, packed: PackedCase) -> PackedOutput:
        """Process a packed case in a private scratch folder; the SEG comes back as bytes.

        The files are written under fresh names in a temporary folder and read
        from there; the SEG is written there too and returned with the output,
        whose ``mask_path`` is ``None`` until :meth:`unpack_output` stores it.
        The outputs are the same as those of ``self(self.prepare(case))``: the
        SEG depends on the source headers and the (model digest, case id) only.
        """
        started = time.perf_counter()
        if packed.error is not None:
            case = CaseInput(packed.case_id, ())
            return PackedOutput(self._failed(case, packed.error, started), None)
        with tempfile.TemporaryDirectory(prefix="workbench-case-") as scratch:
            root = Path(scratch)
            (root / "in").mkdir()
            paths = []
            for index, (name, data) in enumerate(packed.files):
                path = root / "in" / f"{index:05d}-{Path(name).name}"
                path.write_bytes(data)
                paths.append(path)
            local = copy.copy(self)  # shares the loaded model; only the output folder differs
            local.out_dir = root / "out"
            output = local(local.prepare(CaseInput(packed.case_id, tuple(paths))))
            seg = output.mask_path.read_bytes() if output.mask_path is not None else None
            marks = output.marks_path.read_bytes() if output.marks_path is not None else None
            kept = (
                output.probability_path.read_bytes()
                if output.probability_path is not None
                else None
            )
        return PackedOutput(
            dataclasses.replace(output, mask_path=None, marks_path=None, probability_path=None),
            seg,
            marks,
            kept,
        )

    def unpack_output(self, packed: PackedOutput) -> CaseOutput:
        """Store the SEG of a packed output in this processor's output folder (driver side)."""
        output = packed.output
        for data, expected, name, field_name in (
            (packed.marks, output.marks_sha256, MARKS_FILENAME, "marks_path"),
            (
                packed.probability,
                output.probability_sha256,
                PROBABILITY_FILENAME,
                "probability_path",
            ),
        ):
            if data is None:
                continue
            if hashlib.sha256(data).hexdigest() != expected:
                return self.failed(
                    CaseInput(output.case_id, ()),
                    f"transfer failed: the {name} received from the worker does not match its "
                    "SHA-256",
                )
            case_dir = self.out_dir / "cases" / output.case_id
            case_dir.mkdir(parents=True, exist_ok=True)
            _write_bytes_atomic(case_dir / name, data)
            if field_name == "marks_path":
                output = dataclasses.replace(output, marks_path=case_dir / name)
            else:
                output = dataclasses.replace(output, probability_path=case_dir / name)
        if packed.seg is None:
            return output
        if hashlib.sha256(packed.seg).hexdigest() != output.seg_sha256:
            return self.failed(
                CaseInput(output.case_id, ()),
                "transfer failed: the SEG received from the worker does not match its SHA-256",
            )
        case_dir = self.out_dir / "cases" / output.case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        target = case_dir / SEG_FILENAME
        partial = case_dir / (SEG_FILENAME + ".partial")
        with partial.open("wb") as handle:
            handle.write(packed.seg)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
        return dataclasses.replace(output, mask_path=target)

    # -- stage 1: reading and preprocessing (runs ahead, in a background thread) --
    def prepare(self, case: CaseInput) -> _Prepared:
        """Read and preprocess one case; never raises (errors travel in the result)."""
        from workbench.inference.preprocess import load_case_image

        started = time.perf_counter()
        try:
            if not case.ct_paths:
                raise InferenceError(f"Case {case.case_id}: expected CT files. Found none.")
            volume = load_case_image(case.ct_paths, self.spec.input)  # a series, or one 2D image
            data = preprocess_volume(volume, self.spec.input)
            when = self.content_datetime or _source_datetime(volume.headers[0])
            wants_affine = self.marks_rule is not None or self.keep_probability
            affine = getattr(volume, "affine", None) if wants_affine else None
            return _Prepared(case, data, volume.paths, volume.headers, when, None, started, affine)
        except Exception as error:  # every failure becomes a failed case with its reason
            return _Prepared(case, None, (), (), None, _reason("reading", error), started)

    # -- stage 2: inference and outputs (runs in the caller's thread) --
    def __call__(self, prepared: _Prepared) -> CaseOutput:
        """Run the model on a prepared case and write its outputs; never raises."""
        return self.finish(self.compute(prepared))

    def compute(self, prepared: _Prepared) -> _Computed | CaseOutput:
        """Stage 2: the forward pass. A failed case comes back as its :class:`CaseOutput`."""
        case = prepared.case
        if prepared.error is not None or prepared.data is None:
            return self._failed(case, prepared.error or "not prepared", prepared.started)
        try:
            self._check_time(prepared.started, "after reading")
            score, probabilities, classes, marks = self._infer_watched(
                prepared.data, prepared.started
            )
        except _CaseTimeout as error:
            return self._failed(case, str(error), prepared.started)
        except Exception as error:  # every failure becomes a failed case with its reason
            return self._failed(case, _reason("inference", error), prepared.started)
        return _Computed(prepared, score, probabilities, classes, marks)

    def finish(self, computed: _Computed | CaseOutput) -> CaseOutput:
        """Stage 3: mask back on the source grid, DICOM SEG and hashes; never raises."""
        if isinstance(computed, CaseOutput):
            return computed
        prepared = computed.prepared
        case = prepared.case
        assert prepared.data is not None
        try:
            mask_path = mask_hash = seg_hash = None
            marks_path = marks_hash = kept_path = kept_hash = None
            voxels = n_marks = None
            if computed.probabilities is not None:
                margin = self._restored_margin(computed.probabilities, prepared.data)
                mask = self._mask_on_source_grid(computed.probabilities, prepared.data, margin)
                self._check_time(prepared.started, "before writing the SEG")
                mask_path, seg_hash = self._write_seg(mask, prepared)
                mask_hash = mask_sha256(mask)
                voxels = int(np.count_nonzero(mask))
                if self.marks_rule is not None or self.keep_probability:
                    foreground = self._foreground(computed.probabilities, prepared, margin)
                    if self.keep_probability:
                        kept_path, kept_hash = self._keep_probability(foreground, prepared)
                    if self.marks_rule is not None:
                        marks_path, marks_hash, n_marks = self._write_marks(foreground, prepared)
            if computed.marks is not None:
                marks_path, marks_hash, n_marks = self._write_mark_list(computed.marks, prepared)
        except _CaseTimeout as error:
            return self._failed(case, str(error), prepared.started)
        except Exception as error:  # every failure becomes a failed case with its reason
            return self._failed(case, _reason("inference", error), prepared.started)
        return CaseOutput(
            case_id=case.case_id,
            status=CaseStatus.COMPLETED,
            score=computed.score,
            mask_path=mask_path,
            mask_sha256=mask_hash,
            seg_sha256=seg_hash,
            mask_voxels=voxels,
            seconds=time.perf_counter() - prepared.started,
            class_probabilities=computed.class_probabilities,
            marks_path=marks_path,
            marks_sha256=marks_hash,
            n_marks=n_marks,
            probability_path=kept_path,
            probability_sha256=kept_hash,
        )

    def _failed(self, case: CaseInput, reason: str, started: float) -> CaseOutput:
        return CaseOutput(
            case_id=case.case_id,
            status=CaseStatus.FAILED,
            reason=reason,
            seconds=time.perf_counter() - started,
        )

    def _check_time(self, started: float, where: str) -> None:
        if self.case_timeout_s is None:
            return
        elapsed = time.perf_counter() - started
        if elapsed > self.case_timeout_s:
            raise _CaseTimeout(
                f"time limit exceeded {where}: expected at most {self.case_timeout_s:g} s "
                f"per case, found {elapsed:.1f} s"
            )

    def _infer_watched(self, data: Preprocessed, started: float) -> _Inferred:
        """:meth:`_infer` under a watchdog when a per-case time limit is set.

        The forward pass runs in a daemon thread; if it has not returned when the
        limit is reached the case fails with "time limit exceeded" and the run goes
        on. The abandoned thread cannot be killed: it keeps a core busy until it
        returns or the process ends, which is why such a model's run should be
        stopped and the model rejected.
        """
        if self.case_timeout_s is None:
            return self._infer(data, started)
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["value"] = self._infer(data, started)
            except BaseException as error:  # handed to the caller's thread
                outcome["error"] = error

        worker = threading.Thread(target=work, name="workbench-inference", daemon=True)
        worker.start()
        remaining = self.case_timeout_s - (time.perf_counter() - started)
        worker.join(max(remaining, 0.0))
        if worker.is_alive():
            raise _CaseTimeout(
                f"time limit exceeded: the model did not return within {self.case_timeout_s:g} s "
                "(the case was abandoned)"
            )
        if "error" in outcome:
            raise outcome["error"]
        result: _Inferred = outcome["value"]
        return result

    def _split_outputs(self, raw: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Segmentation logits and score from whatever the model returned."""
        spec = self.spec.input
        if isinstance(raw, dict):
            seg = raw.get(spec.segmentation_output) if spec.segmentation_output else None
            score = raw.get(spec.score_output) if spec.score_output else None
            if self.spec.segments and seg is None:
                raise InferenceError(
                    f"Expected the segmentation output {spec.segmentation_output!r} in the "
                    f"model's outputs. Found keys {sorted(raw)}."
                )
            if self.spec.scores and score is None:
                raise InferenceError(
                    f"Expected the score output {spec.score_output!r} in the model's outputs. "
                    f"Found keys {sorted(raw)}."
                )
            return seg, score
        if isinstance(raw, (tuple, list)) and len(raw) == 2 and self.spec.task == ModelTask.BOTH:
            return raw[0], raw[1]
        if isinstance(raw, torch.Tensor) and self.spec.task != ModelTask.BOTH:
            return (raw, None) if self.spec.segments else (None, raw)
        wanted = "a dict" if self.spec.task == ModelTask.BOTH else "a tensor or a dict"
        raise InferenceError(
            f"Expected the model to return {wanted} for task {self.spec.task.value!r}. "
            f"Found {type(raw).__name__}."
        )

    def _score_probability(self, score: torch.Tensor, batch: int) -> torch.Tensor:
        values = score.detach().float().reshape(batch, -1)
        if values.shape[1] != 1:
            raise InferenceError(
                f"Expected one score per input, shape ({batch}, 1). Found {tuple(score.shape)}."
            )
        if not torch.isfinite(values).all():
            raise InferenceError("the score output contains NaN or infinite values")
        if self.spec.input.score_activation == ScoreActivation.SIGMOID:
            return torch.sigmoid(values[:, 0])
        if ((values < 0) | (values > 1)).any():
            raise InferenceError(
                "score out of range: expected probabilities in [0, 1], found "
                f"{values.min().item():.4g} to {values.max().item():.4g}"
            )
        return values[:, 0]

    def _infer(self, data: Preprocessed, started: float) -> _Inferred:
        if self.spec.detects:
            return self._detect(data, started)
        module = self._module()
        spec = self.spec.input
        image = data.image.as_tensor()[None].to(self.device)
        window_scores: list[torch.Tensor] = []
        n_classes = len(spec.output_classes)
        class_probabilities: dict[str, float] | None = None

        def predictor(windows: torch.Tensor) -> torch.Tensor:
            self._check_time(started, "during sliding-window inference")
            seg, score = self._split_outputs(module(windows))
            if score is not None:
                window_scores.append(self._score_probability(score, windows.shape[0]))
            assert seg is not None
            expected = (windows.shape[0], n_classes, *windows.shape[2:])
            if tuple(seg.shape) != expected:
                raise InferenceError(
                    "wrong segmentation output shape: expected "
                    f"{expected}, found {tuple(seg.shape)}"
                )
            return seg.float()

        amp = self.mixed_precision and self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=amp):
            if self.spec.segments:
                logits = sliding_window_inference(
                    image,
                    roi_size=spec.roi_size,
                    sw_batch_size=spec.sw_batch_size,
                    predictor=predictor,
                    overlap=spec.sw_overlap,
                    mode="constant",
                )
                assert isinstance(logits, torch.Tensor)
                logits = logits.float()
                if not torch.isfinite(logits).all():
                    raise InferenceError("the segmentation output contains NaN or infinite values")
                probabilities: torch.Tensor | None = torch.softmax(logits[0], dim=0)
            else:
                resized = _resized(image, spec.roi_size)
                if isinstance(module, ScoreSelector) and spec.positive_class is not None:
                    # Every class's probability; the case's score is the positive class's
                    # (what ScoreSelector and the activation would give).
                    class_probabilities = self._class_probabilities(module.inner(resized))
                    positive = class_probabilities[spec.positive_class]
                    window_scores.append(torch.tensor([positive], dtype=torch.float32))
                else:
                    _, score = self._split_outputs(module(resized))
                    assert score is not None
                    window_scores.append(self._score_probability(score, 1))
                probabilities = None
        score_value: float | None = None
        if self.spec.scores:
            if not window_scores:
                raise InferenceError("the model produced no score")
            # A case is as suspicious as its most suspicious window.
            score_value = float(torch.cat(window_scores).max().item())
        return score_value, probabilities, class_probabilities, None

    def _detect(self, data: Preprocessed, started: float) -> _Inferred:
        """A detection model's marks: one call on the volume resized to ``roi_size``."""
        from workbench.inference.detection import marks_from_model_output, marks_output_rows

        module = self._module()
        spec = self.spec.input
        image = data.image.as_tensor()[None].to(self.device)
        resized = _resized(image, spec.roi_size)
        self._check_time(started, "before the forward pass")
        amp = self.mixed_precision and self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=amp):
            raw = module(resized)
        rows = marks_output_rows(raw, spec)
        marks = marks_from_model_output(
            rows,
            spec,
            np.asarray(data.image.affine, dtype=np.float64),
            tuple(int(n) for n in data.image.shape[1:]),
        )
        return None, None, None, marks

    def _class_probabilities(self, raw: Any) -> dict[str, float]:
        """Each score class's probability from the network's raw score output."""
        spec = self.spec.input
        assert spec.score_classes is not None
        if isinstance(raw, dict):
            logits = raw.get(spec.score_output) if spec.score_output else None
        elif isinstance(raw, (tuple, list)) and len(raw) == 2:
            logits = raw[1]
        else:
            logits = raw
        if not isinstance(logits, torch.Tensor):
            raise InferenceError(
                f"Expected the score output {spec.score_output!r} as a tensor. Found "
                f"{type(logits).__name__}."
            )
        values = logits.detach().float().reshape(1, -1)
        if values.shape[1] != len(spec.score_classes):
            raise InferenceError(
                f"score output: expected {len(spec.score_classes)} class channels "
                f"{spec.score_classes}. Found shape {tuple(logits.shape)}."
            )
        if not torch.isfinite(values).all():
            raise InferenceError("the score output contains NaN or infinite values")
        if spec.score_activation == ScoreActivation.SOFTMAX:
            values = torch.softmax(values, dim=1)
        else:
            values = torch.sigmoid(values)
        return {name: float(values[0, i]) for i, name in enumerate(spec.score_classes)}

    def _mask_on_source_grid(
        self, probabilities: torch.Tensor, data: Preprocessed, restored: torch.Tensor | None = None
    ) -> np.ndarray:
        """The predicted mask on the source grid: boolean, or a label map for > 2 classes.

        The foreground is where the background's resampled margin below the best other
        class is negative; with several foreground classes each foreground voxel takes
        the class of highest resampled probability (value ``k`` for ``output_classes[k]``),
        so the union of the classes is exactly the two-class foreground. ``restored`` is
        the margin already resampled (:meth:`_restored_margin`).
        """
        if restored is None:
            restored = self._restored_margin(probabilities, data)
        foreground = (restored[0] < 0).numpy()
        if probabilities.shape[0] <= 2:
            return foreground
        classes = restore_original_grid(probabilities[1:].cpu(), data)
        labels = (classes.argmax(dim=0) + 1).numpy().astype(np.uint8)
        labels[~foreground] = 0
        return labels

    @staticmethod
    def _restored_margin(probabilities: torch.Tensor, data: Preprocessed) -> torch.Tensor:
        """Background minus the best foreground class, resampled to the source grid (1 channel)."""
        margin = probabilities[:1] - probabilities[1:].max(dim=0, keepdim=True).values
        return restore_original_grid(margin.cpu(), data)

    def _foreground(
        self, probabilities: torch.Tensor, prepared: _Prepared, restored_margin: torch.Tensor
    ) -> np.ndarray:
        """The lesion probability on the source grid: 1 - the background's, resampled.

        Every foreground class together, brought back to the source slices like the mask.
        With one foreground class the margin is ``2 p_background - 1`` and the resampling
        is linear, so the probability is ``(1 - restored margin) / 2``: no second
        resampling, and the marks at threshold 0.5 are the mask's components.
        """
        assert prepared.data is not None
        if prepared.affine is None:
            raise InferenceError(
                "detection marks need a 3D series with patient geometry; found a 2D image"
            )
        if probabilities.shape[0] == 2:
            two_class: np.ndarray = ((1.0 - restored_margin[0]) / 2.0).numpy()
            return two_class
        foreground = 1.0 - probabilities[:1]
        restored: np.ndarray = restore_original_grid(foreground.cpu(), prepared.data)[0].numpy()
        return restored

    def _write_marks(self, foreground: np.ndarray, prepared: _Prepared) -> tuple[Path, str, int]:
        """Marks of the lesion probability map by the run's rule, written as ``marks.json``."""
        from workbench.inference.detection import marks_from_probability

        assert self.marks_rule is not None and prepared.affine is not None
        marks = marks_from_probability(
            foreground,
            prepared.affine,
            threshold=self.marks_rule.threshold,
            min_voxels=self.marks_rule.min_voxels,
        )
        return self._write_mark_list(marks, prepared)

    def _write_mark_list(self, marks: Sequence[Any], prepared: _Prepared) -> tuple[Path, str, int]:
        """A case's marks written as ``marks.json``; its path, SHA-256 and mark count."""
        from workbench.inference.detection import marks_to_json

        data = marks_to_json(marks)
        case_dir = self.out_dir / "cases" / prepared.case.case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        target = case_dir / MARKS_FILENAME
        _write_bytes_atomic(target, data)
        return target, hashlib.sha256(data).hexdigest(), len(marks)

    def _keep_probability(self, foreground: np.ndarray, prepared: _Prepared) -> tuple[Path, str]:
        """Keep the sparse lesion probability map (``probability.npz``) and its SHA-256."""
        assert prepared.affine is not None
        flat = np.ascontiguousarray(foreground, dtype=np.float32).ravel()
        index = np.flatnonzero(flat >= PROBABILITY_FLOOR)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            shape=np.asarray(foreground.shape, dtype=np.int64),
            affine=np.asarray(prepared.affine, dtype=np.float64),
            floor=np.asarray(PROBABILITY_FLOOR, dtype=np.float64),
            index=index.astype(np.int64),
            value=flat[index],
        )
        data = buffer.getvalue()
        case_dir = self.out_dir / "cases" / prepared.case.case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        target = case_dir / PROBABILITY_FILENAME
        _write_bytes_atomic(target, data)
        return target, hashlib.sha256(data).hexdigest()

    def _write_seg(self, mask: np.ndarray, prepared: _Prepared) -> tuple[Path, str]:
        from workbench.dicom.seg import write_seg

        case_dir = self.out_dir / "cases" / prepared.case.case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        target = case_dir / SEG_FILENAME
        partial = case_dir / (SEG_FILENAME + ".partial")
        series_uid, sop_uid = seg_uids(self.digest, prepared.case.case_id)
        write_seg(
            mask,
            prepared.source_paths,
            partial,
            source_headers=prepared.source_headers,
            algorithm_name=self.spec.name,
            algorithm_version=self.spec.version,
            segment_label="Lesion",
            segment_labels=None if mask.dtype == bool else self.spec.input.output_classes[1:],
            series_description=f"{self.spec.name} {self.spec.version} lesion"[:64],
            series_instance_uid=series_uid,
            sop_instance_uid=sop_uid,
            content_datetime=prepared.content_datetime,
        )
        with partial.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)  # atomic: a killed run never leaves a half-written SEG
        return target, _sha256_file(target)


def _reason(stage: str, error: BaseException) -> str:
    message = str(error) or type(error).__name__
    return f"{stage} failed: {type(error).__name__}: {message}"[:2000]


def read_kept_probability(
    path: str | Path, expected_sha256: str
) -> tuple[np.ndarray, np.ndarray, float]:
    """A kept lesion probability map, checked against its recorded SHA-256.

    Returns
    -------
    (probability, affine, floor)
        The dense (z, y, x) float32 map (0 below the floor), the voxel (x, y, z, 1) to
        LPS mm affine, and the floor below which nothing was kept.

    Raises
    ------
    InferenceError
        The file is missing or no longer has its recorded SHA-256.
    """
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise InferenceError(
            f"{path} is missing or no longer matches its recorded SHA-256 "
            f"({expected_sha256[:12]}...); its marks cannot be derived from it."
        )
    with np.load(io.BytesIO(data)) as npz:
        shape = tuple(int(v) for v in npz["shape"])
        dense = np.zeros(int(np.prod(shape)), dtype=np.float32)
        dense[npz["index"]] = npz["value"]
        return dense.reshape(shape), np.asarray(npz["affine"]), float(npz["floor"])


def marks_from_kept_probability(
    path: str | Path, expected_sha256: str, rule: MarkRule, out_path: str | Path
) -> tuple[Path, str, int]:
    """The marks of a kept probability map by ``rule``, written as ``marks.json``.

    The same marks as a fresh run with ``marks_rule=rule`` gives, for a rule whose
    threshold is at or above the map's floor.

    Returns
    -------
    (path, sha256, n_marks)

    Raises
    ------
    InferenceError
        The map changed, or the rule's threshold lies below the kept floor.
    """
    from workbench.inference.detection import marks_from_probability, marks_to_json

    probability, affine, floor = read_kept_probability(path, expected_sha256)
    if rule.threshold < floor:
        raise InferenceError(
            f"the candidate threshold {rule.threshold:g} lies below the kept map's floor "
            f"{floor:g}; run the model again"
        )
    marks = marks_from_probability(
        probability, affine, threshold=rule.threshold, min_voxels=rule.min_voxels
    )
    data = marks_to_json(marks)
    target = Path(out_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_bytes_atomic(target, data)
    return target, hashlib.sha256(data).hexdigest(), len(marks)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(partial, path)


def run_inference(
    cases: Iterable[CaseInput],
    loaded_model: LoadedModel,
    spec: ModelSpec,
    *,
    out_dir: str | Path,
    device: str | torch.device | None = None,
    executor: InferenceExecutor | None = None,
    completed: Iterable[str] = frozenset(),
    on_case: Callable[[CaseOutput], None] | None = None,
    progress: Progress | None = None,
    case_timeout_s: float | None = None,
    mixed_precision: bool = False,
    content_datetime: dt.datetime | None = None,
    marks_rule: MarkRule | None = None,
    keep_probability: bool = False,
) -> InferenceSummary:
    """Run a model over cases, writing one output per case.

    Parameters
    ----------
    cases : iterable of CaseInput
        The cases, in the order outputs are reported.
    loaded_model : LoadedModel
        From :func:`~workbench.inference.loading.load_model`.
    spec : ModelSpec
        The registered spec; must name the same model and version as
        ``loaded_model.spec``.
    out_dir : str or Path
        Output folder: ``environment.json`` and ``cases/<case_id>/prediction_seg.dcm``.
    device : str or torch.device, optional
        Default: the model's device. A different device moves the model.
    executor : InferenceExecutor, optional
        Default :class:`~workbench.inference.executor.InProcessExecutor`;
        :class:`~workbench.inference.ray_executor.RayExecutor` runs the cases on a
        Ray cluster with the same outputs (its description is added to the
        environment snapshot as ``executor``).
    completed : iterable of str
        Case ids already completed by an earlier, interrupted run; skipped.
    on_case : callable, optional
        ``on_case(output)`` as each case finishes, in case order.
    progress : callable, optional
        ``progress(done, total, message)``.
    case_timeout_s : float, optional
        Time limit per case (reading + inference + writing). Checked before and
        after each step and before every sliding-window batch; one forward call
        is not interrupted.
    mixed_precision : bool
        Autocast on CUDA (recorded in the summary; ignored on CPU).
    content_datetime : datetime, optional
        Date/time written into the SEG objects. Services pass the run's start
        time and reuse it when resuming; by default each source study's date/time.
    marks_rule : MarkRule, optional
        Detection protocols: also turn each segmentation's lesion probability map
        into marks by this rule, written as ``cases/<case_id>/marks.json``.
    keep_probability : bool
        Also keep each segmentation's sparse lesion probability map
        (``cases/<case_id>/probability.npz``) for later detection runs.

    Returns
    -------
    InferenceSummary

    Raises
    ------
    InferenceError
        Duplicate case ids, or ``spec`` does not belong to ``loaded_model``.
    """
    started = time.perf_counter()
    case_list = list(cases)
    ids = [c.case_id for c in case_list]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InferenceError(f"Expected unique case ids. Found duplicates: {duplicates}.")
    if (spec.name, spec.version) != (loaded_model.spec.name, loaded_model.spec.version):
        raise ModelError(
            f"The spec names {spec.name} {spec.version} but the loaded model is "
            f"{loaded_model.spec.name} {loaded_model.spec.version}."
        )
    target = torch.device(device) if device is not None else loaded_model.device
    if device is not None:
        target = select_device(device)
        if target != loaded_model.device:
            loaded_model.module.to(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done_before = set(completed)
    todo = [c for c in case_list if c.case_id not in done_before]
    skipped = tuple(c.case_id for c in case_list if c.case_id in done_before)
    total = len(case_list)
    amp = bool(mixed_precision and target.type == "cuda")

    with deterministic_mode() as settings:
        runner = executor if executor is not None else InProcessExecutor()
        describe = getattr(runner, "describe", None)
        # Executors that run elsewhere say where (Ray: connects first, so that the
        # snapshot below lists the cluster's nodes).
        executor_info = describe() if callable(describe) else None
        environment = snapshot(target)
        environment["mixed_precision"] = amp
        environment["model"] = {
            "name": spec.name,
            "version": spec.version,
            "digest": loaded_model.digest,
            "files": loaded_model.file_hashes,
        }
        if executor_info is not None:
            environment["executor"] = executor_info
        environment_path = out / ENVIRONMENT_FILENAME
        _write_json_atomic(environment_path, environment)
        processor = CaseProcessor(
            loaded_model,
            spec,
            out,
            target,
            mixed_precision=amp,
            case_timeout_s=case_timeout_s,
            content_datetime=content_datetime,
            marks_rule=marks_rule,
            keep_probability=keep_probability,
        )
        done = len(skipped)
        if progress is not None:
            progress(done, total, f"{len(skipped)} case(s) already completed, {len(todo)} to run")
        outputs: list[CaseOutput] = []

        def emit(case: CaseInput, output: CaseOutput) -> None:
            nonlocal done
            if output.case_id != case.case_id:
                raise InferenceError(
                    f"The executor returned case {output.case_id} where {case.case_id} was "
                    "expected; executors must yield results in case order."
                )
            outputs.append(output)
            if on_case is not None:
                on_case(output)
            done += 1
            if progress is not None:
                detail = output.status.value + (f" ({output.reason})" if output.reason else "")
                progress(done, total, f"{case.case_id}: {detail}")

        if isinstance(runner, InProcessExecutor):
            # Three stages overlap: reading (the executor's prefetch thread), the forward
            # pass (this thread) and writing each case's SEG (one writer thread, at the
            # executor's background priority), while outputs are still handed on in
            # case order.
            computed = runner.map_cases(processor.compute, todo, prepare=processor.prepare)
            with ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="seg-writer",
                initializer=lower_thread_priority,
                initargs=(runner.background_niceness,),
            ) as writer:
                pending: deque[tuple[CaseInput, Future[CaseOutput]]] = deque()
                for case, item in zip(todo, computed, strict=True):
                    pending.append((case, writer.submit(processor.finish, item)))
                    while len(pending) > 1:
                        head_case, future = pending.popleft()
                        emit(head_case, future.result())
                while pending:
                    head_case, future = pending.popleft()
                    emit(head_case, future.result())
        else:
            for case, output in zip(
                todo, runner.map_cases(processor, todo, prepare=processor.prepare), strict=True
            ):
                emit(case, output)
            if callable(describe):  # now with the workers that ran the cases
                environment["executor"] = describe()
                _write_json_atomic(environment_path, environment)

    n_completed = sum(o.status == CaseStatus.COMPLETED for o in outputs)
    return InferenceSummary(
        outputs=tuple(outputs),
        total=total,
        completed=n_completed,
        failed=len(outputs) - n_completed,
        skipped=len(skipped),
        skipped_ids=skipped,
        model_name=spec.name,
        model_version=spec.version,
        model_digest=loaded_model.digest,
        device=str(target),
        mixed_precision=amp,
        deterministic=settings,
        environment=environment,
        environment_path=environment_path,
        seconds=time.perf_counter() - started,
    )


def cases_from_test_set(root: str | Path, case_ids: Sequence[str] | None = None) -> list[CaseInput]:
    """Cases of a test set in the synthetic layout (``cases/<case_id>/CT/*.dcm``).

    Parameters
    ----------
    root : str or Path
        Test-set root.
    case_ids : sequence of str, optional
        Only these cases, in this order; by default every case folder, sorted.

    Returns
    -------
    list of CaseInput
    """
    base = Path(root) / "cases"
    ids = (
        list(case_ids)
        if case_ids is not None
        else sorted(p.name for p in base.iterdir() if p.is_dir())
    )
    return [CaseInput(i, tuple(sorted((base / i / "CT").glob("*.dcm")))) for i in ids]
