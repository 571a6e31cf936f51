"""The workbench's one vocabulary of outcomes: verdicts, case statuses, estimate statuses.

Every layer (inference, protocol evaluation, records, reports, CLI, app) uses
these enums; their string values appear only where a result is stored or
shown. Older spellings found in stored records (``"PASS"``,
``"NOT_ESTIMABLE"``) are accepted by :meth:`Verdict.parse` so records written
by earlier releases still read.

This module imports nothing from the workbench, so every layer may import it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CaseStatus", "EstimateStatus", "Verdict"]


class Verdict(StrEnum):
    """Outcome of an acceptance criterion, an endpoint, a stratum or a whole run.

    ``PASS``
        The criterion holds.
    ``FAIL``
        The criterion does not hold.
    ``NOT_EVALUABLE``
        The criterion could not be evaluated (the estimate is not estimable, a
        judged stratum has no estimate...); always carries a reason. How it
        counts towards a run's verdict is stated in the protocol
        (``not_evaluable_counts_as``).
    ``NOT_ASSESSED``
        Strata only: estimated and reported, but not judged (n below the
        factor's min_n, or a report-only factor).
    """

    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    NOT_EVALUABLE = "not_evaluable"
    NOT_ASSESSED = "not_assessed"

    @property
    def label(self) -> str:
        """Upper-case words for terminals, pages and reports (``"NOT EVALUABLE"``)."""
        return self.value.replace("_", " ").upper()

    @classmethod
    def parse(cls, value: object) -> Verdict:
        """Convert a stored or user-given spelling; earlier releases' spellings included.

        Raises
        ------
        ValueError
            When ``value`` names no verdict.
        """
        if isinstance(value, Verdict):
            return value
        text = str(value).strip().lower().replace(" ", "_")
        text = _LEGACY_VERDICTS.get(text, text)
        try:
            return cls(text)
        except ValueError:
            allowed = ", ".join(repr(v.value) for v in cls)
            raise ValueError(f"Unknown verdict {value!r}; expected one of {allowed}.") from None


_LEGACY_VERDICTS = {"not_estimable": "not_evaluable"}


class CaseStatus(StrEnum):
    """Outcome of one case in a run: completed, failed (with a reason) or excluded."""

    COMPLETED = "completed"
    FAILED = "failed"
    EXCLUDED = "excluded"


class EstimateStatus(StrEnum):
    """Whether an estimate could be computed, and if not, why in one word."""

    OK = "ok"
    INSUFFICIENT_N = "insufficient_n"
    NOT_ESTIMABLE = "not_estimable"
