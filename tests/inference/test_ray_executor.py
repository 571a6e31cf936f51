"""The Ray executor on a real local cluster: identical results, lost workers, accounting.

The cluster tests need ``ray`` and ``$WORKBENCH_TEST_RAY_ADDRESS`` (``scripts/test.sh``
starts a two-CPU head with ``scripts/ray_test_cluster.sh`` and sets it); they are
skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from inference_fixtures import ThresholdNet, save_scripted, tiny_spec

from workbench.errors import InferenceError
from workbench.inference import runner as runner_module
from workbench.inference.demo_models import LesionNet, demo_input_spec
from workbench.inference.executor import make_executor
from workbench.inference.loading import load_model
from workbench.inference.ray_executor import RayExecutor, RayStorage, ray_available
from workbench.inference.registry import ModelFormat, ModelSpec, ModelTask
from workbench.inference.runner import (
    CaseOutput,
    CaseProcessor,
    CaseStatus,
    cases_from_test_set,
    run_inference,
)

_MALFORMED = str(Path(__file__).resolve().parents[1] / "malformed")
if _MALFORMED not in sys.path:
    sys.path.insert(0, _MALFORMED)

import harness  # noqa: E402

ADDRESS = os.environ.get("WORKBENCH_TEST_RAY_ADDRESS")
if ADDRESS and ADDRESS.rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
    # The test cluster listens on loopback only (scripts/ray_test_cluster.sh). A Ray client
    # keeps a loopback address only with this setting, read when ray is first imported
    # (below, by ray_available); the CLI's subprocesses inherit it.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
needs_cluster = pytest.mark.skipif(
    not ray_available() or not ADDRESS,
    reason="needs the 'ray' package and a cluster address in WORKBENCH_TEST_RAY_ADDRESS "
    "(scripts/test.sh starts one with scripts/ray_test_cluster.sh)",
)
needs_ray = pytest.mark.skipif(not ray_available(), reason="needs the 'ray' package")

#: Seconds the slow processor waits in each forward pass, so that a kill lands mid-case.
SLOW_FORWARD_S = 2.0


class SlowProcessor(CaseProcessor):
    """The runner's processor with a forward pass that first waits (a stand-in for a GPU)."""

    def _infer(self, data: Any, started: float) -> Any:
        time.sleep(SLOW_FORWARD_S)
        return super()._infer(data, started)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """This process connected to the test cluster; the slow processor travels by value."""
    import ray
    import ray.cloudpickle

    ray.init(address=ADDRESS, logging_level=logging.WARNING, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(cluster: Any) -> Iterator[RayExecutor]:
    """One executor for the module: its workers start once and serve every run."""
    made = RayExecutor(threads_per_worker=1, max_retries=2, keep_workers=True)
    yield made
    made.close()


def _key(output: CaseOutput) -> tuple[Any, ...]:
    return (
        output.case_id,
        output.status,
        output.reason,
        output.score,
        output.mask_sha256,
        output.seg_sha256,
        output.mask_voxels,
    )


def _demo_model(folder: Path) -> tuple[Path, ModelSpec]:
    """The demo's network (seeded weights) with the demo's input spec."""
    spec = ModelSpec(
        name="demo-lesionnet",
        version="test",
        task=ModelTask.BOTH,
        format=ModelFormat.TORCHSCRIPT,
        # The demo's preprocessing; windows smaller than the demo's whole-phantom ROI keep
        # the test short and exercise sliding-window stitching.
        input=demo_input_spec().model_copy(update={"roi_size": (48, 48, 32)}),
        intended_use="Tests only.",
    )
    torch.manual_seed(0)
    voxel_ml = float(torch.tensor(spec.input.target_spacing).prod()) / 1000.0
    path = folder / "demo.ts"
    torch.jit.save(torch.jit.script(LesionNet(voxel_ml, width=8).eval()), str(path))
    return path, spec


# ---------------------------------------------------------------- without a cluster


def test_make_executor_names_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_EXECUTOR", raising=False)
    assert make_executor() is None
    assert make_executor("local") is None
    with pytest.raises(ValueError, match="Did you mean 'ray'"):
        make_executor("rya")
    monkeypatch.setenv("WORKBENCH_EXECUTOR", "locl")
    with pytest.raises(ValueError, match="Did you mean 'local'"):
        make_executor()
    with pytest.raises(ValueError, match="storage should be one of"):
        RayExecutor(storage="nfs")
    with pytest.raises(ValueError, match="max_retries"):
        RayExecutor(max_retries=-1)


@needs_ray
def test_make_executor_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_EXECUTOR", "ray")
    monkeypatch.setenv("WORKBENCH_RAY_ADDRESS", "ray://head.example:10001")
    monkeypatch.setenv("WORKBENCH_RAY_STORAGE", "object_store")
    monkeypatch.setenv("WORKBENCH_RAY_THREADS", "3")
    monkeypatch.setenv("WORKBENCH_RAY_MAX_RETRIES", "5")
    executor = make_executor(connect=False)
    assert isinstance(executor, RayExecutor)
    assert executor.address == "ray://head.example:10001"
    assert executor.storage is RayStorage.OBJECT_STORE
    assert (executor.threads_per_worker, executor.max_retries) == (3, 5)
    monkeypatch.setenv("WORKBENCH_RAY_THREADS", "two")
    with pytest.raises(ValueError, match="WORKBENCH_RAY_THREADS should be an integer"):
        make_executor(connect=False)


@needs_ray
def test_object_store_needs_the_packing_hooks() -> None:
    executor = RayExecutor(storage="object_store", address="127.0.0.1:1")
    with pytest.raises(InferenceError, match="pack_case, run_packed and unpack_output"):
        list(executor.map_cases(lambda x: x, [1, 2]))


def test_packed_case_gives_the_same_output(
    tiny_test_set: Path, model_dir: Path, tmp_path: Path
) -> None:
    """The object-store path (pack, run in a scratch folder, unpack) in one process."""
    spec = tiny_spec()
    model = load_model(model_dir / "threshold.ts", spec, "cpu")
    case = cases_from_test_set(tiny_test_set)[0]
    direct = CaseProcessor(model, spec, tmp_path / "direct", model.device)
    shipped = CaseProcessor(model, spec, tmp_path / "shipped", model.device)
    expected = direct(direct.prepare(case))
    received = shipped.unpack_output(shipped.run_packed(shipped.pack_case(case)))
    assert _key(received) == _key(expected)
    assert received.mask_path is not None and expected.mask_path is not None
    assert (
        received.mask_path
        == tmp_path / "shipped" / "cases" / case.case_id / expected.mask_path.name
    )
    assert received.mask_path.read_bytes() == expected.mask_path.read_bytes()
    missing = runner_module.CaseInput(case.case_id, (tmp_path / "absent.dcm",))
    failed = shipped.unpack_output(shipped.run_packed(shipped.pack_case(missing)))
    assert failed.status is CaseStatus.FAILED
    assert (failed.reason or "").startswith("reading failed")


# ---------------------------------------------------------------- on the test cluster


@needs_cluster
@pytest.mark.slow
def test_ray_gives_bit_identical_outputs(
    cluster: Any, executor: RayExecutor, tiny_test_set: Path, tmp_path: Path
) -> None:
    """Tiny threshold model and the demo network: local and Ray runs agree bit for bit,
    with workers that read the shared storage and with inputs shipped through the
    object store."""
    threshold = save_scripted(ThresholdNet(), tmp_path / "threshold.ts")
    demo_path, demo_spec = _demo_model(tmp_path)
    cases = cases_from_test_set(tiny_test_set)
    runs = [
        (threshold, tiny_spec(), RayStorage.SHARED),
        (threshold, tiny_spec(), RayStorage.OBJECT_STORE),
        (demo_path, demo_spec, RayStorage.SHARED),
    ]
    for index, (path, spec, storage) in enumerate(runs):
        model = load_model(path, spec, "cpu")
        local = run_inference(cases, model, spec, out_dir=tmp_path / f"local-{index}")
        executor.storage = storage
        seen: list[str] = []
        remote = run_inference(
            cases,
            model,
            spec,
            out_dir=tmp_path / f"ray-{index}",
            executor=executor,
            on_case=lambda output: seen.append(output.case_id),
        )
        assert seen == [c.case_id for c in cases]
        assert [_key(o) for o in remote.outputs] == [_key(o) for o in local.outputs]
        assert all(o.status is CaseStatus.COMPLETED for o in remote.outputs)
        for mine, theirs in zip(local.outputs, remote.outputs, strict=True):
            assert mine.mask_path is not None and theirs.mask_path is not None
            assert theirs.mask_path == tmp_path / f"ray-{index}" / mine.mask_path.relative_to(
                tmp_path / f"local-{index}"
            )
            assert theirs.mask_path.read_bytes() == mine.mask_path.read_bytes()
        environment = json.loads(remote.environment_path.read_text())
        assert environment["executor"]["kind"] == "ray"
        assert environment["executor"]["storage"] == storage.value
        assert len(environment["executor"]["workers"]) == 2  # the test cluster's two CPUs
        assert environment["ray"]["version"] == cluster.__version__
        assert environment["ray"]["nodes"][0]["cpus"] >= 2


@needs_cluster
@pytest.mark.slow
def test_case_whose_worker_is_lost_too_often_is_recorded_failed(
    executor: RayExecutor, tiny_test_set: Path, model_dir: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """max_retries=0: the case running on a killed worker is failed with the reason;
    every other case completes; each case is reported exactly once."""
    monkeypatch.setattr(runner_module, "CaseProcessor", SlowProcessor)
    spec = tiny_spec()
    model = load_model(model_dir / "threshold.ts", spec, "cpu")
    cases = cases_from_test_set(tiny_test_set)
    monkeypatch.setattr(executor, "max_retries", 0)
    monkeypatch.setattr(executor, "storage", RayStorage.SHARED)
    killed: list[int] = []

    def kill_one_worker(done: int, total: int, message: str) -> None:
        if done == 1 and not killed:
            killed.append(executor.worker_pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    seen: list[CaseOutput] = []
    summary = run_inference(
        cases,
        model,
        spec,
        out_dir=tmp_path / "run",
        executor=executor,
        on_case=seen.append,
        progress=kill_one_worker,
    )
    assert [o.case_id for o in seen] == [c.case_id for c in cases]
    failed = [o for o in seen if o.status is CaseStatus.FAILED]
    assert len(failed) == 1 and summary.failed == 1 and summary.completed == len(cases) - 1
    reason = failed[0].reason or ""
    assert reason.startswith("worker lost: the case was tried 1 time(s)")
    assert "ActorDiedError" in reason or "RayActorError" in reason
    assert executor.workers_lost == 1 and executor.retries == 0


@needs_cluster
@pytest.mark.slow
def test_worker_that_finds_no_room_holds_no_case(
    executor: RayExecutor, tiny_test_set: Path, model_dir: Path, tmp_path: Path
) -> None:
    """Three one-CPU workers on the two-CPU cluster: the third is never placed. The cases
    it was given at the start are taken back and run by the others; none waits for it."""
    executor.release()  # the module's kept workers would hold the cluster's two CPUs
    spec = tiny_spec()
    model = load_model(model_dir / "threshold.ts", spec, "cpu")
    cases = cases_from_test_set(tiny_test_set)
    crowded = RayExecutor(num_workers=3, threads_per_worker=1, startup_timeout_s=120)
    try:
        started = time.monotonic()
        summary = run_inference(cases, model, spec, out_dir=tmp_path / "run", executor=crowded)
        assert time.monotonic() - started < 120
    finally:
        crowded.release()
    assert [o.case_id for o in summary.outputs] == [c.case_id for c in cases]
    assert summary.completed == len(cases)
    assert len(crowded.workers_info) == 2 and crowded.workers_lost == 0
    assert all(w["ready_after_s"] > 0 for w in crowded.workers_info)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> harness.Pipeline:
    """A workbench with a locked four-case test set, a model and an approved protocol."""
    return harness.build(tmp_path_factory.mktemp("ray-flow") / "wb", stage="protocol", n_cases=4)


def _case_rows(wb: Any, run_uid: str) -> list[dict[str, Any]]:
    from workbench.services import runs

    with wb.transaction(readonly=True) as session:
        run = _run(session, run_uid)
        frame = runs.case_frame(session, run.id)
    columns = ["case_id", "status", "reason", "score", "mask_sha256"]
    return frame[columns].sort_values("case_id").to_dict(orient="records")


def _run(session: Any, run_uid: str) -> Any:
    from sqlalchemy import select

    from workbench.records.models import Run

    return session.scalars(select(Run).where(Run.run_uid == run_uid)).one()


@needs_cluster
@pytest.mark.slow
def test_validation_on_ray_matches_local_and_survives_a_killed_worker(
    cluster: Any,
    executor: RayExecutor,
    pipeline: harness.Pipeline,
    tmp_path: Path,
    monkeypatch: Any,
) -> None:
    """Through ``runs.validate``: a Ray run whose worker is killed mid-case stores every
    case once, with the local run's scores, statistics and verdict; the audit chain holds."""
    from workbench.services import runs

    pipe = harness.copy_workdir(pipeline, tmp_path / "wb")
    wb = harness.open_wb(pipe.workdir)
    qa1 = harness.login(wb, "qa1")
    ref = {"protocol": pipe.protocol_ref, "model": pipe.model_ref, "test_set": harness.TEST_SET}
    try:
        local = runs.validate(wb, qa1, device="cpu", **ref)

        monkeypatch.setattr(runner_module, "CaseProcessor", SlowProcessor)
        monkeypatch.setattr(executor, "storage", RayStorage.SHARED)
        killed: list[int] = []

        def kill_one_worker(done: int, total: int, message: str) -> None:
            if done == 1 and not killed:
                killed.append(executor.worker_pids()[0])
                os.kill(killed[0], signal.SIGKILL)

        remote = runs.validate(
            wb, qa1, device="cpu", executor=executor, progress=kill_one_worker, **ref
        )
        assert killed and executor.workers_lost == 1 and executor.retries >= 1
        assert remote.status == "completed" and remote.n_completed == 4 == local.n_completed
        assert (remote.verdict, remote.endpoints) == (local.verdict, local.endpoints)
        rows = _case_rows(wb, remote.run_uid)
        assert Counter(r["case_id"] for r in rows) == Counter({r["case_id"]: 1 for r in rows})
        assert rows == _case_rows(wb, local.run_uid)
        assert remote.results is not None and local.results is not None
        assert remote.results.accounting == local.results.accounting
        with wb.transaction(readonly=True) as session:
            environment = _run(session, remote.run_uid).environment
            assert environment["ray"]["version"] == cluster.__version__
            assert environment["ray"]["nodes"] and environment["ray"]["nodes"][0]["alive"]
    finally:
        wb.close()
    assert harness.verify_chain(pipe.workdir).count > 0  # raises on any broken entry


@needs_cluster
@pytest.mark.slow
def test_cli_validate_runs_on_ray(
    executor: RayExecutor, pipeline: harness.Pipeline, tmp_path: Path
) -> None:
    """``workbench validate --executor ray --ray-address ...`` stores a complete run
    whose environment names the cluster; a misspelt executor is refused."""
    executor.release()  # the CLI's worker needs one of the cluster's two CPUs
    pipe = harness.copy_workdir(pipeline, tmp_path / "wb")
    args = ["validate", "--protocol", pipe.protocol_ref, "--model", pipe.model_ref]
    args += ["--testset", harness.TEST_SET, "--device", "cpu"]
    wrong = harness.cli(pipe.workdir, *args, "--executor", "rya", user="qa1")
    assert wrong.returncode == 2 and "Did you mean 'ray'" in wrong.stderr
    result = harness.cli(
        pipe.workdir,
        *args,
        user="qa1",
        env={
            "WORKBENCH_EXECUTOR": "ray",
            "WORKBENCH_RAY_ADDRESS": str(ADDRESS),
            "WORKBENCH_RAY_WORKERS": "1",  # one worker process to start: a shorter test
        },
        timeout=600,
    )
    assert result.returncode in (0, 3), result.stderr
    assert "cases 4: completed 4, failed 0, excluded 0" in result.stdout
    wb = harness.open_wb(pipe.workdir)
    try:
        run_uid = result.stdout.split()[1].rstrip(":")
        with wb.transaction(readonly=True) as session:
            assert _run(session, run_uid).environment["ray"]["nodes"]
    finally:
        wb.close()
