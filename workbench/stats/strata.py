"""Stratified analysis: any registered metric per stratum, heterogeneity, Holm adjustment.

A *metric* is a name from :data:`METRICS`. The frame's column names are given by
keyword, so callers can stratify any endpoint. Per metric: the columns it reads
(keyword = default) and the heterogeneity test across strata.

- ``"auc"``: ``y_true="y_true"``, ``y_score="score"``; chi-square test of equal AUCs,
  ``Q = sum w_i (AUC_i - AUC_w)^2`` with ``w_i = 1 / Var_DeLong(AUC_i)``, k - 1 df
  (strata are disjoint case sets, hence independent).
- ``"sensitivity"``, ``"specificity"``, ``"ppv"``, ``"npv"``, ``"accuracy"``:
  ``y_true``, ``y_score`` and ``threshold=`` (required); Pearson chi-square test of
  homogeneity on the k x 2 table of successes and failures.
- ``"proportion"``: ``value="value"`` holding 0/1 per case; chi-square as above.
- ``"mean"``, ``"median"``: ``value="value"``; bootstrap CI; Kruskal-Wallis H test.
- ``"dice_mean"``, ``"dice_median"``: as mean/median with ``value="dice"``.

Other options (``ci``, ``method``, ``n_boot``, ``seed``, ``clusters`` column name
``cluster=None``) are passed through to the metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError
from workbench.stats._core import Estimate, TestResult, check_level, check_positive_int, choose
from workbench.stats.bootstrap import bootstrap_ci
from workbench.stats.proportions import binary_metrics, proportion_ci
from workbench.stats.roc import auc

__all__ = ["METRICS", "heterogeneity_test", "holm", "stratified"]


@dataclass(frozen=True, slots=True)
class _Metric:
    kind: str  # "auc" | "binary" | "proportion" | "summary"
    field: str = ""
    default_value: str = "value"


METRICS: dict[str, _Metric] = {
    "auc": _Metric("auc"),
    "sensitivity": _Metric("binary", "sensitivity"),
    "specificity": _Metric("binary", "specificity"),
    "ppv": _Metric("binary", "ppv"),
    "npv": _Metric("binary", "npv"),
    "accuracy": _Metric("binary", "accuracy"),
    "proportion": _Metric("proportion"),
    "mean": _Metric("summary", "mean"),
    "median": _Metric("summary", "median"),
    "dice_mean": _Metric("summary", "mean", "dice"),
    "dice_median": _Metric("summary", "median", "dice"),
}

_OPTION_NAMES = (
    "y_true",
    "y_score",
    "value",
    "threshold",
    "cluster",
    "ci",
    "method",
    "n_boot",
    "seed",
    "bootstrap_method",
)


@dataclass(frozen=True, slots=True)
class _Result:
    estimate: Estimate
    successes: int | None = None  # for the proportion heterogeneity table
    trials: int | None = None


def _column(frame: pd.DataFrame, name: str, role: str) -> np.ndarray:
    if name not in frame.columns:
        raise StatisticsError(
            f"Column {name!r} (the {role}) is not in the frame; found {list(frame.columns)}. "
            f"Pass {role}='<column>' to name it."
        )
    return frame[name].to_numpy()


def _evaluate(
    frame: pd.DataFrame, spec: _Metric, name: str, level: float, opts: dict[str, Any]
) -> _Result:
    cluster = opts.get("cluster")
    clusters = None if cluster is None else _column(frame, cluster, "cluster")
    if spec.kind == "auc":
        kw = {k: opts[k] for k in ("ci", "n_boot", "seed", "bootstrap_method") if k in opts}
        est = auc(
            _column(frame, opts.get("y_true", "y_true"), "y_true"),
            _column(frame, opts.get("y_score", "score"), "y_score"),
            level=level,
            clusters=clusters,
            **kw,
        )
        return _Result(est)
    if spec.kind == "binary":
        if "threshold" not in opts:
            raise StatisticsError(f"Metric {name!r} needs threshold=<score cut-off>.")
        bm = binary_metrics(
            _column(frame, opts.get("y_true", "y_true"), "y_true"),
            _column(frame, opts.get("y_score", "score"), "y_score"),
            threshold=opts["threshold"],
            method=opts.get("method", "wilson"),
            level=level,
        )
        est_or_none = getattr(bm, spec.field)
        if est_or_none is None:
            raise NotEstimableError(bm.not_estimable[spec.field])
        k = int(round(est_or_none.value * est_or_none.n))
        return _Result(est_or_none, k, est_or_none.n)
    values = _column(frame, opts.get("value", spec.default_value), "value")
    if spec.kind == "proportion":
        from workbench.stats._core import as_binary

        v = as_binary(values, "value")
        est = proportion_ci(int(v.sum()), len(v), method=opts.get("method", "wilson"), level=level)
        return _Result(est, int(v.sum()), len(v))
    kw = {k: opts[k] for k in ("n_boot", "seed") if k in opts}
    est = bootstrap_ci(
        values.astype(float),
        statistic=spec.field,
        clusters=clusters,
        level=level,
        method=opts.get("bootstrap_method", "percentile"),
        **kw,
    )
    return _Result(est)


def _groups(frame: pd.DataFrame, by: Sequence[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    missing = [b for b in by if b not in frame.columns]
    if missing:
        raise StatisticsError(f"Stratification columns {missing} are not in the frame.")
    return [
        (key if isinstance(key, tuple) else (key,), g)
        for key, g in frame.groupby(list(by), sort=True, dropna=False, observed=True)
    ]


def stratified(
    frame: pd.DataFrame,
    metric: str,
    *,
    by: str | Sequence[str],
    min_n: int = 1,
    level: float = 0.95,
    **metric_options: Any,
) -> pd.DataFrame:
    """A metric with its CI in each stratum, plus a heterogeneity test across strata.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per case.
    metric : str
        A name in :data:`METRICS` (see the module docstring for the columns each uses).
    by : str or sequence of str
        Column(s) defining strata; several columns give their crossed combinations.
    min_n : int
        Strata with fewer cases are reported with ``status`` ``"insufficient_n"`` and no
        estimate; they are never dropped.
    level : float
        Confidence level.
    **metric_options
        Column names (``y_true``, ``y_score``, ``value``, ``cluster``) and metric options
        (``threshold``, ``ci``, ``method``, ``n_boot``, ``seed``, ``bootstrap_method``).

    Returns
    -------
    pandas.DataFrame
        One row per stratum: the ``by`` columns, ``metric``, ``value``, ``ci_low``,
        ``ci_high``, ``level``, ``method``, ``se``, ``n``, ``status`` (``"ok"``,
        ``"insufficient_n"`` or ``"not_estimable"``) and ``reason``. Estimate columns are
        missing exactly when ``status`` is not ``"ok"``. ``frame.attrs["heterogeneity"]``
        holds the :class:`TestResult` of :func:`heterogeneity_test` over the ``"ok"``
        strata, or ``None`` with ``frame.attrs["heterogeneity_reason"]`` saying why.
    """
    name = choose("metric", metric, METRICS)
    spec = METRICS[name]
    level = check_level(level)
    min_n = check_positive_int("min_n", min_n, 1)
    unknown = set(metric_options) - set(_OPTION_NAMES)
    if unknown:
        bad = sorted(unknown)[0]
        choose("option", bad, _OPTION_NAMES)
    by_cols = [by] if isinstance(by, str) else list(by)
    rows: list[dict[str, Any]] = []
    results: list[_Result] = []
    groups: list[pd.DataFrame] = []
    for key, g in _groups(frame, by_cols):
        row: dict[str, Any] = dict(zip(by_cols, key, strict=True))
        row["metric"] = name
        blank = dict.fromkeys(("value", "ci_low", "ci_high", "se"))
        blank.update(level=level, method="")
        if len(g) < min_n:
            row.update(
                blank,
                n=len(g),
                status="insufficient_n",
                reason=f"insufficient n: {len(g)} < min_n = {min_n}",
            )
        else:
            try:
                res = _evaluate(g, spec, name, level, metric_options)
            except NotEstimableError as exc:
                row.update(blank, n=len(g), status="not_estimable", reason=str(exc))
            else:
                e = res.estimate
                row.update(
                    value=e.value,
                    ci_low=e.ci_low,
                    ci_high=e.ci_high,
                    level=e.level,
                    method=e.method,
                    se=e.se,
                    n=e.n,
                    status="ok",
                    reason="",
                )
                results.append(res)
                groups.append(g)
        rows.append(row)
    out = pd.DataFrame(rows)
    try:
        het = _heterogeneity(spec, results, groups, metric_options)
        out.attrs["heterogeneity"] = het
        out.attrs["heterogeneity_reason"] = ""
    except NotEstimableError as exc:
        out.attrs["heterogeneity"] = None
        out.attrs["heterogeneity_reason"] = str(exc)
    return out


def _heterogeneity(
    spec: _Metric, results: list[_Result], groups: list[pd.DataFrame], opts: dict[str, Any]
) -> TestResult:
    k = len(results)
    if k < 2:
        raise NotEstimableError(f"A heterogeneity test needs >= 2 estimable strata, found {k}.")
    if spec.kind == "auc":
        a = np.array([r.estimate.value for r in results])
        var = np.array([(r.estimate.se or 0.0) ** 2 for r in results])
        if (var <= 0).any():
            raise NotEstimableError("A stratum has zero AUC variance; the chi-square is undefined.")
        w = 1.0 / var
        pooled = float(np.sum(w * a) / np.sum(w))
        q = float(np.sum(w * (a - pooled) ** 2))
        return TestResult(
            q,
            float(sps.chi2.sf(q, k - 1)),
            None,
            "chi-square test of equal AUCs (independent strata, DeLong variances)",
            float(k - 1),
        )
    if spec.kind in ("binary", "proportion"):
        x = np.array([r.successes for r in results], dtype=float)
        n = np.array([r.trials for r in results], dtype=float)
        table = np.column_stack([x, n - x])
        if (table.sum(axis=0) == 0).any():
            raise NotEstimableError(
                "All strata have the same all-or-nothing proportion; the chi-square is undefined."
            )
        chi2, p, dof, _ = sps.chi2_contingency(table, correction=False)
        return TestResult(
            float(chi2),
            float(p),
            None,
            "Pearson chi-square test of homogeneity of proportions",
            float(dof),
        )
    col = opts.get("value", spec.default_value)
    samples = [g[col].to_numpy(dtype=float) for g in groups]
    if len(np.unique(np.concatenate(samples))) < 2:
        raise NotEstimableError("All values are identical; the Kruskal-Wallis test is undefined.")
    h, p = sps.kruskal(*samples)
    return TestResult(float(h), float(p), None, "Kruskal-Wallis H test", float(k - 1))


def heterogeneity_test(
    frame: pd.DataFrame,
    metric: str,
    *,
    by: str | Sequence[str],
    min_n: int = 1,
    **metric_options: Any,
) -> TestResult:
    """Test whether a metric differs across strata (see :func:`stratified`).

    Parameters
    ----------
    frame, metric, by, min_n, **metric_options
        As in :func:`stratified`; strata below ``min_n`` or not estimable are left out.

    Returns
    -------
    TestResult
        Chi-square (AUC, proportions) or Kruskal-Wallis H (means, medians) with ``df``.

    Raises
    ------
    NotEstimableError
        Fewer than two usable strata.
    """
    out = stratified(frame, metric, by=by, min_n=min_n, **metric_options)
    het: TestResult | None = out.attrs["heterogeneity"]
    if het is None:
        raise NotEstimableError(out.attrs["heterogeneity_reason"])
    return het


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values (family-wise error control).

    Parameters
    ----------
    p_values : sequence of float
        Unadjusted p-values in [0, 1].

    Returns
    -------
    numpy.ndarray
        Adjusted p-values in the input order (as R ``p.adjust(p, "holm")``).

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise StatisticsError("p_values must be a 1-D sequence of numbers in [0, 1] (no NaN).")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out
