"""Pre-flight: every mismatch between protocol, test set and model, at once, before inference.

``workbench protocol check PROTOCOL --testset NAME [--model M@V]`` and
:func:`workbench.services.runs.validate` call :func:`check_protocol`. It
builds the run's cases exactly as the run will (:func:`workbench.protocols.cases.build_cases`)
and reports, in one list: a protocol written for another test set, a labels
file or column the protocol needs that is missing, labels rows that match no
series, cases that would be excluded (grouped by reason), stratum factors with
no source, strata below their min_n, a model whose task or input does not fit
the images, and a run that would exclude every case. Multi-structure protocols:
a structure's model class that is not among the model's ``output_classes``, and
cases whose references lack a structure (left out of that structure's endpoints;
blocking when every case lacks it). Multi-class labels: labels values outside
``classes`` and classes the model's ``score_classes`` do not name. Problems
marked ``blocking`` stop a run before it starts.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from workbench.dicom.reference import reference_structures
from workbench.dicom.references import find_reference_files
from workbench.errors import WorkbenchError
from workbench.inference.registry import ModelSpec, ModelTask
from workbench.protocols import Metric, Protocol, load_protocol, stratum_labels
from workbench.protocols.cases import CaseSpec, build_cases
from workbench.records.models import RegisteredModel, TestSet
from workbench.services import models as model_service
from workbench.services import protocols as protocol_service
from workbench.services.context import Actor, Workbench, current_user, get_one
from workbench.services.testset_index import LABELS_PATH, load_index

__all__ = ["PreflightProblem", "PreflightReport", "check_protocol", "preflight_cases"]


@dataclass(frozen=True, slots=True)
class PreflightProblem:
    """One mismatch: which check, where, what was expected and what was found."""

    check: str
    where: str
    expected: str
    found: str
    blocking: bool = True

    def line(self) -> str:
        """One line for a terminal or a log."""
        kind = "ERROR" if self.blocking else "note "
        return f"{kind} {self.check} [{self.where}]: expected {self.expected}; found {self.found}"


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """Everything :func:`check_protocol` found.

    Parameters
    ----------
    protocol, test_set : str
    model : str or None
    n_cases, n_analysable : int
        Image series found; those that would enter the analysis.
    exclusions : tuple of (str, int)
        Exclusion reasons with their counts, most frequent first.
    problems : tuple of PreflightProblem
    protocol_sha256 : str
        SHA-256 of the protocol text checked.
    """

    protocol: str
    test_set: str
    model: str | None
    n_cases: int
    n_analysable: int
    exclusions: tuple[tuple[str, int], ...] = ()
    problems: tuple[PreflightProblem, ...] = field(default_factory=tuple)
    protocol_sha256: str = ""

    @property
    def ok(self) -> bool:
        """No blocking problem."""
        return not any(p.blocking for p in self.problems)

    def audit_record(self) -> dict[str, object]:
        """The outcome as plain JSON data for an audit entry (e.g. with a lock)."""
        return {
            "protocol": self.protocol,
            "protocol_sha256": self.protocol_sha256,
            "model": self.model,
            "ok": self.ok,
            "n_cases": self.n_cases,
            "n_analysable": self.n_analysable,
            "exclusions": dict(self.exclusions),
            "problems": [p.line() for p in self.problems],
        }

    def lines(self) -> list[str]:
        """A summary for the terminal."""
        head = (
            f"{self.protocol} x test set {self.test_set}"
            + (f" x model {self.model}" if self.model else "")
            + f": {self.n_cases} image series, {self.n_analysable} would be analysed"
        )
        out = [head]
        out += [f"  excluded {n}: {reason}" for reason, n in self.exclusions]
        out += [f"  {p.line()}" for p in self.problems]
        out.append("  PRE-FLIGHT " + ("OK" if self.ok else "FAILED: the run would be refused"))
        return out


def _labels(root: Path, entries: dict[str, str] | None) -> pd.DataFrame | None:
    path = root / LABELS_PATH
    if not path.is_file() or (entries is not None and LABELS_PATH not in entries):
        return None
    return pd.read_csv(io.BytesIO(path.read_bytes()), dtype={"case_id": str})


def preflight_cases(
    protocol: Protocol,
    cases: list[CaseSpec],
    labels: pd.DataFrame | None,
    *,
    test_set_name: str,
    spec: ModelSpec | None = None,
) -> list[PreflightProblem]:
    """The problems of running ``protocol`` (and ``spec``) on these cases; pure."""
    problems: list[PreflightProblem] = []
    reference = protocol.reference_standard
    if protocol.test_set.name != test_set_name:
        problems.append(
            PreflightProblem(
                "test set", "protocol test_set.name", repr(protocol.test_set.name), test_set_name
            )
        )
    needed = [c for c in [reference.labels_column, *reference.reader_label_columns] if c]
    key = reference.labels_key.value
    if labels is None:
        if needed or protocol.task.value == "classification":
            problems.append(
                PreflightProblem(
                    "labels", LABELS_PATH, f"a labels file with {needed or [key]}", "no file"
                )
            )
    else:
        missing = [c for c in [key, *needed] if c not in labels.columns]
        if missing:
            problems.append(
                PreflightProblem(
                    "labels columns",
                    LABELS_PATH,
                    f"columns {missing}",
                    f"columns {list(labels.columns)}",
                )
            )
        elif key != "case_id" or "case_id" in labels.columns:
            joined = {str(c.attributes.get(key)) for c in cases if c.exclusion is None}
            keyed = labels[key].dropna().astype(str)
            unmatched = sorted(set(keyed) - joined - _matched_by_excluded(cases, key))
            if unmatched:
                problems.append(
                    PreflightProblem(
                        "labels join",
                        f"{LABELS_PATH} column {key}",
                        "every row to match an image series of the test set",
                        f"{len(unmatched)} row(s) match none (first: {unmatched[0]})",
                        blocking=False,
                    )
                )
    analysable = [c for c in cases if c.exclusion is None]
    if not analysable:
        problems.append(
            PreflightProblem(
                "cases",
                f"test set {test_set_name}",
                "at least one case to analyse",
                f"all {len(cases)} image series would be excluded",
            )
        )
    frame = pd.DataFrame([dict(c.attributes) for c in analysable])
    # Sources come from every case and the labels file: with every case excluded the
    # empty frame would make header attributes such as manufacturer look missing.
    sources = set(frame.columns).union(*(c.attributes for c in cases))
    if labels is not None:
        sources |= set(labels.columns)
    for factor in protocol.strata:
        if factor.unit.value == "lesion":
            continue  # a reference-lesion attribute, checked when the lesions are read
        if factor.source_column not in sources:
            problems.append(
                PreflightProblem(
                    "stratum source",
                    f"strata factor {factor.factor}",
                    f"column {factor.source_column!r} in labels.csv or a DICOM header attribute",
                    "neither",
                )
            )
            continue
        if factor.source_column not in frame.columns:
            continue  # nothing analysable to count; the "cases" problem says why
        counts = stratum_labels(frame, factor).value_counts()
        small = {str(k): int(v) for k, v in counts.items() if v < factor.min_n}
        if small and factor.assess:
            problems.append(
                PreflightProblem(
                    "stratum size",
                    f"strata factor {factor.factor}",
                    f"n >= min_n={factor.min_n} per stratum to judge it",
                    ", ".join(f"{k}: n={v}" for k, v in sorted(small.items()))
                    + " (reported, not judged)",
                    blocking=False,
                )
            )
    problems += _cluster_problems(protocol, analysable)
    problems += _class_problems(protocol, labels)
    problems += _structure_problems(protocol, analysable)
    if spec is not None:
        # with nothing analysable, still say whether the model fits these images
        problems += _model_problems(protocol, spec, analysable or cases)
    return problems


def _cluster_problems(protocol: Protocol, analysable: list[CaseSpec]) -> list[PreflightProblem]:
    """``cluster_by``: every analysable case names its patient (cluster)."""
    column = protocol.cluster_by
    if column is None or not analysable:
        return []
    missing = [c.case_id for c in analysable if _blank(c.attributes.get(column))]
    if not missing:
        return []
    return [
        PreflightProblem(
            "cluster",
            f"cluster_by {column}",
            f"a {column} for every case (labels.csv column or DICOM header attribute)",
            f"{len(missing)} case(s) without one (first: {missing[0]})",
        )
    ]


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == ""


def _class_problems(protocol: Protocol, labels: pd.DataFrame | None) -> list[PreflightProblem]:
    """Multi-class labels: every value of the labels column must be one of the classes."""
    reference = protocol.reference_standard
    column = reference.labels_column
    if reference.classes is None or labels is None or column not in labels.columns:
        return []
    values = labels[column].dropna().astype(str)
    odd = sorted(set(values) - set(reference.classes))
    if not odd:
        return []
    return [
        PreflightProblem(
            "labels values",
            f"{LABELS_PATH} column {column}",
            f"one of reference_standard.classes {reference.classes}",
            f"{odd[:10]} in {int(values.isin(odd).sum())} row(s)",
        )
    ]


def _structure_problems(protocol: Protocol, cases: list[CaseSpec]) -> list[PreflightProblem]:
    """Structures a reader's reference lacks: excluded from that structure's endpoints."""
    seg = protocol.reference_standard.segmentation
    if seg is None or not seg.structures or not cases:
        return []
    held: dict[Path, tuple[str | int, ...]] = {}
    problems = []
    for i, structure in enumerate(seg.structures):
        lacking: list[str] = []
        for case in cases:
            for reader in seg.readers:
                path = case.seg_paths.get(reader)
                if path is None:
                    continue
                if path not in held:
                    try:
                        held[path] = reference_structures(path, seg.source.value)
                    except WorkbenchError:
                        held[path] = ()
                if structure.reference not in held[path]:
                    lacking.append(case.case_id)
                    break
        if lacking:
            problems.append(
                PreflightProblem(
                    "structure reference",
                    f"reference_standard.segmentation.structures[{i}] ({structure.name})",
                    f"{structure.reference!r} in every reader's reference",
                    f"missing for {len(lacking)} of {len(cases)} case(s) (first: {lacking[0]}); "
                    "they are left out of this structure's endpoints",
                    blocking=len(lacking) == len(cases),
                )
            )
    return problems


def _matched_by_excluded(cases: list[CaseSpec], key: str) -> set[str]:
    return {str(c.attributes.get(key)) for c in cases if c.exclusion is not None}


def _model_problems(
    protocol: Protocol, spec: ModelSpec, cases: list[CaseSpec]
) -> list[PreflightProblem]:
    problems = []
    task = protocol.task.value
    # a segmentation model feeds a detection protocol through its candidates rule
    fits = spec.task is ModelTask.BOTH or spec.task.value == task
    fits = fits or (task == "detection" and spec.task is ModelTask.SEGMENTATION)
    if not fits:
        problems.append(
            PreflightProblem(
                "model task", f"model {spec.name}@{spec.version}", f"task {task}", spec.task.value
            )
        )
    where = f"model {spec.name}@{spec.version}"
    seg = protocol.reference_standard.segmentation
    foreground = list(spec.input.output_classes[1:])
    structures = seg.structures if seg is not None and seg.structures else []
    for i, structure in enumerate(structures):
        if structure.model_class not in foreground:
            problems.append(
                PreflightProblem(
                    "model class",
                    f"reference_standard.segmentation.structures[{i}].model_class",
                    f"a foreground class of {where}'s output_classes {foreground}",
                    repr(structure.model_class),
                )
            )
    reference = protocol.reference_standard
    if reference.classes is not None:
        score_classes = list(spec.input.score_classes or [])
        kappa = [ep.id for ep in protocol.endpoints if ep.metric is Metric.KAPPA_MULTICLASS]
        if not score_classes and kappa:
            problems.append(
                PreflightProblem(
                    "model classes",
                    f"{where} input.score_classes",
                    f"the class names of a multi-class output for endpoint(s) {kappa}",
                    "a single score",
                )
            )
        missing = [c for c in reference.classes if c not in score_classes]
        if score_classes and missing:
            problems.append(
                PreflightProblem(
                    "model classes",
                    "reference_standard.classes",
                    f"each class among {where}'s score_classes {score_classes}",
                    f"{missing} not among them",
                )
            )
        if not score_classes and reference.positive_classes:
            problems.append(
                PreflightProblem(
                    "model classes",
                    f"{where} input.score_classes",
                    f"class probabilities to score positive_classes {reference.positive_classes}",
                    "a single score, used as the probability of the positive classes",
                    blocking=False,
                )
            )
    dims = int(getattr(spec.input, "spatial_dims", 3))
    single = [c for c in cases if len(c.image_paths) == 1]
    if dims == 3 and single:
        problems.append(
            PreflightProblem(
                "model input",
                f"model {spec.name}@{spec.version}",
                "volumes (input.spatial_dims 3)",
                f"{len(single)} case(s) are single images (first: {single[0].case_id})",
            )
        )
    if dims == 2 and len(single) < len(cases):
        problems.append(
            PreflightProblem(
                "model input",
                f"model {spec.name}@{spec.version}",
                "single 2D images (input.spatial_dims 2)",
                f"{len(cases) - len(single)} case(s) are multi-slice series",
            )
        )
    return problems


def check_protocol(
    wb: Workbench,
    actor: Actor,
    *,
    protocol: str | Path,
    test_set: str,
    model: str | None = None,
) -> PreflightReport:
    """Check a protocol against a test set (and a model) before any inference.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``run.view``.
    protocol : str or Path
        A stored protocol ``id@version`` (or ``id``), or a YAML file not stored yet.
    test_set : str
        Test-set name (draft or locked).
    model : str, optional
        ``name@version`` of a registered model.

    Returns
    -------
    PreflightReport
    """
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "run.view")
        if isinstance(protocol, Path) or str(protocol).endswith((".yaml", ".yml")):
            proto = load_protocol(Path(protocol).read_bytes())
            proto_ref = f"{proto.id}@{proto.version} ({Path(protocol).name})"
        else:
            pv = protocol_service.lookup(session, str(protocol))
            proto = protocol_service.parsed_protocol(pv)
            proto_ref = f"{pv.protocol_id}@{pv.version}"
        ts: TestSet = get_one(session, TestSet, "test set", name=test_set)
        index = load_index(session, ts)
        root = Path(ts.root_path)
        spec = None
        model_ref = None
        if model is not None:
            reg: RegisteredModel = model_service._lookup(session, model)
            spec = ModelSpec.model_validate(reg.spec)
            model_ref = f"{reg.name}@{reg.version}"
    labels = _labels(root, None)
    seg_ref = proto.reference_standard.segmentation
    reference_problems: list[PreflightProblem] = []
    references = None
    if seg_ref is not None:
        try:
            references = find_reference_files(index.files, root, seg_ref.source.value)
        except WorkbenchError as error:
            reference_problems.append(
                PreflightProblem(
                    "reference files",
                    f"reference_standard.segmentation.source {seg_ref.source.value}",
                    "reference files identified by content",
                    str(error),
                )
            )
    cases = build_cases(index.files, labels, proto, root, references=references)
    problems = reference_problems + preflight_cases(
        proto, cases, labels, test_set_name=ts.name, spec=spec
    )
    exclusions = Counter(c.exclusion for c in cases if c.exclusion)
    return PreflightReport(
        protocol=proto_ref,
        test_set=ts.name,
        model=model_ref,
        n_cases=len(cases),
        n_analysable=sum(c.exclusion is None for c in cases),
        exclusions=tuple(sorted(exclusions.items(), key=lambda kv: (-kv[1], kv[0]))),
        problems=tuple(problems),
        protocol_sha256=proto.sha256,
    )
