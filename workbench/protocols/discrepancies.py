"""Select the cases a protocol sends to clinical adjudication."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from workbench.errors import ProtocolError
from workbench.protocols.schema import Protocol, structure_column

__all__ = ["DiscrepancyCandidate", "Discrepancy", "find_discrepancies"]


@dataclass(frozen=True, slots=True)
class DiscrepancyCandidate:
    """A case that meets one of the protocol's discrepancy rules.

    Parameters
    ----------
    case_id : str
        The case.
    rule : str
        Id of the rule (from ``discrepancy_rules``).
    details : str
        What was found, e.g. ``"dice = 0.312 < 0.5"``. Never contains the
        model's identity, so that it can be shown to blinded reviewers.
    """

    case_id: str
    rule: str
    details: str


Discrepancy = DiscrepancyCandidate


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def find_discrepancies(protocol: Protocol, cases: pd.DataFrame) -> list[DiscrepancyCandidate]:
    """Apply the protocol's discrepancy rules to every case.

    Parameters
    ----------
    protocol : Protocol
        The protocol.
    cases : DataFrame
        One row per case with ``case_id``, ``status`` and the columns the rules
        use (``dice``, ``hd95``..., ``score``, ``y_true`` or the labels column;
        detection: ``n_missed``, ``n_lesions`` and ``max_nl_score``).

    Returns
    -------
    list of DiscrepancyCandidate
        Ordered by case id, then by rule order in the protocol. A case may be
        listed under several rules. Excluded cases are never listed;
        ``metric_threshold`` and ``decision_disagrees`` consider completed
        cases only (a missing per-case value meets a ``metric_threshold`` rule,
        since it means the metric could not be computed); ``case_failed``
        lists failed cases.

    Raises
    ------
    ProtocolError
        When the frame lacks a column a rule needs.
    """
    for col in ("case_id", "status"):
        if col not in cases.columns:
            raise ProtocolError(
                f"The cases frame lacks column {col!r} needed for discrepancy rules."
            )
    out: list[tuple[int, DiscrepancyCandidate]] = []
    status = cases["status"].astype(str).str.lower()
    completed = cases[status == "completed"]
    for order, rule in enumerate(protocol.discrepancy_rules):
        if rule.kind == "case_failed":
            for cid in cases.loc[status == "failed", "case_id"]:
                reason = ""
                if "reason" in cases.columns:
                    raw = cases.loc[cases["case_id"] == cid, "reason"].iloc[0]
                    reason = "" if pd.isna(raw) else f": {raw}"
                out.append(
                    (order, DiscrepancyCandidate(str(cid), rule.id, f"inference failed{reason}"))
                )
        elif rule.kind == "missed_lesion":
            if "n_missed" not in cases.columns:
                raise ProtocolError(
                    f"Discrepancy rule {rule.id!r} needs column 'n_missed' (the run's match "
                    f"counts); found columns {list(cases.columns)}."
                )
            for cid, raw, total in zip(
                completed["case_id"],
                completed["n_missed"],
                completed["n_lesions"] if "n_lesions" in completed else completed["n_missed"],
                strict=True,
            ):
                if pd.notna(raw) and int(raw) > 0:
                    detail = f"{int(raw)} of {int(total)} reference lesion(s) not localised"
                    out.append((order, DiscrepancyCandidate(str(cid), rule.id, detail)))
        elif rule.kind == "false_mark":
            if "max_nl_score" not in cases.columns:
                raise ProtocolError(
                    f"Discrepancy rule {rule.id!r} needs column 'max_nl_score' (the run's match "
                    f"counts); found columns {list(cases.columns)}."
                )
            for cid, raw in zip(completed["case_id"], completed["max_nl_score"], strict=True):
                if pd.notna(raw) and float(raw) >= rule.min_score:
                    detail = f"non-lesion mark scored {_fmt(float(raw))} >= {_fmt(rule.min_score)}"
                    out.append((order, DiscrepancyCandidate(str(cid), rule.id, detail)))
        elif rule.kind == "metric_threshold":
            column: str = rule.column
            scope = completed
            structure = protocol.structure_of(rule.structure) if rule.column != "score" else None
            if structure is not None:
                column = structure_column(structure, rule.column)
                excluded = structure_column(structure, "excluded")
                if excluded in completed.columns:  # the structure's reference is missing
                    why = completed[excluded]
                    scope = completed[why.isna() | (why.astype(str) == "")]
            if column not in cases.columns:
                raise ProtocolError(
                    f"Discrepancy rule {rule.id!r} needs column {column!r}; "
                    f"found columns {list(cases.columns)}."
                )
            for cid, raw in zip(scope["case_id"], scope[column], strict=True):
                value = float(raw) if pd.notna(raw) else math.nan
                if not math.isfinite(value):
                    detail = f"{column} could not be computed (missing)"
                elif rule.operator.holds(value, rule.threshold):
                    op = rule.operator.value
                    detail = f"{column} = {_fmt(value)} {op} {_fmt(rule.threshold)}"
                else:
                    continue
                out.append((order, DiscrepancyCandidate(str(cid), rule.id, detail)))
        else:  # decision_disagrees
            label: str | None = (
                "y_true" if "y_true" in cases.columns else protocol.reference_standard.labels_column
            )
            for needed in (label, "score"):
                if needed is None or needed not in cases.columns:
                    raise ProtocolError(
                        f"Discrepancy rule {rule.id!r} needs columns 'score' and 'y_true' "
                        f"(or {protocol.reference_standard.labels_column!r}); found "
                        f"{list(cases.columns)}."
                    )
            assert label is not None
            for cid, y, s in zip(
                completed["case_id"], completed[label], completed["score"], strict=True
            ):
                if pd.isna(s) or pd.isna(y):
                    continue
                decision = int(float(s) >= rule.operating_threshold)
                if decision != int(y):
                    said = "positive" if decision else "negative"
                    ref = "positive" if int(y) else "negative"
                    out.append(
                        (
                            order,
                            DiscrepancyCandidate(
                                str(cid),
                                rule.id,
                                f"model decision {said} (score {_fmt(float(s))} vs threshold "
                                f"{_fmt(rule.operating_threshold)}) disagrees with reference "
                                f"{ref}",
                            ),
                        )
                    )
    out.sort(key=lambda item: (item[1].case_id, item[0]))
    return [c for _, c in out]
