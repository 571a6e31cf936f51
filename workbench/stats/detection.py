"""Lesion matching for detection models, and average precision.

A detection model outputs marks (boxes or points with a score); the reference
standard lists lesions (boxes, or centres with a size). Before any free-response
statistic (:mod:`workbench.stats.froc`) each mark must be declared a lesion
localisation (on a lesion) or a non-lesion localisation, by a rule fixed in the
protocol before the data are seen:

* ``"iou"``: the intersection over union of the mark's box and the lesion's box
  (2D or 3D) is at least ``threshold``;
* ``"center_in_region"``: the mark's centre lies inside the lesion's box, or within
  half the lesion's diameter of its centre;
* ``"center_distance"``: the distance between the centres is at most ``threshold``
  millimetres, or ``threshold`` times the lesion's size with ``relative=True``.

Pairs that satisfy the rule are matched one-to-one by the Hungarian algorithm [1]_
(``scipy.optimize.linear_sum_assignment``), so one mark can never localise two
lesions nor two marks the same lesion: the assignment first maximises the number of
matched lesions, then the total similarity (IoU, or closeness of centres). Only cases
where a mark or a lesion has more than one candidate go through the solver; all
other pairs are vectorised.

Coordinates are in millimetres (convert voxel indices with the pixel spacing
first). Box columns: ``x_min, y_min, x_max, y_max`` (plus ``z_min, z_max`` in 3D);
point / centre columns: ``x, y`` (plus ``z``); lesion size: ``diameter``.

References
----------
.. [1] Kuhn HW. The Hungarian method for the assignment problem. Naval Res Logist Q
   2:83-97, 1955; Crouse DF. On implementing 2D rectangular assignment algorithms. IEEE
   Trans Aerosp Electron Syst 52:1679-1696, 2016 (the algorithm in SciPy).
.. [2] Chakraborty DP. Observer Performance Methods for Diagnostic Imaging. CRC Press,
   2017, ch. 12 (the proximity criterion of free-response studies).
.. [3] Everingham M, Van Gool L, Williams CKI, Winn J, Zisserman A. The PASCAL visual object
   classes (VOC) challenge. Int J Comput Vis 88:303-338, 2010 (average precision).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment

from workbench.errors import StatisticsError
from workbench.stats._core import choose

__all__ = ["MATCH_RULES", "MatchResult", "average_precision", "match_lesions"]

MATCH_RULES = ("iou", "center_in_region", "center_distance")
_BOX = ("x_min", "y_min", "x_max", "y_max")
_BOX3 = ("z_min", "z_max")


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Marks matched to reference lesions by a locked rule.

    Parameters
    ----------
    marks : pandas.DataFrame
        The free-response marks, ready for :func:`~workbench.stats.froc_figure_of_merit`:
        the ``by`` columns, ``case_id``, ``lesion_id`` (NaN for a non-lesion mark),
        ``rating`` (the score) and ``mark_id``; marks below the score floor are left out.
    truth : pandas.DataFrame
        ``case_id``, ``lesion_id`` (NaN for a case without lesions), ``lesion_weight``.
    matches : pandas.DataFrame
        Every decision: one row per matched pair (``status`` ``"LL"``), unmatched mark
        (``"NL"``), mark below the floor (``"below_floor"``) and unmatched lesion
        (``"missed"``, per ``by`` group), with ``case_id``, ``mark_id``, ``lesion_id``,
        ``score`` and ``similarity`` (IoU, or 1 - distance / allowed distance).
    rule : str
        The matching rule.
    threshold : float
        Its threshold (IoU, millimetres, or fraction of the lesion size).
    score_floor : float or None
        Marks scored below it were dropped.
    """

    marks: pd.DataFrame
    truth: pd.DataFrame
    matches: pd.DataFrame
    rule: str
    threshold: float
    score_floor: float | None


def _has(frame: pd.DataFrame, cols: Sequence[str]) -> bool:
    return all(c in frame.columns for c in cols)


def _geometry(frame: pd.DataFrame, what: str, three_d: bool) -> dict[str, NDArray[np.float64]]:
    """Box corners and/or centre of each row, as float arrays (mm)."""
    dims = ("x", "y", "z") if three_d else ("x", "y")
    out: dict[str, NDArray[np.float64]] = {}
    box_cols = [f"{d}_{e}" for d in dims for e in ("min", "max")]
    if _has(frame, box_cols):
        for c in box_cols:
            out[c] = frame[c].to_numpy(dtype=np.float64)
        for d in dims:
            lo, hi = out[f"{d}_min"], out[f"{d}_max"]
            if (hi < lo).any() or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
                raise StatisticsError(
                    f"{what} boxes need finite {d}_min <= {d}_max; found "
                    f"{int((hi < lo).sum())} inverted or non-finite."
                )
            out[d] = (lo + hi) / 2.0
    elif _has(frame, dims):
        for d in dims:
            out[d] = frame[d].to_numpy(dtype=np.float64)
            if not np.isfinite(out[d]).all():
                raise StatisticsError(f"{what} column {d!r} has missing or infinite values.")
    else:
        raise StatisticsError(
            f"{what} needs box columns {box_cols} or centre columns {list(dims)}; found "
            f"{list(frame.columns)}."
        )
    return out


def _size(
    ref: pd.DataFrame, geo: dict[str, NDArray[np.float64]], dims: tuple[str, ...]
) -> NDArray[np.float64]:
    """Lesion size (mm): ``diameter`` if given, else the largest side of its box."""
    if "diameter" in ref.columns:
        size = ref["diameter"].to_numpy(dtype=np.float64)
    elif all(f"{d}_min" in geo for d in dims):
        size = np.max([geo[f"{d}_max"] - geo[f"{d}_min"] for d in dims], axis=0)
    else:
        raise StatisticsError(
            "The reference needs a 'diameter' column (or boxes) for this rule; found "
            f"{list(ref.columns)}."
        )
    if not (np.isfinite(size).all() and (size > 0).all()):
        raise StatisticsError("Lesion sizes (diameter) must be finite and positive.")
    return size


def _pair_similarity(
    rule: str,
    threshold: float,
    relative: bool,
    ref: pd.DataFrame,
    rg: dict[str, NDArray[np.float64]],
    mg: dict[str, NDArray[np.float64]],
    li: NDArray[np.intp],
    mi: NDArray[np.intp],
    dims: tuple[str, ...],
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Eligibility and similarity in [0, 1] of each (lesion li, mark mi) pair."""
    if rule == "iou":
        if not all(f"{d}_min" in rg and f"{d}_min" in mg for d in dims):
            raise StatisticsError(
                "rule='iou' needs boxes for both lesions and marks; use "
                "'center_in_region' or 'center_distance' for points."
            )
        inter = np.ones(len(li))
        vol_r = np.ones(len(li))
        vol_m = np.ones(len(li))
        for d in dims:
            r0, r1 = rg[f"{d}_min"][li], rg[f"{d}_max"][li]
            m0, m1 = mg[f"{d}_min"][mi], mg[f"{d}_max"][mi]
            inter *= np.clip(np.minimum(r1, m1) - np.maximum(r0, m0), 0.0, None)
            vol_r *= r1 - r0
            vol_m *= m1 - m0
        union = vol_r + vol_m - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            sim = np.where(union > 0, inter / union, 0.0)
        return (sim >= threshold) & (sim > 0), sim
    dist = np.sqrt(sum((rg[d][li] - mg[d][mi]) ** 2 for d in dims))
    if rule == "center_in_region":
        if "diameter" in ref.columns or not all(f"{d}_min" in rg for d in dims):
            radius = _size(ref, rg, dims)[li] / 2.0
            inside = dist <= radius
        else:
            inside = np.ones(len(li), dtype=bool)
            radius = np.zeros(len(li))
            for d in dims:
                lo, hi = rg[f"{d}_min"][li], rg[f"{d}_max"][li]
                inside &= (mg[d][mi] >= lo) & (mg[d][mi] <= hi)
                radius = np.maximum(radius, (hi - lo) / 2.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sim = np.clip(1.0 - dist / np.where(radius > 0, radius, np.inf), 0.0, 1.0)
        return inside, sim
    allowed = threshold * _size(ref, rg, dims)[li] if relative else np.full(len(li), threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.clip(1.0 - dist / np.where(allowed > 0, allowed, np.inf), 0.0, 1.0)
    return dist <= allowed, sim


def _assign(
    group: NDArray[np.intp],
    li: NDArray[np.intp],
    mi: NDArray[np.intp],
    sim: NDArray[np.float64],
    mark_rank: NDArray[np.float64],
) -> NDArray[np.bool_]:
    """One-to-one choice among eligible pairs: most matches, then most total similarity.

    Pairs are grouped by case; a case where no mark and no lesion has two candidates is
    taken as is, the others are solved by the Hungarian algorithm.
    """
    n = len(li)
    chosen = np.zeros(n, dtype=bool)
    if n == 0:
        return chosen
    per_mark = np.bincount(mi)[mi]
    per_lesion = np.bincount(li)[li]
    conflict_pair = (per_mark > 1) | (per_lesion > 1)
    conflict_group = np.zeros(int(group.max()) + 1, dtype=bool)
    conflict_group[group[conflict_pair]] = True
    simple = ~conflict_group[group]
    chosen[simple] = True
    hard = np.flatnonzero(~simple)
    if len(hard) == 0:
        return chosen
    # order by group, then by mark rank so that ties go to the higher-scored mark
    hard = hard[np.lexsort((mark_rank[hard], group[hard]))]
    bounds = np.flatnonzero(np.r_[True, group[hard][1:] != group[hard][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx = hard[a:b]
        marks_u, m_loc = np.unique(mark_rank[idx], return_inverse=True)
        les_u, l_loc = np.unique(li[idx], return_inverse=True)
        k = min(len(marks_u), len(les_u))
        cost = np.zeros((len(les_u), len(marks_u)))
        cost[l_loc, m_loc] = -(1.0 + sim[idx] / (k + 1.0))
        rows, cols = linear_sum_assignment(cost)
        keep = cost[rows, cols] < 0
        pair_of = {(int(r), int(c)): int(p) for p, r, c in zip(idx, l_loc, m_loc, strict=True)}
        for r, c in zip(rows[keep], cols[keep], strict=True):
            chosen[pair_of[(int(r), int(c))]] = True
    return chosen


def match_lesions(
    reference: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    rule: str = "iou",
    threshold: float = 0.5,
    relative: bool = False,
    score_floor: float | None = None,
    cases: ArrayLike | None = None,
    by: Sequence[str] = (),
    case: str = "case_id",
    lesion: str = "lesion_id",
    mark: str = "mark_id",
    score: str = "score",
) -> MatchResult:
    """Match model marks to reference lesions one-to-one by a locked rule.

    Parameters
    ----------
    reference : pandas.DataFrame
        One row per lesion: ``case``, ``lesion`` (unique within a case), a box
        (``x_min``... ``x_max``..., 3D with ``z_min``, ``z_max``) or a centre (``x, y[, z]``)
        with ``diameter``; optionally ``lesion_weight``.
    predictions : pandas.DataFrame
        One row per mark: ``case``, ``score``, a box or a point; optionally ``mark``
        (default: the row position) and the ``by`` columns.
    rule : {"iou", "center_in_region", "center_distance"}
        Proximity criterion [2]_, see the module docstring.
    threshold : float
        Minimum IoU (``"iou"``), or largest centre distance in mm (``"center_distance"``),
        or that distance as a fraction of the lesion size with ``relative=True``.
        Unused by ``"center_in_region"``.
    relative : bool
        ``"center_distance"`` only: the distance is relative to the lesion size.
    score_floor : float, optional
        Marks scored below it are dropped before matching (listed as ``"below_floor"``).
    cases : array_like, optional
        Every case id of the test set, so that cases without lesions and without marks
        enter the truth frame. Default: the cases seen in either frame.
    by : sequence of str
        Columns of ``predictions`` (e.g. ``"model"``, ``"reader"``) matched separately.
    case, lesion, mark, score : str
        Column names.

    Returns
    -------
    MatchResult
        ``marks`` and ``truth`` feed :func:`~workbench.stats.froc_figure_of_merit`,
        :func:`~workbench.stats.froc_estimate` and :func:`~workbench.stats.froc_mrmc`.

    Raises
    ------
    StatisticsError
        Unknown rule (did-you-mean), missing columns, duplicated lesion ids, inverted
        boxes, non-finite scores.
    """
    rule = choose("rule", rule, MATCH_RULES)
    for frame, what, cols in (
        (reference, "reference", [case, lesion]),
        (predictions, "predictions", [case, score, *by]),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise StatisticsError(f"{what} lacks column(s) {missing}; found {list(frame.columns)}.")
    thr = float(threshold)
    if rule != "center_in_region" and not (np.isfinite(thr) and thr > 0):
        raise StatisticsError(f"threshold must be a positive number, found {threshold!r}.")
    if rule == "iou" and thr > 1:
        raise StatisticsError(f"An IoU threshold lies in (0, 1], found {threshold!r}.")
    if reference.duplicated([case, lesion]).any():
        raise StatisticsError("reference lists a (case, lesion) more than once.")
    if reference[lesion].isna().any():
        raise StatisticsError(
            "reference rows need a lesion id; list cases without lesions with cases=."
        )
    preds = predictions.reset_index(drop=True)
    if mark not in preds.columns:
        preds = preds.assign(**{mark: np.arange(len(preds))})
    s = preds[score].to_numpy(dtype=np.float64)
    if not np.isfinite(s).all():
        raise StatisticsError(f"Column {score!r} must be finite for every mark.")
    three_d = _has(reference, _BOX3) or "z" in reference.columns
    dims = ("x", "y", "z") if three_d else ("x", "y")
    below = np.zeros(len(preds), dtype=bool) if score_floor is None else s < float(score_floor)
    kept = preds[~below].reset_index(drop=True)
    ref = reference.reset_index(drop=True)
    rg = _geometry(ref, "reference", three_d)
    mg = _geometry(kept, "predictions", three_d) if len(kept) else {}

    # every (lesion, mark) pair of the same case, vectorised
    key_cols = [*by, case]
    group_id = kept.groupby(key_cols, sort=False).ngroup().to_numpy()
    ref_pos = pd.DataFrame({case: ref[case], "_li": np.arange(len(ref))})
    mark_pos = kept[key_cols].assign(_mi=np.arange(len(kept)), _g=group_id)
    pairs = mark_pos.merge(ref_pos, on=case, how="inner")
    li = pairs["_li"].to_numpy(dtype=np.intp)
    mi = pairs["_mi"].to_numpy(dtype=np.intp)
    ok, sim = (
        _pair_similarity(rule, thr, relative, ref, rg, mg, li, mi, dims)
        if len(pairs)
        else (np.zeros(0, dtype=bool), np.zeros(0))
    )
    li, mi, sim, grp = li[ok], mi[ok], sim[ok], pairs["_g"].to_numpy()[ok]
    # rank marks within the whole frame by descending score: ties go to the stronger mark
    rank = np.empty(len(kept))
    rank[np.argsort(-kept[score].to_numpy(dtype=np.float64), kind="stable")] = np.arange(len(kept))
    # a lesion is a separate candidate in each by-group: number (group, lesion) pairs
    _, lesion_key = np.unique(grp.astype(np.int64) * len(ref) + li, return_inverse=True)
    chosen = _assign(grp.astype(np.intp), lesion_key.astype(np.intp), mi, sim, rank[mi])
    li, mi, sim = li[chosen], mi[chosen], sim[chosen]

    lesion_of_mark = np.full(len(kept), -1, dtype=np.intp)
    lesion_of_mark[mi] = li
    sim_of_mark = np.full(len(kept), np.nan)
    sim_of_mark[mi] = sim
    lesion_ids = ref[lesion].to_numpy(dtype=object)
    out = kept[[*by, case, mark]].copy()
    labels = np.full(len(kept), None, dtype=object)
    labels[mi] = lesion_ids[li]
    out[lesion] = labels
    out["rating"] = kept[score].to_numpy(dtype=np.float64)
    marks_out = out[[*by, case, lesion, "rating", mark]].rename(
        columns={lesion: "lesion_id", case: "case_id"}
    )

    # the decision table
    table_marks = out.rename(columns={"rating": score}).assign(
        status=np.where(lesion_of_mark >= 0, "LL", "NL"), similarity=sim_of_mark
    )
    dropped = preds.loc[below, [*by, case, mark, score]].assign(
        **{lesion: None}, status="below_floor", similarity=np.nan
    )
    groups = kept[[*by]].drop_duplicates() if by else pd.DataFrame(index=[0])
    ref_rows = ref[[case, lesion]].assign(_li=np.arange(len(ref)))
    if by:
        ref_rows = ref_rows.merge(groups, how="cross")
    hit = pd.DataFrame({**{b: kept[b].to_numpy()[mi] for b in by}, "_li": li})
    missed = ref_rows.merge(hit, on=[*by, "_li"], how="left", indicator=True)
    missed = missed[missed["_merge"] == "left_only"].drop(columns=["_li", "_merge"])
    missed = missed.assign(**{mark: np.nan, score: np.nan}, status="missed", similarity=np.nan)
    matches = pd.concat([table_marks, dropped, missed], ignore_index=True)[
        [*by, case, mark, lesion, score, "status", "similarity"]
    ].rename(columns={case: "case_id", lesion: "lesion_id", mark: "mark_id"})

    all_cases = (
        pd.unique(np.asarray(cases, dtype=object))
        if cases is not None
        else pd.unique(pd.concat([ref[case], predictions[case]], ignore_index=True).to_numpy())
    )
    weights = (
        ref["lesion_weight"].to_numpy(dtype=np.float64)
        if "lesion_weight" in ref.columns
        else np.ones(len(ref))
    )
    with_lesion = set(ref[case].tolist())
    normal = [c for c in all_cases if c not in with_lesion]
    truth = pd.concat(
        [
            pd.DataFrame(
                {"case_id": ref[case], "lesion_id": ref[lesion], "lesion_weight": weights}
            ),
            pd.DataFrame({"case_id": normal, "lesion_id": None, "lesion_weight": np.nan}),
        ],
        ignore_index=True,
    )
    return MatchResult(marks_out, truth, matches, rule, thr, score_floor)


def average_precision(
    reference: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    iou_thresholds: Sequence[float] = (0.5,),
    score_floor: float | None = None,
    case: str = "case_id",
    lesion: str = "lesion_id",
    score: str = "score",
) -> pd.DataFrame:
    """Average precision of a box detector at stated IoU thresholds.

    Parameters
    ----------
    reference, predictions : pandas.DataFrame
        Boxes, as :func:`match_lesions`.
    iou_thresholds : sequence of float
        IoU thresholds, each in (0, 1].
    score_floor : float, optional
        Marks scored below it are dropped.
    case, lesion, score : str
        Column names.

    Returns
    -------
    pandas.DataFrame
        One row per threshold: ``iou_threshold``, ``average_precision``, ``n_lesions``,
        ``n_marks``. Marks are matched one-to-one by :func:`match_lesions` (Hungarian,
        not the greedy matching of VOC/COCO); AP is the area under the precision-recall
        curve with precision made monotone (all-point interpolation [3]_); tied scores
        enter the curve together, so the result does not depend on row order.
    """
    rows = []
    n_les = len(reference)
    for t in iou_thresholds:
        res = match_lesions(
            reference,
            predictions,
            rule="iou",
            threshold=float(t),
            score_floor=score_floor,
            case=case,
            lesion=lesion,
            score=score,
        )
        m = res.marks
        s = m["rating"].to_numpy(dtype=np.float64)
        tp = m["lesion_id"].notna().to_numpy(dtype=np.float64)
        order = np.argsort(-s, kind="stable")
        s, tp = s[order], tp[order]
        ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.zeros(0, int)
        ctp = np.cumsum(tp)[ends] if len(s) else np.zeros(0)
        n_marks = (ends + 1).astype(np.float64)
        if n_les == 0:
            ap = float("nan")
        else:
            recall = np.r_[0.0, ctp / n_les]
            precision = np.r_[1.0, ctp / np.maximum(n_marks, 1.0)]
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            ap = float(np.sum(np.diff(recall) * envelope[1:]))
        rows.append(
            {
                "iou_threshold": float(t),
                "average_precision": ap,
                "n_lesions": n_les,
                "n_marks": len(m),
            }
        )
    return pd.DataFrame(rows)
