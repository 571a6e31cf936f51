"""Seeded simulation of reader ratings, for studies whose readers are simulated.

The demonstration needs a reader study that can be seen without people. Its
ratings come from the equal-variance binormal model of ROC analysis [1]_: for
reader ``r`` and case ``c`` with reference label ``t`` (0 or 1),

    latent = (d_r + shift * aided) * t + e,    e ~ N(0, 1),

where ``d_r`` is the reader's separation (``simulation.separation`` of the
design), ``shift`` is ``simulation.aided_shift`` and ``aided`` is 1 in an arm
that shows a model's output. A reader's expected continuous AUC is then
``Phi(d / sqrt(2))`` [1]_. The latent value becomes a rating on the design's
scale: a five-point rating by the fixed cut points ``0, 0.6, 1.2, 1.8``, or a
0-100 probability ``100 Phi(latent - d_mean / 2)`` rounded to one decimal.
Reading times are drawn log-normal with a median of 40 s per case (sigma 0.35
on the log scale). Everything is drawn from one generator seeded by the design's
seed, so the same design always gives the same ratings.

References
----------
.. [1] Metz CE. ROC methodology in radiologic imaging. Invest Radiol 21:720-733, 1986
   (binormal model; AUC = Phi(a / sqrt(1 + b^2)) with b = 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from workbench.errors import ProtocolError
from workbench.studies.design import RatingScale, ReaderStudyDesign

__all__ = ["FIVE_POINT_CUTS", "MEDIAN_READING_SECONDS", "simulate_ratings"]

#: Cut points of the latent value between five-point ratings 1|2, 2|3, 3|4 and 4|5.
FIVE_POINT_CUTS = (0.0, 0.6, 1.2, 1.8)

#: Median simulated reading time per case, in seconds.
MEDIAN_READING_SECONDS = 40.0


def simulate_ratings(
    truth: pd.Series, design: ReaderStudyDesign, *, seed: int | None = None
) -> pd.DataFrame:
    """Simulate every reader's rating of every case in every arm of a simulated study.

    Parameters
    ----------
    truth : Series
        0/1 reference label indexed by ``case_id``.
    design : ReaderStudyDesign
        A design with a ``simulation`` section (one separation per reader).
    seed : int, optional
        Overrides the design's seed.

    Returns
    -------
    DataFrame
        One row per (reader, arm, case): ``reader``, ``arm``, ``case_id``, ``rating``
        (on the design's scale) and ``seconds`` (simulated reading time).

    Raises
    ------
    ProtocolError
        The design has no ``simulation`` section, or a label is not 0 or 1.
    """
    spec = design.simulation
    if spec is None:
        raise ProtocolError(
            f"Reader study {design.id}: ratings are simulated only for a design with a "
            "'simulation' section; found none."
        )
    labels = pd.to_numeric(truth, errors="coerce")
    bad = [str(k) for k, v in labels.items() if v not in (0, 1)]
    if bad:
        raise ProtocolError(f"Reference labels must be 0 or 1; found others for cases {bad[:5]}.")
    case_ids = [str(c) for c in labels.index]
    t = labels.to_numpy(dtype=float)
    rng = np.random.default_rng(design.seed if seed is None else seed)
    mean_separation = float(np.mean(spec.separation))
    rows = []
    for reader, separation in zip(design.readers, spec.separation, strict=True):
        for arm in design.arms:
            shift = spec.aided_shift if arm.model is not None else 0.0
            latent = (separation + shift) * t + rng.standard_normal(len(t))
            seconds = np.exp(rng.normal(np.log(MEDIAN_READING_SECONDS), 0.35, len(t)))
            if design.rating_scale is RatingScale.FIVE_POINT:
                ratings = 1.0 + np.searchsorted(FIVE_POINT_CUTS, latent, side="right")
            else:
                ratings = np.round(100.0 * sps.norm.cdf(latent - mean_separation / 2), 1)
            rows += [
                {
                    "reader": reader,
                    "arm": arm.id,
                    "case_id": case,
                    "rating": float(r),
                    "seconds": round(float(s), 1),
                }
                for case, r, s in zip(case_ids, ratings, seconds, strict=True)
            ]
    return pd.DataFrame(rows, columns=["reader", "arm", "case_id", "rating", "seconds"])
