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
]


def format_number(value: float, digits: int = 3) -> str:
    """Fixed-point with ``digits`` decimals; a rounded negative zero prints as zero."""
    text = f"{value:.{digits}f}"
    return "0." + "0" * digits if text == "-0." + "0" * digits else text


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
