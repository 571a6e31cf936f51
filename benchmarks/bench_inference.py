"""Benchmark of the inference runner: does reading overlap with compute?

One run, one thread budget, three measurements on the same synthetic cases:

(a) reading + preprocessing alone (``CaseProcessor.prepare``),
(b) the model alone (sliding-window forward passes) on the same cases already
    prepared as tensors,
(c) the end-to-end runner (``run_inference`` with the default
    ``InProcessExecutor``: reading overlapped with compute, plus resampling the
    mask back, writing DICOM SEG and hashing).

Prints cases/s for each, the ratio of (c)'s time to the slower of (a) and (b)
(1.0 = perfect overlap; the target is at most 1.25) and peak memory.

Usage::

    python benchmarks/bench_inference.py --cases 12 --threads 2
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--niceness",
        type=int,
        default=None,
        help="niceness of the runner's reader and writer threads in (c) "
        "(default: the executor's; 0 = same priority as the forward pass)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also rerun (c) under tracemalloc for the peak of Python allocations (slow)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from workbench.dicom.synth import generate_test_set
    from workbench.inference.demo_models import LesionNet, demo_input_spec
    from workbench.inference.executor import BACKGROUND_NICENESS, InProcessExecutor
    from workbench.inference.loading import load_model
    from workbench.inference.registry import ModelFormat, ModelSpec, ModelTask
    from workbench.inference.runner import CaseProcessor, cases_from_test_set, run_inference

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_inference_"))
    work.mkdir(parents=True, exist_ok=True)
    test_set = work / "test_set"
    if not (test_set / "dataset.json").exists():
        generate_test_set(test_set, n_cases=args.cases, seed=11, matrix=args.matrix)
    torch.manual_seed(0)
    spec = ModelSpec(
        name="bench-lesionnet",
        version="0",
        task=ModelTask.BOTH,
        format=ModelFormat.TORCHSCRIPT,
        input=demo_input_spec(),
        intended_use="benchmark",
    )
    voxel_ml = float(torch.tensor(spec.input.target_spacing).prod()) / 1000.0
    model_path = work / "bench.ts"
    torch.jit.save(torch.jit.script(LesionNet(voxel_ml).eval()), str(model_path))
    model = load_model(model_path, spec, "cpu")
    cases = cases_from_test_set(test_set)
    n = len(cases)
    processor = CaseProcessor(model, spec, work / "unused", model.device)

    # Warm-up outside the timings: the whole runner on one case, so that first-call
    # costs (lazy imports such as highdicom's, its IOD tables, first allocations)
    # fall on none of (a), (b) and (c).
    run_inference(cases[:1], model, spec, out_dir=work / "warm-up")

    t0 = time.perf_counter()
    prepared = [processor.prepare(c) for c in cases]
    t_read = time.perf_counter() - t0
    assert all(p.error is None for p in prepared), [p.error for p in prepared]
    rss_a = _peak_rss_mb()

    t0 = time.perf_counter()
    for p in prepared:
        processor._infer(p.data, time.perf_counter())  # type: ignore[arg-type]
    t_forward = time.perf_counter() - t0
    rss_b = _peak_rss_mb()
    del prepared

    niceness = BACKGROUND_NICENESS if args.niceness is None else args.niceness
    executor = InProcessExecutor(background_niceness=niceness)
    t0 = time.perf_counter()
    summary = run_inference(cases, model, spec, out_dir=work / "run", executor=executor)
    t_run = time.perf_counter() - t0
    assert summary.completed == n, [o.reason for o in summary.outputs if o.reason]
    rss_c = _peak_rss_mb()
    traced = ""
    if args.tracemalloc:
        tracemalloc.start()
        run_inference(cases, model, spec, out_dir=work / "run_traced")
        traced = f"; tracemalloc peak of (c): {tracemalloc.get_traced_memory()[1] / 2**20:.1f} MB"
        tracemalloc.stop()

    bottleneck = max(t_read, t_forward)
    print(
        f"cases: {n} ({args.matrix}x{args.matrix}, {work}), torch threads: {args.threads}, "
        f"reader/writer niceness: {niceness}"
    )
    print(f"(a) read + preprocess : {n / t_read:7.2f} cases/s  ({t_read:6.2f} s)")
    print(f"(b) forward only      : {n / t_forward:7.2f} cases/s  ({t_forward:6.2f} s)")
    print(f"(c) end-to-end runner : {n / t_run:7.2f} cases/s  ({t_run:6.2f} s)")
    print(f"ratio (c)/max(a,b) time: {t_run / bottleneck:.2f}  (target <= 1.25)")
    print(
        f"peak RSS: after (a) {rss_a:.0f} MB, after (b) {rss_b:.0f} MB, "
        f"after (c) {rss_c:.0f} MB{traced}"
    )


if __name__ == "__main__":
    main()
