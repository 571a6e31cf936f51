"""Benchmark of the Ray executor: overhead against the local executor, and scaling.

(a) Overhead. The demo segmentation model (``LesionNet`` with the demo's input
    spec) over synthetic cases, once with the local executor (``InProcessExecutor``,
    ``--threads`` torch threads) and once on Ray with ``--threads`` CPU workers of
    one thread each: the same run, the same thread budget. Prints both times and
    their ratio (target at most 1.15). The Ray time is given twice: "cold"
    includes starting the workers and loading the model on each (and how long the
    workers took to be ready); "warm" is a later run on the same executor, whose
    workers are already up (what every later run of a long-lived driver pays).
    Local and warm Ray runs alternate ``--repeat`` times and the medians are
    compared, so that the load of a shared machine falls on both; the CPU seconds
    of this process tree (the driver, the local Ray instance and its workers, from
    /proc) are given beside the wall times, a figure that other users' load does
    not change.
(b) Scaling. A model whose forward pass waits ``--wait`` seconds per case (a
    stand-in for a GPU: the worker is busy, the CPU is not) on 1, 2, 4 and 8
    actors; throughput relative to one actor (target at least 0.85 x actors).
    Workers are warmed up before each timing.

Both parts start a private local Ray instance (``ray.init(num_cpus=8)``) unless
``--address`` names a cluster.

Usage::

    python benchmarks/bench_ray.py --threads 2            # (a) on the demo's 60 cases
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench.inference import runner as runner_module
from workbench.inference.runner import CaseProcessor

WAIT_S = 1.0


class WaitingProcessor(CaseProcessor):
    """The runner's processor whose forward pass first waits a fixed time."""

    def _infer(self, data: Any, started: float) -> Any:
        time.sleep(WAIT_S)
        return super()._infer(data, started)


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and all its descendants that still run
    (with a local Ray instance: its GCS, raylet, workers), from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    total, stack = 0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


def _timed(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall and CPU seconds (this process tree) of ``run()``, and what it returned."""
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    value = run()
    return time.perf_counter() - t0, _cpu_seconds() - cpu0, value


def _overhead(args: argparse.Namespace, work: Path) -> None:
    from workbench.dicom.synth import generate_test_set
    from workbench.inference.demo_models import LesionNet, demo_input_spec
    from workbench.inference.loading import load_model
    from workbench.inference.ray_executor import RayExecutor
    from workbench.inference.registry import ModelFormat, ModelSpec, ModelTask
    from workbench.inference.runner import cases_from_test_set, run_inference

    test_set = work / "demo_set"
    if not (test_set / "dataset.json").exists():
        generate_test_set(test_set, n_cases=args.cases, seed=11, matrix=args.matrix)
    spec = ModelSpec(
        name="bench-lesionnet",
        version="0",
        task=ModelTask.BOTH,
        format=ModelFormat.TORCHSCRIPT,
        input=demo_input_spec(),
        intended_use="benchmark",
    )
    torch.manual_seed(0)
    voxel_ml = float(torch.tensor(spec.input.target_spacing).prod()) / 1000.0
    model_path = work / "bench.ts"
    torch.jit.save(torch.jit.script(LesionNet(voxel_ml).eval()), str(model_path))
    model = load_model(model_path, spec, "cpu")
    cases = cases_from_test_set(test_set)
    n = len(cases)
    run_inference(cases[:1], model, spec, out_dir=work / "warm-up")  # first-call costs
    runs = iter(range(10_000))

    def local() -> Any:
        torch.set_num_threads(args.threads)
        try:
            return run_inference(cases, model, spec, out_dir=work / f"local-{next(runs)}")
        finally:
            torch.set_num_threads(1)

    executor = RayExecutor(num_workers=args.threads, threads_per_worker=1, keep_workers=True)

    def on_ray() -> Any:
        return run_inference(
            cases, model, spec, out_dir=work / f"ray-{next(runs)}", executor=executor
        )

    torch.set_num_threads(1)
    t_cold, cpu_cold, cold = _timed(on_ray)
    ready = max(w["ready_after_s"] for w in executor.workers_info)
    # Local and Ray runs alternate, so that the load of a shared machine falls on both.
    pairs: list[tuple[float, float, float, float]] = []
    for _ in range(args.repeat):
        t_local, cpu_local, summary_local = _timed(local)
        t_ray, cpu_ray, summary_ray = _timed(on_ray)
        for summary in (summary_local, summary_ray):
            assert summary.completed == n, [o.reason for o in summary.outputs if o.reason]
        pairs.append((t_local, t_ray, cpu_local, cpu_ray))
    executor.close()
    assert cold.completed == n, [o.reason for o in cold.outputs if o.reason]
    t_local = statistics.median(p[0] for p in pairs)
    t_warm = statistics.median(p[1] for p in pairs)
    cpu_local = statistics.median(p[2] for p in pairs)
    cpu_warm = statistics.median(p[3] for p in pairs)
    print(
        f"(a) demo segmentation, {n} cases ({args.matrix}x{args.matrix}), thread budget "
        f"{args.threads}; {args.repeat} alternating local/Ray pairs, medians"
    )
    print(
        f"    local executor ({args.threads} torch threads) : {t_local:7.2f} s wall, "
        f"{cpu_local:6.1f} CPU s   (baseline)"
    )
    print(
        f"    Ray, {args.threads} workers x 1 thread, warm  : {t_warm:7.2f} s wall, "
        f"{cpu_warm:6.1f} CPU s"
    )
    print(
        f"    Ray, {args.threads} workers x 1 thread, cold  : {t_cold:7.2f} s wall, "
        f"{cpu_cold:6.1f} CPU s (workers ready after {ready:.2f} s: process start, "
        "imports, model load and hash)"
    )
    print(
        "    pairs Ray/local (wall): "
        + ", ".join(f"{t_ray / t_loc:.2f}" for t_loc, t_ray, _, _ in pairs)
    )
    print(
        f"    ratio Ray/local: warm {t_warm / t_local:.2f} (CPU {cpu_warm / cpu_local:.2f}), "
        f"cold {t_cold / t_local:.2f}; cold less worker start "
        f"{(t_cold - ready) / t_local:.2f}  (target <= 1.15)"
    )


def _scaling(args: argparse.Namespace, work: Path) -> None:
    from workbench.dicom.synth import generate_test_set
    from workbench.inference.demo_models import demo_input_spec
    from workbench.inference.loading import load_model
    from workbench.inference.ray_executor import RayExecutor
    from workbench.inference.registry import ModelFormat, ModelSpec, ModelTask
    from workbench.inference.runner import cases_from_test_set, run_inference

    global WAIT_S
    WAIT_S = args.wait
    test_set = work / "small_set"
    if not (test_set / "dataset.json").exists():
        generate_test_set(
            test_set, n_cases=args.scaling_cases, seed=5, matrix=64, slices=(8, 8), workers=1
        )

    class MeanScore(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=[1, 2, 3, 4]).unsqueeze(1)

    # Classification only: besides the wait, a case costs reading and resizing its
    # series, so that the timings show the executor rather than this machine's CPUs.
    spec = ModelSpec(
        name="bench-waiting",
        version="0",
        task=ModelTask.CLASSIFICATION,
        format=ModelFormat.TORCHSCRIPT,
        input=demo_input_spec().model_copy(
            update={"roi_size": (32, 32, 16), "segmentation_output": None}
        ),
        intended_use="benchmark",
    )
    model_path = work / "waiting.ts"
    torch.jit.save(torch.jit.script(MeanScore()), str(model_path))
    model = load_model(model_path, spec, "cpu")
    cases = cases_from_test_set(test_set)
    runner_module.CaseProcessor = WaitingProcessor  # type: ignore[misc]
    rates: dict[int, float] = {}
    end_to_end: dict[int, float] = {}
    print(f"(b) scaling: {len(cases)} cases, forward waits {WAIT_S:g} s per case")
    print(
        "    end-to-end includes the start of each run (every worker loads and verifies the "
        "model);\n    'running' leaves it out: the time to the first case less one wait"
    )
    for actors in (1, 2, 4, 8):
        executor = RayExecutor(
            num_workers=actors, threads_per_worker=1, cpus_per_worker=0.25, keep_workers=True
        )
        run_inference(cases[:actors], model, spec, out_dir=work / f"w{actors}", executor=executor)
        first: list[float] = []

        def stamp(_output: Any, first: list[float] = first) -> None:
            if not first:
                first.append(time.perf_counter())

        t0 = time.perf_counter()
        summary = run_inference(
            cases, model, spec, out_dir=work / f"s{actors}", executor=executor, on_case=stamp
        )
        elapsed = time.perf_counter() - t0
        executor.close()
        assert summary.completed == len(cases), [o.reason for o in summary.outputs if o.reason]
        start = max(0.0, first[0] - t0 - WAIT_S)
        rates[actors] = len(cases) / (elapsed - start)
        end_to_end[actors] = len(cases) / elapsed
        relative = rates[actors] / rates[1]
        relative_e2e = end_to_end[actors] / end_to_end[1]
        print(
            f"    {actors} actor(s): running {rates[actors]:5.2f} cases/s = "
            f"{relative / actors:.2f} x actors; end-to-end {end_to_end[actors]:5.2f} cases/s "
            f"({elapsed:5.2f} s, start {start:4.2f} s) = {relative_e2e / actors:.2f} x actors"
        )
    print("    (target >= 0.85 x actors)")
    runner_module.CaseProcessor = CaseProcessor  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60, help="cases of (a) (the demo run has 60)")
    parser.add_argument("--matrix", type=int, default=256, help="in-plane size of (a)'s cases")
    parser.add_argument("--threads", type=int, default=2, help="thread budget of (a)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating local/Ray pairs of (a)")
    parser.add_argument("--scaling-cases", type=int, default=48, help="cases of (b)")
    parser.add_argument("--wait", type=float, default=WAIT_S, help="seconds per forward in (b)")
    parser.add_argument("--address", default=None, help="Ray cluster (default: a local one)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", choices=("a", "b"), default=None)
    args = parser.parse_args()

    import ray

    if args.address:
        ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(
            num_cpus=8,
            num_gpus=0,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ray_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"Ray {ray.__version__}, cluster CPUs {ray.cluster_resources().get('CPU', 0):g}, {work}")
    try:
        if args.only in (None, "a"):
            _overhead(args, work)
        if args.only in (None, "b"):
            _scaling(args, work)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
