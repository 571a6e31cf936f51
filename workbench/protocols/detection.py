"""Detection protocols: marks matched to reference lesions, free-response endpoints.

Pure: takes the protocol, the run's cases frame (one row per case), the
reference lesions (one row per lesion, patient coordinates in mm) and the
model's marks or their stored matches, and returns frozen dataclasses and
frames. Every number comes from :mod:`workbench.stats` (``match_lesions``,
``froc_estimate``, ``froc_curve``, ``sensitivity_at_fppi``).

Matching
--------
:func:`match_marks` applies the protocol's locked ``matching`` rule case by case
(one-to-one, Hungarian): every mark becomes a lesion localisation (``LL``), a
non-lesion localisation (``NL``) or ``below_floor``, every unmatched lesion is
``missed``. The run stores these decisions per case; :func:`evaluate_detection`
reads them back and never re-matches.

Cases
-----
Excluded cases are dropped. A failed case counts as an error under
``failed_cases: count_as_error`` (its lesions are missed, it has no marks) and is
dropped under ``exclude``. Case strata hold whole cases; lesion strata
(``unit: lesion``, e.g. size bins) hold the lesions of the bin, every case
without lesions, and the non-lesion marks of those cases (lesion localisations
of lesions outside the bin are left out), and their ``n`` is the number of lesions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench import stats as wstats
from workbench.errors import NotEstimableError, ProtocolError, StatisticsError
from workbench.protocols.evaluation import (
    _Context,
    _prepare,
    case_clusters,
    conclude_evaluation,
    judge_endpoint,
    stratum_labels,
)
from workbench.protocols.metrics import Metric, Task, metric_info
from workbench.protocols.results import EndpointResult, FrocSummary, ProtocolEvaluation
from workbench.protocols.schema import (
    Endpoint,
    FailedCasePolicy,
    Matching,
    Protocol,
    StratumFactor,
    StratumUnit,
)

__all__ = [
    "MATCH_COLUMNS",
    "DEFAULT_FPPI_GRID",
    "DetectionAnalysis",
    "evaluate_detection",
    "lesion_table",
    "match_marks",
    "match_summary",
    "wafroc_operating_points",
]

#: Columns of a stored match table (one row per decision).
MATCH_COLUMNS = (
    "case_id",
    "mark_id",
    "lesion_id",
    "score",
    "status",
    "similarity",
    "iou",
    "distance_mm",
)

#: Non-lesion marks per image at which the FROC summary reports the sensitivity.
DEFAULT_FPPI_GRID = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)

_BOX = ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")
_CENTRE = ("x", "y", "z")


def _geometry_columns(frame: pd.DataFrame, dimensions: int) -> pd.DataFrame:
    """The frame with only the geometry the matching dimensions use."""
    drop = [] if dimensions == 3 else [c for c in ("z_min", "z_max", "z") if c in frame]
    out = frame.drop(columns=drop)
    box = [c for c in _BOX if c in out]
    # a point mark or lesion (no box values) is matched by its centre
    if box and out[box].isna().any().any():
        out = out.drop(columns=box)
    return out


def _pair_iou(lesion: pd.Series, mark: pd.Series, dimensions: int) -> float:
    axes = ("x", "y", "z")[:dimensions]
    inter, vol_l, vol_m = 1.0, 1.0, 1.0
    for a in axes:
        try:
            l0, l1 = float(lesion[f"{a}_min"]), float(lesion[f"{a}_max"])
            m0, m1 = float(mark[f"{a}_min"]), float(mark[f"{a}_max"])
        except (KeyError, TypeError, ValueError):
            return float("nan")
        if not all(np.isfinite([l0, l1, m0, m1])):
            return float("nan")
        inter *= max(0.0, min(l1, m1) - max(l0, m0))
        vol_l *= l1 - l0
        vol_m *= m1 - m0
    union = vol_l + vol_m - inter
    return float(inter / union) if union > 0 else float("nan")


def _pair_distance(lesion: pd.Series, mark: pd.Series, dimensions: int) -> float:
    axes = ("x", "y", "z")[:dimensions]
    try:
        d = [float(lesion[a]) - float(mark[a]) for a in axes]
    except (KeyError, TypeError, ValueError):
        return float("nan")
    return float(np.sqrt(np.sum(np.square(d))))


def match_marks(
    matching: Matching,
    lesions: pd.DataFrame,
    marks: pd.DataFrame,
    *,
    cases: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Match marks to reference lesions by the protocol's locked rule.

    Parameters
    ----------
    matching : Matching
        The protocol's ``matching`` section.
    lesions : pandas.DataFrame
        One row per lesion: ``case_id``, ``lesion_id``, the box ``x_min``...``z_max``
        and/or centre ``x, y, z`` (LPS mm), ``diameter``; optional ``lesion_weight``.
    marks : pandas.DataFrame
        One row per mark: ``case_id``, ``mark_id``, ``score`` and a box and/or centre
        (:func:`workbench.inference.detection.marks_to_frame`).
    cases : sequence of str, optional
        Every case id (cases without lesions and marks enter no row).

    Returns
    -------
    pandas.DataFrame
        :data:`MATCH_COLUMNS`: one row per matched pair (``LL``), unmatched mark
        (``NL``), mark below the score floor (``below_floor``) and missed lesion
        (``missed``); ``similarity`` is the rule's (IoU, or 1 - distance / allowed
        distance), ``iou`` the IoU of the matched boxes and ``distance_mm`` the
        distance of the matched centres (in the matching dimensions).

    Raises
    ------
    ProtocolError
        The lesions or marks lack geometry, repeat a lesion id within a case, or
        hold non-finite scores (the message says which).
    """
    dims = int(matching.dimensions)
    if lesions.empty and marks.empty:
        return pd.DataFrame(columns=list(MATCH_COLUMNS))
    ref = _geometry_columns(lesions.reset_index(drop=True), dims)
    preds = _geometry_columns(marks.reset_index(drop=True), dims)
    if ref.empty:
        # no lesion anywhere: every kept mark is a non-lesion localisation
        ref = pd.DataFrame(
            {"case_id": pd.Series(dtype=str), "lesion_id": pd.Series(dtype=str)}
            | {c: pd.Series(dtype=float) for c in (*_CENTRE[:dims], "diameter")}
        )
    if preds.empty:
        preds = pd.DataFrame(
            {"case_id": pd.Series(dtype=str), "mark_id": pd.Series(dtype=str)}
            | {c: pd.Series(dtype=float) for c in ("score", *_CENTRE[:dims])}
        )
    try:
        result = wstats.match_lesions(
            ref,
            preds,
            rule=matching.rule.value,
            threshold=matching.threshold if matching.threshold is not None else 1.0,
            relative=matching.relative,
            score_floor=matching.score_floor,
            cases=cases,
        )
    except StatisticsError as exc:
        raise ProtocolError(f"matching marks to reference lesions: {exc}") from None
    table = result.matches.copy()
    table["iou"] = np.nan
    table["distance_mm"] = np.nan
    ll = table.index[table["status"] == "LL"]
    if len(ll):
        by_lesion = lesions.set_index(["case_id", "lesion_id"])
        by_mark = marks.set_index(["case_id", "mark_id"])
        for i in ll:
            case, lesion_id, mark_id = (table.at[i, c] for c in ("case_id", "lesion_id", "mark_id"))
            lesion = by_lesion.loc[(case, lesion_id)]
            mark = by_mark.loc[(case, mark_id)]
            table.at[i, "iou"] = _pair_iou(lesion, mark, dims)
            table.at[i, "distance_mm"] = _pair_distance(lesion, mark, dims)
    table["case_id"] = table["case_id"].astype(str)
    for column in ("mark_id", "lesion_id"):  # missing ids are None, whatever the source
        values = table[column].astype(object)
        table[column] = values.where(values.notna(), None)
    return table[list(MATCH_COLUMNS)].reset_index(drop=True)


def match_summary(matches: pd.DataFrame) -> dict[str, float | int | None]:
    """Per-case counts of a case's match table, stored with the case.

    Returns
    -------
    dict
        ``n_lesions``, ``n_marks`` (kept), ``n_ll``, ``n_nl``, ``n_missed``,
        ``n_below_floor`` and ``max_nl_score`` (``None`` without NL marks).
    """
    status = matches["status"].astype(str) if len(matches) else pd.Series(dtype=str)
    nl = matches.loc[status == "NL", "score"] if len(matches) else pd.Series(dtype=float)
    n_ll = int((status == "LL").sum())
    n_missed = int((status == "missed").sum())
    return {
        "n_lesions": n_ll + n_missed,
        "n_marks": int(status.isin(["LL", "NL"]).sum()),
        "n_ll": n_ll,
        "n_nl": int((status == "NL").sum()),
        "n_missed": n_missed,
        "n_below_floor": int((status == "below_floor").sum()),
        "max_nl_score": float(nl.max()) if len(nl) else None,
    }


@dataclass(frozen=True, slots=True)
class DetectionAnalysis:
    """A detection run's evaluation.

    Parameters
    ----------
    evaluation : ProtocolEvaluation
        Endpoints overall and per stratum, criteria and verdict.
    froc : FrocSummary or None
        FROC and wAFROC curves for figures (``None`` when not estimable).
    froc_reason : str
        Why ``froc`` is ``None`` ('' otherwise).
    lesions : pandas.DataFrame
        The per-lesion table (:func:`lesion_table`) of the analysed cases.
    """

    evaluation: ProtocolEvaluation
    froc: FrocSummary | None
    froc_reason: str
    lesions: pd.DataFrame


def lesion_table(lesions: pd.DataFrame, matches: pd.DataFrame) -> pd.DataFrame:
    """One row per reference lesion with its matching mark, for reports and reviewers.

    Returns
    -------
    pandas.DataFrame
        ``case_id``, ``lesion_id``, ``diameter``, ``lesion_weight``, ``status``
        (``matched`` or ``missed``), ``mark_id``, ``rating``, ``iou``, ``distance_mm``
        and the lesions' other columns, ordered by case and lesion.
    """
    base = lesions.copy()
    base["case_id"] = base["case_id"].astype(str)
    base["lesion_id"] = base["lesion_id"].astype(str)
    hits = matches[matches["status"] == "LL"][
        ["case_id", "lesion_id", "mark_id", "score", "iou", "distance_mm"]
    ].rename(columns={"score": "rating"})
    hits = hits.assign(case_id=hits["case_id"].astype(str), lesion_id=hits["lesion_id"].astype(str))
    out = base.merge(hits, on=["case_id", "lesion_id"], how="left")
    out["status"] = np.where(out["mark_id"].notna(), "matched", "missed")
    first = [
        "case_id",
        "lesion_id",
        "diameter",
        "lesion_weight",
        "status",
        "mark_id",
        "rating",
        "iou",
        "distance_mm",
    ]
    for column in first:
        if column not in out:
            out[column] = np.nan
    rest = [c for c in out.columns if c not in first]
    return out[first + rest].sort_values(["case_id", "lesion_id"]).reset_index(drop=True)


#: Column of the truth frame holding each case's patient when the protocol has ``cluster_by``.
CLUSTER_COLUMN = "_cluster"


class _FrocData:
    """The free-response marks and truth of the analysed cases, and their restrictions."""

    def __init__(self, cases: pd.DataFrame, lesions: pd.DataFrame, matches: pd.DataFrame):
        self.case_ids = [str(c) for c in cases["case_id"]]
        keep = set(self.case_ids)
        clusters = case_clusters(cases)
        #: the patient of every case under ``cluster_by`` (intervals resample patients)
        self.cluster_of: dict[str, str] | None = (
            None if clusters is None else dict(zip(self.case_ids, clusters, strict=True))
        )
        les = lesions[lesions["case_id"].astype(str).isin(keep)].copy()
        les["case_id"] = les["case_id"].astype(str)
        les["lesion_id"] = les["lesion_id"].astype(str)
        if "lesion_weight" not in les:
            les["lesion_weight"] = 1.0
        self.lesions = les
        m = matches[
            matches["case_id"].astype(str).isin(keep) & matches["status"].isin(["LL", "NL"])
        ]
        self.marks = pd.DataFrame(
            {
                "case_id": m["case_id"].astype(str).to_numpy(),
                "lesion_id": [
                    str(v) if s == "LL" else None
                    for v, s in zip(m["lesion_id"], m["status"], strict=True)
                ],
                "rating": m["score"].to_numpy(dtype=float),
            }
        )

    def restrict(
        self, case_ids: Sequence[str] | None = None, lesion_keys: set[tuple[str, str]] | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(marks, truth) of some cases, or of some lesions with every lesion-free case."""
        les = self.lesions
        with_lesion = set(les["case_id"])
        if lesion_keys is not None:
            keys = list(zip(les["case_id"], les["lesion_id"], strict=True))
            les = les[[k in lesion_keys for k in keys]]
            normal = [c for c in self.case_ids if c not in with_lesion]
            kept = set(les["case_id"]) | set(normal)
        else:
            kept = set(self.case_ids if case_ids is None else (str(c) for c in case_ids))
            les = les[les["case_id"].isin(kept)]
            normal = [c for c in self.case_ids if c in kept and c not in with_lesion]
        truth = pd.concat(
            [
                les[["case_id", "lesion_id", "lesion_weight"]],
                pd.DataFrame({"case_id": normal, "lesion_id": None, "lesion_weight": np.nan}),
            ],
            ignore_index=True,
        )
        if self.cluster_of is not None:
            truth[CLUSTER_COLUMN] = truth["case_id"].map(self.cluster_of)
        marks = self.marks[self.marks["case_id"].isin(kept)]
        if lesion_keys is not None:
            on_lesion = marks["lesion_id"].notna()
            inside = [
                (c, lid) in lesion_keys
                for c, lid in zip(marks["case_id"], marks["lesion_id"], strict=True)
            ]
            marks = marks[~on_lesion.to_numpy() | np.asarray(inside, dtype=bool)]
        return marks.reset_index(drop=True), truth


def _cluster_column(truth: pd.DataFrame) -> str | None:
    return CLUSTER_COLUMN if CLUSTER_COLUMN in truth.columns else None


def _estimator(
    data: _FrocData,
) -> Callable[[Endpoint, pd.DataFrame, float], tuple[wstats.Estimate | None, str]]:
    def estimate(
        endpoint: Endpoint, frame: pd.DataFrame, level: float
    ) -> tuple[wstats.Estimate | None, str]:
        est, reason = _one(endpoint, frame, level)
        if est is not None and "lesion_id" in frame.columns:
            est = dataclasses.replace(est, n=len(frame))  # a lesion stratum counts lesions
        return est, reason

    def _one(
        endpoint: Endpoint, frame: pd.DataFrame, level: float
    ) -> tuple[wstats.Estimate | None, str]:
        if "lesion_id" in frame.columns:  # a lesion stratum
            keys = set(
                zip(frame["case_id"].astype(str), frame["lesion_id"].astype(str), strict=True)
            )
            marks, truth = data.restrict(lesion_keys=keys)
        else:
            marks, truth = data.restrict(case_ids=list(frame["case_id"].astype(str)))
        if truth.empty:
            return None, "no cases"
        info = metric_info(endpoint.metric)
        try:
            if info.fom is not None:
                return (
                    wstats.froc_estimate(
                        marks,
                        truth,
                        fom=info.fom,
                        ci=endpoint.ci_method,
                        level=level,
                        n_boot=endpoint.ci.n_boot,
                        seed=endpoint.ci.seed,
                        clusters=_cluster_column(truth),
                    ),
                    "",
                )
            assert endpoint.fppi is not None
            row = wstats.sensitivity_at_fppi(
                marks,
                truth,
                fppi=[endpoint.fppi],
                level=level,
                n_boot=endpoint.ci.n_boot,
                seed=endpoint.ci.seed,
                clusters=_cluster_column(truth),
            ).iloc[0]
            n_cases = int(truth["case_id"].nunique())
            return (
                wstats.Estimate(
                    float(row["sensitivity"]),
                    float(row["ci_low"]),
                    float(row["ci_high"]),
                    level,
                    f"bootstrap-percentile ({endpoint.ci.n_boot} replicates, "
                    + (
                        "cases resampled within class"
                        if _cluster_column(truth) is None
                        else f"{truth[CLUSTER_COLUMN].nunique()} patients resampled"
                    )
                    + "; pointwise FROC band)",
                    n_cases,
                ),
                "",
            )
        except NotEstimableError as exc:
            return None, str(exc)
        except StatisticsError as exc:
            return None, f"statistics error: {exc}"

    return estimate


def _lesion_labels(lesions: pd.DataFrame, factor: StratumFactor) -> pd.Series:
    return stratum_labels(lesions, factor)


def wafroc_operating_points(
    marks: pd.DataFrame, truth: pd.DataFrame, *, fom: str | None = None
) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """Empirical wAFROC operating points, from (0, 0) through every threshold to (1, 1).

    The false-positive rating of a case is its highest non-lesion mark's (negative
    infinity without one), over the cases without lesions (wAFROC), or over every case
    (wAFROC1: asked for with ``fom="wafroc1"``, and used when every case holds a lesion).
    The curve joins the points with straight lines, as RJafroc draws it, so that its
    area is the figure of merit (Chakraborty 2017, ch. 13).

    Parameters
    ----------
    marks : DataFrame
        Kept marks: ``case_id``, ``lesion_id`` (the lesion a mark localises, missing for
        a non-lesion mark) and ``rating``.
    truth : DataFrame
        ``case_id``, ``lesion_id`` (missing on the row of a lesion-free case) and
        optionally ``lesion_weight`` (equal weights within a case when absent).
    fom : {"wafroc", "wafroc1"}, optional

    Returns
    -------
    tuple
        ``(fpf, wllf, fom)``; empty curves when the cases lack a class the figure of
        merit needs.
    """
    lesions = truth[truth["lesion_id"].notna()].copy()
    all_cases = truth["case_id"].astype(str).unique()
    normal = truth.loc[truth["lesion_id"].isna(), "case_id"].astype(str).unique()
    diseased = lesions["case_id"].astype(str).unique()
    if fom is None:
        fom = "wafroc" if len(normal) else "wafroc1"
    fp_cases = normal if fom == "wafroc" else all_cases
    if len(fp_cases) == 0 or len(diseased) == 0:
        return (), (), fom
    weight = (
        lesions["lesion_weight"] if "lesion_weight" in lesions else pd.Series(np.nan, lesions.index)
    )
    w = weight.astype(float).fillna(1.0)
    lesions["w"] = w / w.groupby(lesions["case_id"]).transform("sum")
    ll = marks[marks["lesion_id"].notna()][["case_id", "lesion_id", "rating"]]
    lesions = lesions.merge(ll, on=["case_id", "lesion_id"], how="left")
    nl = marks[marks["lesion_id"].isna() & marks["case_id"].isin(fp_cases)]
    fp_rating = nl.groupby("case_id")["rating"].max().reindex(fp_cases).to_numpy(dtype=float)
    fp_rating = np.nan_to_num(fp_rating, nan=-np.inf)
    ll_rating = np.nan_to_num(lesions["rating"].to_numpy(dtype=float), nan=-np.inf)
    ratings = np.r_[fp_rating, ll_rating]
    thresholds = np.unique(ratings[np.isfinite(ratings)])[::-1]
    weights = lesions["w"].to_numpy(dtype=float)
    fpf, wllf = [0.0], [0.0]
    for t in thresholds:
        fpf.append(float(np.sum(fp_rating >= t) / len(fp_cases)))
        wllf.append(float(np.sum(weights[ll_rating >= t]) / len(diseased)))
    fpf.append(1.0)
    wllf.append(1.0)
    return tuple(fpf), tuple(wllf), fom


def _froc_summary(
    protocol: Protocol, data: _FrocData, results: Sequence[EndpointResult]
) -> tuple[FrocSummary | None, str]:
    marks, truth = data.restrict()
    n_lesions = int(truth["lesion_id"].notna().sum())
    if n_lesions == 0:
        return None, "the analysed cases hold no reference lesion"
    endpoints = [ep for ep in protocol.endpoints if metric_info(ep.metric).task is Task.DETECTION]
    ci = endpoints[0].ci if endpoints else None
    n_boot = ci.n_boot if ci is not None else 1000
    seed = ci.seed if ci is not None else 0
    level = ci.level if ci is not None else 0.95
    try:
        curve = wstats.froc_curve(
            marks, truth, level=level, n_boot=n_boot, seed=seed, clusters=_cluster_column(truth)
        )
        grid = sorted(
            {*DEFAULT_FPPI_GRID, *(float(ep.fppi) for ep in endpoints if ep.fppi is not None)}
        )
        at = wstats.sensitivity_at_fppi(
            marks,
            truth,
            fppi=grid,
            level=level,
            n_boot=n_boot,
            seed=seed,
            clusters=_cluster_column(truth),
        )
    except (NotEstimableError, StatisticsError) as exc:
        return None, f"FROC curve not estimable: {exc}"
    fpf, wllf, fom = wafroc_operating_points(marks, truth)
    wafroc = next(
        (r.estimate for r in results if r.metric == Metric(fom).value and r.estimate is not None),
        None,
    )
    if wafroc is None:
        try:
            wafroc = wstats.froc_estimate(
                marks,
                truth,
                fom=fom,
                level=level,
                n_boot=n_boot,
                seed=seed,
                clusters=_cluster_column(truth),
            )
        except (NotEstimableError, StatisticsError):
            wafroc = None
    n_cases = int(truth["case_id"].nunique())
    return (
        FrocSummary(
            nlf=tuple(float(v) for v in curve.nlf),
            llf=tuple(float(v) for v in curve.llf),
            lower=tuple(float(v) for v in curve.lower),
            upper=tuple(float(v) for v in curve.upper),
            level=float(curve.level),
            fpf=fpf,
            wllf=wllf,
            wafroc=wafroc,
            sensitivity_at_fppi=tuple(
                (
                    float(r["fppi"]),
                    wstats.Estimate(
                        float(r["sensitivity"]),
                        float(r["ci_low"]),
                        float(r["ci_high"]),
                        level,
                        f"bootstrap-percentile ({n_boot} replicates, pointwise)",
                        n_cases,
                    ),
                )
                for r in at.to_dict(orient="records")
            ),
            n_cases=n_cases,
            n_diseased=int(truth.loc[truth["lesion_id"].notna(), "case_id"].nunique()),
            n_lesions=n_lesions,
            n_marks=len(marks),
            wafroc_fom=fom,
        ),
        "",
    )


def evaluate_detection(
    protocol: Protocol,
    cases: pd.DataFrame,
    lesions: pd.DataFrame,
    matches: pd.DataFrame,
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> DetectionAnalysis:
    """Estimate a detection protocol's endpoints overall and per stratum, and judge them.

    Parameters
    ----------
    protocol : Protocol
        A detection protocol.
    cases : pandas.DataFrame
        One row per case: ``case_id``, ``status`` and the case attributes of the strata.
    lesions : pandas.DataFrame
        One row per reference lesion: ``case_id``, ``lesion_id``, ``lesion_weight``,
        ``diameter`` and the lesion attributes of the lesion strata.
    matches : pandas.DataFrame
        The stored match decisions (:func:`match_marks`) of every case.
    progress : callable, optional
        ``progress(done, total, message)`` after each endpoint.

    Returns
    -------
    DetectionAnalysis

    Raises
    ------
    ProtocolError
        Not a detection protocol, or a frame lacks a column it needs.
    """
    if protocol.task is not Task.DETECTION:
        raise ProtocolError(
            f"Protocol {protocol.id} is a {protocol.task.value} protocol; evaluate it with "
            "workbench.protocols.evaluate_endpoints."
        )
    for frame, what, needed in (
        (lesions, "lesions", ("case_id", "lesion_id")),
        (matches, "matches", ("case_id", "status", "score", "lesion_id")),
    ):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ProtocolError(
                f"The {what} frame lacks column(s) {missing}; found {list(frame.columns)}."
            )
    prepared = _prepare(protocol, cases)
    analysed = prepared.frame
    if protocol.failed_cases is FailedCasePolicy.COUNT_AS_ERROR:
        # a failed case's lesions are all missed: it keeps no mark
        failed = set(prepared.failed)
        matches = matches[~matches["case_id"].astype(str).isin(failed)]
    data = _FrocData(analysed, lesions, matches)
    ctx = _Context(protocol, estimator=_estimator(data))
    case_strata = [f for f in protocol.strata if f.unit is StratumUnit.CASE]
    lesion_strata = [f for f in protocol.strata if f.unit is StratumUnit.LESION]
    case_labels = {f.factor: stratum_labels(analysed, f) for f in case_strata}
    lesion_rows = data.lesions
    lesion_labels = {f.factor: _lesion_labels(lesion_rows, f) for f in lesion_strata}
    results = []
    total = len(protocol.endpoints)
    for i, ep in enumerate(protocol.endpoints):
        parts: list[tuple[StratumFactor, str, pd.DataFrame]] = []
        for factor in protocol.strata:
            if factor.unit is StratumUnit.CASE:
                labels = case_labels[factor.factor]
                source = analysed
            else:
                labels = lesion_labels[factor.factor]
                source = lesion_rows
            for value in sorted(labels.unique()):
                parts.append((factor, value, source[labels == value]))
        results.append(judge_endpoint(protocol, ep, analysed, parts, ctx))
        if progress is not None:
            progress(i + 1, total, f"endpoint {ep.id}: {results[-1].verdict.value}")
    evaluation = conclude_evaluation(protocol, len(cases), prepared, results)
    froc, reason = _froc_summary(protocol, data, results)
    return DetectionAnalysis(
        evaluation=evaluation,
        froc=froc,
        froc_reason=reason,
        lesions=lesion_table(data.lesions, matches),
    )
