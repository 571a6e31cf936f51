"""How numbers, intervals, verdicts and times are printed in a report.

Tests and the service layer use the same functions, so a number in the PDF
text can be compared with the number in :class:`~workbench.reports.ReportContent`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from workbench.reports.content import EstimateStatus, ReportEstimate, Verdict

__all__ = [
    "format_ci",
    "format_estimate",
    "format_level",
    "format_number",
    "format_p_value",
    "format_utc",
    "format_verdict",
    "format_with_interval",
]


def format_number(value: float, digits: int = 3) -> str:
    """Fixed-point with ``digits`` decimals; a rounded negative zero prints as zero."""
    text = f"{value:.{digits}f}"
    return "0." + "0" * digits if text == "-0." + "0" * digits else text


def format_with_interval(
    value: float | None, low: float | None, high: float | None, digits: int = 3
) -> str:
    """``value [low, high]``; the value alone where the interval is undefined.

    Parameters
    ----------
    value, low, high : float or None
        A value and its interval; ``None`` marks what is undefined.
    digits : int
        Decimals.

    Returns
    -------
    str
        ``"undefined"`` when ``value`` is None.
    """
    if value is None:
        return "undefined"
    if low is None or high is None:
        return format_number(value, digits)
    return (
        f"{format_number(value, digits)} [{format_number(low, digits)}, "
        f"{format_number(high, digits)}]"
    )


def format_level(level: float) -> str:
    """``0.95`` -> ``"95%"``."""
    percent = level * 100
    return f"{percent:.0f}%" if abs(percent - round(percent)) < 1e-9 else f"{percent:g}%"


def format_ci(estimate: ReportEstimate, digits: int = 3) -> str:
    """The interval as ``"0.812 to 0.901"``, or ``"—"`` when not estimated."""
    if not estimate.ok or estimate.ci_low is None or estimate.ci_high is None:
        return "\u2014"
    return f"{format_number(estimate.ci_low, digits)} to {format_number(estimate.ci_high, digits)}"


def format_estimate(estimate: ReportEstimate, digits: int = 3) -> str:
    """Point estimate, or the reason it is missing.

    ``insufficient_n`` prints as ``"insufficient n (n=7)"`` and
    ``not_estimable`` as ``"not estimable"``, never as a number or NaN.
    """
    if estimate.status is EstimateStatus.INSUFFICIENT_N:
        return f"insufficient n (n={estimate.n})"
    if estimate.status is EstimateStatus.NOT_ESTIMABLE or estimate.value is None:
        return "not estimable"
    return format_number(estimate.value, digits)


def format_p_value(p: float) -> str:
    """``p < 0.001`` below a thousandth, else three decimals."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def format_verdict(verdict: Verdict) -> str:
    """``PASS``, ``FAIL`` or ``NOT EVALUABLE``: readable without colour."""
    return verdict.value.replace("_", " ").upper()


def format_utc(moment: datetime | None) -> str:
    """``2025-03-14 09:30:00 UTC``; ``"—"`` for ``None``."""
    if moment is None:
        return "\u2014"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
