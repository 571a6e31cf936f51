"""Benchmarks of the statistics engine, each as a ratio to a baseline timed in the same run.

Run: ``python benchmarks/bench_stats.py`` (about a minute on two cores).

(a) AUC with DeLong CI, n = 1,000,000, vs ``sklearn.metrics.roc_auc_score`` alone
    (target: at most 2x its time).
(b) 2,000-replicate clustered bootstrap CI of the AUC, n = 10,000 cases in 5,000
    patients, vs a loop calling ``roc_auc_score`` on each materialised resample
    (target: at least 20x faster).
(c) HD95 on 256 x 256 x 128 masks with anisotropic spacing vs
    ``monai.metrics.compute_hausdorff_distance`` (target: not slower).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from sklearn.metrics import roc_auc_score

from workbench.stats import auc, hausdorff_distance


def best_of(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Smallest wall time over ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def report(name: str, ours: float, base: float, target: str) -> None:
    print(
        f"{name}\n  ours {ours:8.3f} s   baseline {base:8.3f} s   ratio ours/baseline "
        f"{ours / base:6.3f}  (speed-up {base / ours:6.1f}x)   target: {target}"
    )


def bench_delong() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + 0.8 * y
    base, ref = best_of(lambda: roc_auc_score(y, s))
    ours, est = best_of(lambda: auc(y, s, ci="delong"))
    assert abs(est.value - ref) < 1e-9  # type: ignore[union-attr]
    report("(a) AUC + DeLong CI, n=1e6 vs roc_auc_score", ours, base, "ratio <= 2")


def bench_bootstrap() -> None:
    rng = np.random.default_rng(1)
    n, n_boot = 10_000, 2000
    patients = np.arange(n) // 2
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + 0.8 * y
    n_pat = int(patients.max()) + 1

    def loop() -> tuple[float, float]:
        r = np.random.default_rng(0)
        reps = []
        for _ in range(n_boot):
            drawn = np.bincount(r.integers(0, n_pat, n_pat), minlength=n_pat)
            idx = np.repeat(np.arange(n), drawn[patients])  # materialised cluster resample
            reps.append(roc_auc_score(y[idx], s[idx]))
        lo, hi = np.quantile(reps, [0.025, 0.975])
        return float(lo), float(hi)

    base, (lo_b, hi_b) = best_of(loop, repeats=1)  # type: ignore[misc]
    ours, est = best_of(
        lambda: auc(y, s, ci="bootstrap", clusters=patients, n_boot=n_boot), repeats=3
    )
    print(f"  loop CI ({lo_b:.4f}, {hi_b:.4f}); ours ({est.ci_low:.4f}, {est.ci_high:.4f})")  # type: ignore[union-attr]
    report(
        "(b) clustered bootstrap AUC CI, 2000 reps, n=1e4 vs roc_auc_score loop",
        ours,
        base,
        "speed-up >= 20x",
    )


def bench_hd95() -> None:
    z, yy, x = np.ogrid[:256, :256, :128]
    ref = ((z - 128) ** 2 / 60**2 + (yy - 120) ** 2 / 70**2 + (x - 64) ** 2 / 30**2) < 1
    pred = ((z - 124) ** 2 / 58**2 + (yy - 126) ** 2 / 72**2 + (x - 66) ** 2 / 28**2) < 1
    spacing = (0.8, 0.8, 2.5)
    tp = torch.from_numpy(pred[None, None].astype(np.float32))
    tr = torch.from_numpy(ref[None, None].astype(np.float32))
    base, ref_val = best_of(
        lambda: compute_hausdorff_distance(tp, tr, percentile=95, spacing=list(spacing))
    )
    ours, val = best_of(lambda: hausdorff_distance(pred, ref, spacing=spacing, percentile=95))
    assert abs(float(val) - float(ref_val)) < 1e-4  # type: ignore[arg-type]
    report("(c) HD95 256x256x128 vs monai compute_hausdorff_distance", ours, base, "ratio <= 1")


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)
    bench_delong()
    bench_bootstrap()
    bench_hd95()
