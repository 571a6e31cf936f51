"""The results page's decision-curve table: net benefit and interventions avoided per threshold."""

from __future__ import annotations

import numpy as np

from workbench.app._charts import decision_curve_table
from workbench.protocols.results import DecisionCurveSummary
from workbench.stats import net_benefit


def _summary(criterion_at: float | None) -> DecisionCurveSummary:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0.001, 0.999)
    grid = [round(0.05 + 0.01 * i, 2) for i in range(46)]
    curve = net_benefit(y, p, grid, ci="bootstrap", n_boot=200, seed=0)

    def col(name: str) -> tuple[float | None, ...]:
        return tuple(None if np.isnan(v) else float(v) for v in curve[name])

    return DecisionCurveSummary(
        thresholds=tuple(float(t) for t in curve["threshold"]),
        net_benefit=col("net_benefit"),
        net_benefit_low=col("net_benefit_ci_low"),
        net_benefit_high=col("net_benefit_ci_high"),
        treat_all=col("treat_all"),
        treat_all_low=col("treat_all_ci_low"),
        treat_all_high=col("treat_all_ci_high"),
        interventions_avoided=col("interventions_avoided"),
        interventions_avoided_low=col("interventions_avoided_ci_low"),
        interventions_avoided_high=col("interventions_avoided_ci_high"),
        prevalence=float(y.mean()),
        level=0.95,
        method="bootstrap",
        n=200,
        criterion_at=criterion_at,
    )


def test_table_rows_every_five_percent_and_the_judged_threshold() -> None:
    summary = _summary(criterion_at=0.23)
    table = decision_curve_table(summary)
    assert list(table["threshold"]) == [0.05, 0.1, 0.15, 0.2, 0.23, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert list(table.loc[table["judged here"] == "yes", "threshold"]) == [0.23]
    # The cells carry the curve's own values at that threshold.
    i = summary.thresholds.index(0.23)
    row = table[table["threshold"] == 0.23].iloc[0]
    assert row["model net benefit"].startswith(f"{summary.net_benefit[i]:.3f} [")
    assert row["interventions avoided per 100"].startswith(
        f"{summary.interventions_avoided[i]:.3f} ["
    )


def test_without_a_judged_threshold_no_row_is_marked() -> None:
    table = decision_curve_table(_summary(criterion_at=None))
    assert (table["judged here"] == "").all() and len(table) == 10
