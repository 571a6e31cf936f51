"""Result types and input validation shared by every statistic."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from workbench.errors import NotEstimableError, StatisticsError

__all__ = ["Estimate", "TestResult"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its confidence interval.

    Parameters
    ----------
    value : float
        The point estimate.
    ci_low, ci_high : float
        Lower and upper confidence limits.
    level : float
        Confidence level of the interval, e.g. 0.95.
    method : str
        How the interval was computed (e.g. ``"delong"``, ``"wilson"``).
    n : int
        Number of observations (cases, subjects or pairs) behind the estimate.
    se : float or None
        Standard error, where the method provides one.
    """

    value: float
    ci_low: float
    ci_high: float
    level: float
    method: str
    n: int
    se: float | None = None

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """Return the fields as a flat ``dict`` (keys optionally prefixed)."""
        return {
            f"{prefix}value": self.value,
            f"{prefix}ci_low": self.ci_low,
            f"{prefix}ci_high": self.ci_high,
            f"{prefix}level": self.level,
            f"{prefix}method": self.method,
            f"{prefix}n": self.n,
            f"{prefix}se": self.se,
        }


@dataclass(frozen=True, slots=True)
class TestResult:
    """Result of a hypothesis test.

    Parameters
    ----------
    statistic : float
        The test statistic (z, chi-square, F or H, see ``method``).
    p_value : float
        Two-sided p-value.
    difference : Estimate or None
        The estimated difference with its CI, for tests of a difference.
    method : str
        Name of the test.
    df : float or None
        Degrees of freedom of the reference distribution, where it has one.
    """

    __test__ = False  # not a pytest test class

    statistic: float
    p_value: float
    difference: Estimate | None = None
    method: str = ""
    df: float | None = None


def choose(name: str, value: object, options: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``options``, else raise with a did-you-mean hint."""
    options = tuple(options)
    text = str(getattr(value, "value", value))
    if text in options:
        return text
    close = difflib.get_close_matches(text.lower(), options, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise StatisticsError(
        f"Unknown {name} {text!r}: expected one of {', '.join(map(repr, options))}.{hint}"
    )


def check_level(level: float) -> float:
    """Validate a confidence level in (0, 1)."""
    lv = float(level)
    if not 0.0 < lv < 1.0:
        raise StatisticsError(
            f"Confidence level must lie strictly between 0 and 1, found {level!r}."
        )
    return lv


def z_crit(level: float) -> float:
    """Two-sided standard normal critical value for ``level``."""
    return float(sps.norm.ppf(0.5 + check_level(level) / 2.0))


def as_binary(y_true: ArrayLike, name: str = "y_true") -> NDArray[np.int8]:
    """Validate a ground-truth vector of {0, 1} or bool and return it as int8."""
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise StatisticsError(f"{name} must be one-dimensional, found shape {arr.shape}.")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.dtype.kind not in "iuf":
        raise StatisticsError(
            f"{name} must be binary (0/1 or bool), found dtype {arr.dtype}. "
            "Map the labels to 0 (negative) and 1 (positive) first."
        )
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise StatisticsError(f"{name} contains {int(np.isnan(arr).sum())} NaN value(s).")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        found = np.unique(arr[bad])[:5].tolist()
        raise StatisticsError(f"{name} must contain only 0 and 1, found {found}.")
    return arr.astype(np.int8)


def as_scores(y_score: ArrayLike, name: str = "y_score") -> NDArray[np.float64]:
    """Validate a one-dimensional finite numeric vector."""
    arr = np.asarray(y_score)
    if arr.ndim != 1:
        raise StatisticsError(f"{name} must be one-dimensional, found shape {arr.shape}.")
    if arr.dtype.kind not in "biuf":
        raise StatisticsError(f"{name} must be numeric, found dtype {arr.dtype}.")
    arr = arr.astype(np.float64, copy=False)
    nan = np.isnan(arr)
    if nan.any():
        raise StatisticsError(
            f"{name} contains {int(nan.sum())} NaN value(s); remove or impute them first."
        )
    if np.isinf(arr).any():
        raise StatisticsError(f"{name} contains infinite value(s).")
    return arr


def same_length(**arrays: Any) -> int:
    """Check that all arrays have the same length and return it."""
    lengths = {k: len(v) for k, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise StatisticsError(f"Inputs must have equal lengths, found {desc}.")
    return next(iter(lengths.values()))


def as_clusters(clusters: ArrayLike | None, n: int) -> NDArray[np.intp] | None:
    """Return cluster labels as integer codes 0..C-1, or None."""
    if clusters is None:
        return None
    arr = np.asarray(clusters)
    if arr.ndim != 1 or len(arr) != n:
        raise StatisticsError(
            f"clusters must be one-dimensional with one label per case ({n}), found shape "
            f"{arr.shape}."
        )
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise StatisticsError("clusters contains NaN; every case needs a cluster (patient) label.")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.intp).reshape(-1)


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """Validate an integer option."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise StatisticsError(f"{name} must be an integer >= {minimum}, found {value!r}.")
    return int(value)


def need_both_classes(y: NDArray[np.int8], what: str = "AUC") -> tuple[int, int]:
    """Return (positives, negatives); raise NotEstimableError when a class is missing."""
    m = int(y.sum())
    n = int(len(y) - m)
    if m == 0 or n == 0:
        raise NotEstimableError(
            f"{what} needs at least one positive and one negative case, found {m} positive "
            f"and {n} negative."
        )
    return m, n


def clip01(x: float) -> float:
    """Clip to [0, 1] (floating noise at the bounds)."""
    return float(min(1.0, max(0.0, x)))


def finite_or_raise(x: float, what: str) -> float:
    """Raise NotEstimableError instead of returning NaN."""
    if not math.isfinite(x):
        raise NotEstimableError(f"{what} is not estimable for these data (found {x}).")
    return float(x)
