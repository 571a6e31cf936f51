"""Resolve a protocol's operating-point rule on its tuning set to a locked threshold.

A protocol may lock its operating threshold as a rule applied to a tuning set
that is not the test set, e.g. ``{rule: sensitivity_at_least, value: 0.90,
tuning_set: {path: tuning.csv, sha256: ...}}``. The tuning CSV (columns
``y_true`` and ``score``) is stored with the protocol and pinned by its SHA-256;
:func:`resolve_operating_point` checks the hash, applies the rule and returns the
protocol with the threshold fixed, so that the run evaluates every threshold
endpoint at one pre-registered number. Choosing the threshold on the test set
itself would bias every threshold metric upwards [1]_.

References
----------
.. [1] Leeflang MMG, Moons KGM, Reitsma JB, Zwinderman AH. Bias in sensitivity and
   specificity caused by data-driven selection of optimal cutoff values. Clin Chem
   54:729-737, 2008.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.errors import ProtocolError
from workbench.naming import resolve_inside
from workbench.protocols.schema import OperatingPointRule, Protocol

__all__ = ["ResolvedOperatingPoint", "choose_threshold", "resolve_operating_point"]

#: Largest tuning CSV accepted.
MAX_TUNING_BYTES = 50 << 20


@dataclass(frozen=True, slots=True)
class ResolvedOperatingPoint:
    """A threshold chosen by a rule on a tuning set, with what it achieved there.

    Parameters
    ----------
    threshold : float
        Scores ``>= threshold`` are called positive.
    rule : str
        The rule (``sensitivity_at_least``...).
    value : float or None
        The rule's target (None for ``youden``).
    n, n_positive : int
        Tuning cases and positives among them.
    sensitivity, specificity : float
        Reached on the tuning set at ``threshold``.
    """

    threshold: float
    rule: str
    value: float | None
    n: int
    n_positive: int
    sensitivity: float
    specificity: float


def choose_threshold(
    y_true: np.ndarray, score: np.ndarray, rule: OperatingPointRule | str, value: float | None
) -> ResolvedOperatingPoint:
    """Apply an operating-point rule to tuning labels and scores.

    Parameters
    ----------
    y_true : ndarray of shape (n,)
        0/1 labels of the tuning cases (both classes present).
    score : ndarray of shape (n,)
        Model scores; ``score >= t`` is a positive call.
    rule : OperatingPointRule or str
        See :class:`~workbench.protocols.schema.OperatingPointRule`.
    value : float or None
        The rule's target rate (None for ``youden``).

    Returns
    -------
    ResolvedOperatingPoint

    Raises
    ------
    ProtocolError
        When a class is missing or no candidate threshold meets the rule.
    """
    rule = OperatingPointRule(rule)
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(score, dtype=float)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ProtocolError(
            f"The tuning set needs positive and negative cases; found {n_pos} positive and "
            f"{n_neg} negative."
        )
    candidates = np.unique(s)
    called = s[None, :] >= candidates[:, None]
    sens = (called & (y == 1)).sum(axis=1) / n_pos
    spec = (~called & (y == 0)).sum(axis=1) / n_neg
    if rule is OperatingPointRule.YOUDEN:
        j = sens + spec - 1.0
        index = int(np.flatnonzero(j == j.max())[-1])
    else:
        assert value is not None
        ok = sens >= value - 1e-12 if rule is OperatingPointRule.SENSITIVITY_AT_LEAST else None
        if rule is OperatingPointRule.SPECIFICITY_AT_LEAST:
            ok = spec >= value - 1e-12
        assert ok is not None
        hits = np.flatnonzero(ok)
        if not len(hits):
            raise ProtocolError(
                f"No threshold on the tuning set reaches {rule.value} {value:g}; expected a "
                "reachable target rate."
            )
        # sensitivity falls as the threshold rises: take the highest threshold that keeps it;
        # specificity rises with the threshold: take the lowest that reaches it
        index = int(hits[-1] if rule is OperatingPointRule.SENSITIVITY_AT_LEAST else hits[0])
    return ResolvedOperatingPoint(
        threshold=float(candidates[index]),
        rule=rule.value,
        value=value,
        n=len(y),
        n_positive=n_pos,
        sensitivity=float(sens[index]),
        specificity=float(spec[index]),
    )


def _read_tuning(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        frame = pd.read_csv(io.BytesIO(raw))
    except (ValueError, pd.errors.ParserError) as exc:
        raise ProtocolError(f"Tuning set {name}: not a readable CSV ({exc}).") from None
    missing = [c for c in ("y_true", "score") if c not in frame.columns]
    if missing:
        raise ProtocolError(
            f"Tuning set {name} lacks column(s) {missing}; expected columns y_true and score, "
            f"found {list(frame.columns)}."
        )
    y = pd.to_numeric(frame["y_true"], errors="coerce")
    s = pd.to_numeric(frame["score"], errors="coerce")
    bad = ~(y.isin([0, 1]) & np.isfinite(s))
    if bad.any():
        rows = [int(i) + 2 for i in np.flatnonzero(bad.to_numpy())[:5]]
        raise ProtocolError(
            f"Tuning set {name}: line(s) {rows} need y_true 0 or 1 and a finite score."
        )
    return y.to_numpy(dtype=int), s.to_numpy(dtype=float)


def resolve_operating_point(
    protocol: Protocol,
    *,
    base_dir: str | Path | None = None,
    tuning_bytes: bytes | None = None,
) -> tuple[Protocol, ResolvedOperatingPoint | None]:
    """Fix the threshold of a protocol whose operating point is a rule on a tuning set.

    Parameters
    ----------
    protocol : Protocol
        A loaded protocol.
    base_dir : str or Path, optional
        Folder of the protocol file; the tuning set's ``path`` is resolved inside it.
    tuning_bytes : bytes, optional
        The tuning CSV's bytes as stored with the protocol (instead of ``base_dir``).

    Returns
    -------
    (Protocol, ResolvedOperatingPoint or None)
        A copy of the protocol whose :meth:`~Protocol.threshold_of` gives the
        resolved threshold (same SHA-256 and text), and the resolution; the
        protocol itself and None when its operating point is a number or absent.

    Raises
    ------
    ProtocolError
        When the CSV cannot be found or read, its SHA-256 differs from the
        protocol's, or the rule cannot be met.
    """
    op = protocol.operating_point
    if op is None or not op.is_rule:
        return protocol, None
    assert op.tuning_set is not None and op.rule is not None
    name = op.tuning_set.path
    if tuning_bytes is None:
        if base_dir is None:
            raise ProtocolError(
                f"The protocol's operating point is a rule on tuning set {name}; pass the "
                "protocol file's folder (base_dir) or the CSV's bytes to resolve it."
            )
        path = resolve_inside(Path(base_dir), *name.split("/"), what="tuning set path")
        try:
            if path.stat().st_size > MAX_TUNING_BYTES:
                raise ProtocolError(
                    f"Tuning set {name} is {path.stat().st_size:,} bytes; expected at most "
                    f"{MAX_TUNING_BYTES:,}."
                )
            tuning_bytes = path.read_bytes()
        except OSError as exc:
            raise ProtocolError(
                f"Cannot read tuning set {name} next to the protocol ({exc.strerror or exc}); "
                "store the CSV with the protocol file."
            ) from None
    found = hashlib.sha256(tuning_bytes).hexdigest()
    if found != op.tuning_set.sha256:
        raise ProtocolError(
            f"Tuning set {name} has SHA-256 {found}; the protocol pins {op.tuning_set.sha256}. "
            "Use the CSV the protocol was written for, or a new protocol version."
        )
    y, s = _read_tuning(tuning_bytes, name)
    resolved = choose_threshold(y, s, op.rule, op.value)
    copy = protocol.model_copy()
    copy._resolved_threshold = resolved.threshold
    return copy, resolved
