"""Run the cases of a validation on a Ray cluster; the driver alone keeps the records.

:class:`RayExecutor` is an :class:`~workbench.inference.executor.InferenceExecutor`
that sends cases to Ray actors: one per GPU of the cluster when the run's device is
CUDA, otherwise one per ``threads_per_worker`` CPUs. Each actor receives the
per-case function of the run once (a pickled
:class:`~workbench.inference.runner.CaseProcessor`: model path, spec and the
registered SHA-256 of every model file, never the loaded module), loads the model
and re-verifies its hashes before its first case (``warm_up``), then runs cases
exactly as the local executor does. Results come back to the driver, which yields
them in case order to the runner; the runner hands each to ``on_case``, so the
database, the audit chain, resumability and case accounting are those of a local
run.

Where the inputs and outputs live (``storage``):

``"shared"`` (default)
    Workers see the test set and the run folder at the same paths as the driver
    (NFS, CephFS, a Kubernetes volume mounted everywhere). Workers read the DICOM
    files and write each SEG themselves; only the small outputs travel back.
``"object_store"``
    Workers cannot see the driver's storage. The driver reads each case's files
    and ships them through the Ray object store; the worker processes them in a
    private scratch folder and returns the SEG's bytes, which the driver checks
    against their SHA-256 and writes into the run folder.

Faults: an actor whose process dies (killed, out of memory, its node lost) makes its
running case fail with a Ray error on the driver. That case is sent to another
worker, up to ``max_retries`` times, and is then recorded as failed with the reason;
cases queued behind it on the same actor are resent without counting an attempt. A
replacement actor is started for every lost one; it takes cases only once it is
ready (a lost node's replacements may find no room). When nothing is left to send
and a ready worker has room, cases still queued on a worker that is not ready well
after the others were (``RECLAIM_AFTER_S``) are taken back and that worker is
stopped, so that no case waits for a worker that cannot be placed. Each case is
yielded exactly once. The actors belong to the driver: if the driver dies they go
with it, and ``validate`` resumes the run from the cases already recorded.

Each worker runs one case at a time, in the order it received them; while a case
computes, the worker reads and preprocesses its next case in a second, low-priority
thread (``prefetch``, shared storage), as the local executor overlaps reading with
the forward pass. Workers start together, and each gets its first cases as soon as
it is created: they queue behind its model load, and the first is read while the
model loads and its files are hashed. With ``keep_workers=True`` the workers stay up
between runs of the same executor (starting one costs seconds of imports), each run
handing them its own per-case function; by default they stop after each run and free
the cluster.

Backpressure: at most ``max_in_flight`` cases are on the workers at once (one
computing and one being read per worker by default), and a finished case waits for
an earlier one at most ``REORDER_FACTOR * max_in_flight`` cases back, so driver
and worker memory stay bounded however large the test set; a waiting result is
small (the SEG is already stored), and one slow case does not idle the other
workers.

Ray is an optional dependency (``pip install 'validation-workbench[ray]'``); it
is imported only when a :class:`RayExecutor` connects.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from workbench.errors import InferenceError
from workbench.inference.environment import node_gpu_details
from workbench.inference.priority import lower_thread_priority

__all__ = ["RayExecutor", "RayStorage", "ray_available"]

#: How long to wait for the first worker of a run to start before giving up.
DEFAULT_STARTUP_TIMEOUT_S = 600.0

#: Finished cases may wait for an earlier one up to this many times ``max_in_flight`` back.
REORDER_FACTOR = 4

#: A worker still starting keeps its queued cases for at least this long, and for twice
#: as long as the slowest worker of the run took to be ready, before they are taken back.
RECLAIM_AFTER_S = 10.0


class RayStorage(StrEnum):
    """How workers reach a case's inputs and outputs (see the module docstring)."""

    SHARED = "shared"
    OBJECT_STORE = "object_store"


def ray_available() -> bool:
    """Whether the ``ray`` package can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise InferenceError(
            "The Ray executor needs the 'ray' package. Found it missing; install it with "
            "pip install 'validation-workbench[ray]' (the same version on every node)."
        ) from error
    return ray


def _lost_worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray errors that mean the worker (not the case) failed: worth a retry elsewhere."""
    ex = ray.exceptions
    names = (
        "RayActorError",  # includes ActorDiedError, ActorUnavailableError
        "WorkerCrashedError",
        "NodeDiedError",
        "OutOfMemoryError",
        "LocalRayletDiedError",
        "ObjectLostError",
        "ActorUnschedulableError",
    )
    return tuple(getattr(ex, n) for n in names if isinstance(getattr(ex, n, None), type))


def _short(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:limit]}"


class _CaseWorker:
    """The body of a Ray actor: runs the cases of one run at a time.

    The actor outlives a run (starting a worker process that imports torch
    costs seconds); :meth:`load` gives it the next run's per-case function.

    Parameters
    ----------
    threads : int
        Torch intra-op threads of this worker.
    """

    def __init__(self, threads: int) -> None:
        import torch

        from workbench.inference.environment import deterministic_mode

        self.process: Any = None
        self.prepare: Callable[[Any], Any] | None = None
        self.threads = threads
        # Prefetched cases: case -> Future of prepare(case), or _TAKEN when run() came first.
        self._prefetched: dict[Any, Any] = {}
        self._prefetch_lock = threading.Lock()
        # Set once a run's job is in place: reading may start while the model loads.
        self._job_ready = threading.Event()
        self._reader_priority_lowered = False
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # only possible before the first parallel op
            torch.set_num_interop_threads(1)
        # The numerical settings of the driver's run, for this process's lifetime.
        self._settings = contextlib.ExitStack()
        self._settings.enter_context(deterministic_mode())

    def load(self, job: tuple[Callable[[Any], Any], Callable[[Any], Any] | None]) -> dict[str, Any]:
        """Take a run's ``(process, prepare)``, load its model (verifying its hashes)
        and say where this worker runs."""
        import ray
        import torch

        self.process, self.prepare = job
        self._job_ready.set()  # cases queued behind this call are read meanwhile
        warm_up = getattr(self.process, "warm_up", None)
        if callable(warm_up):
            warm_up()
        context = ray.get_runtime_context()
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "node_id": context.get_node_id(),
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
        }
        if torch.cuda.is_available():
            info["cuda_devices"] = [
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            ]
            info["cuda_version"] = torch.version.cuda
            info["driver_version"] = node_gpu_details()["driver_version"]
        return info

    def unload(self) -> None:
        """Drop the run's model (and its GPU memory) once the run is over."""
        self._job_ready.clear()
        self.process = self.prepare = None
        with self._prefetch_lock:
            self._prefetched.clear()

    def prefetch(self, case: Any) -> None:
        """Read and prepare a case that :meth:`run` will get next (``reading`` group).

        Runs in its own thread, at low priority, while the current case computes
        (or, for a worker's first case, while :meth:`load` loads the model): the
        pipeline of the local executor, inside one worker.
        """
        # The driver sends load() before any case, but the two run in different
        # groups: wait until the job is in place.
        if not self._job_ready.wait(timeout=DEFAULT_STARTUP_TIMEOUT_S) or self.prepare is None:
            return
        if not self._reader_priority_lowered:
            lower_thread_priority()
            self._reader_priority_lowered = True
        future: Future[Any] = Future()
        with self._prefetch_lock:
            if self._prefetched.pop(case, None) is _TAKEN:
                return  # run() started this case before its prefetch: nothing to do
            self._prefetched[case] = future
        try:
            future.set_result(self.prepare(case))
        except BaseException as error:  # handed to run(), which raises it there
            future.set_exception(error)

    def run(self, case: Any) -> Any:
        """``process(prepare(case))``, as the local executors do."""
        if self.prepare is None:
            return self.process(case)
        with self._prefetch_lock:
            future = self._prefetched.pop(case, None)
            if future is None:
                self._prefetched[case] = _TAKEN
        prepared = future.result() if future is not None else self.prepare(case)
        return self.process(prepared)

    def run_packed(self, packed: Any) -> Any:
        """A case whose files were shipped by the driver (``storage="object_store"``)."""
        return self.process.run_packed(packed)


#: Marks a case that :meth:`_CaseWorker.run` prepared itself, so that a late prefetch skips it.
_TAKEN = object()


@dataclass(eq=False)
class _Worker:
    slot: int
    handle: Any
    use_gpu: bool
    started: Any = None  # ObjectRef of this run's load()
    requested: float = 0.0  # time.monotonic() when load() was sent
    info: dict[str, Any] | None = None  # what load() returned: the worker is ready
    eager: bool = False  # started with the run: takes cases before it is ready
    in_flight: list[Any] = field(default_factory=list)  # ObjectRefs, in submission order


class RayExecutor:
    """Run cases on Ray actors; results come back to the driver in case order.

    Parameters
    ----------
    address : str, optional
        Cluster to connect to: ``"auto"`` (a cluster started with ``ray start`` on
        this machine), ``"HOST:PORT"`` (a head's GCS address, from a cluster node)
        or ``"ray://HOST:PORT"`` (Ray Client, from outside the cluster; needs
        ``ray[client]``). ``None``: ``$RAY_ADDRESS`` or a new local instance.
    num_workers : int, optional
        Actors to start; by default one per GPU (CUDA runs) or one per
        ``threads_per_worker`` CPUs of the cluster, and never more than cases.
    threads_per_worker : int
        Torch threads per actor.
    cpus_per_worker : float, optional
        Ray CPUs reserved per actor; default ``threads_per_worker``. Less than one
        lets several GPU-bound actors share a CPU.
    gpus_per_worker : float
        GPUs reserved per actor on CUDA runs (1: one actor per GPU).
    storage : RayStorage or str
        ``"shared"`` or ``"object_store"`` (see the module docstring).
    max_retries : int
        How many times a case whose worker was lost is sent to another worker
        before it is recorded as failed.
    max_in_flight : int, optional
        Cases on the workers at once (running, or queued and being read); default
        two per worker.
    startup_timeout_s : float
        How long to wait for at least one worker to be ready (scheduling, model
        load) before the run fails with the resources asked for and available.
    keep_workers : bool
        Keep the workers (and their cluster resources) after a run, for the next
        run of this executor; :meth:`release` or :meth:`close` stops them. By
        default they stop at the end of each run, leaving the cluster to others.
    ray_init_options : dict, optional
        Extra keyword arguments of ``ray.init`` (e.g. ``runtime_env``).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_workers: int | None = None,
        threads_per_worker: int = 1,
        cpus_per_worker: float | None = None,
        gpus_per_worker: float = 1.0,
        storage: RayStorage | str = RayStorage.SHARED,
        max_retries: int = 2,
        max_in_flight: int | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        keep_workers: bool = False,
        ray_init_options: dict[str, Any] | None = None,
    ) -> None:
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"num_workers should be at least 1. Found {num_workers}.")
        if threads_per_worker < 1:
            raise ValueError(
                f"threads_per_worker should be at least 1. Found {threads_per_worker}."
            )
        if cpus_per_worker is not None and not cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker should be above 0. Found {cpus_per_worker}.")
        if not gpus_per_worker > 0:
            raise ValueError(f"gpus_per_worker should be above 0. Found {gpus_per_worker}.")
        if max_retries < 0:
            raise ValueError(f"max_retries should be 0 or more. Found {max_retries}.")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight should be at least 1. Found {max_in_flight}.")
        try:
            self.storage = RayStorage(storage)
        except ValueError:
            raise ValueError(
                f"storage should be one of {[s.value for s in RayStorage]}. Found {storage!r}."
            ) from None
        self.address = address
        self.num_workers = num_workers
        self.threads_per_worker = threads_per_worker
        self.cpus_per_worker = float(cpus_per_worker or threads_per_worker)
        self.gpus_per_worker = gpus_per_worker
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight
        self.startup_timeout_s = startup_timeout_s
        self.keep_workers = keep_workers
        self.ray_init_options = dict(ray_init_options or {})
        self.workers_info: list[dict[str, Any]] = []
        self.workers_lost = 0
        self.retries = 0
        self._connected_here = False
        self._live: list[_Worker] = []
        self._next_slot = 0

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Connect this process to the cluster (once); errors say which address failed."""
        ray = _ray()
        if ray.is_initialized():
            return
        options: dict[str, Any] = {
            "logging_level": "WARNING",
            "log_to_driver": False,
            "configure_logging": True,
            **self.ray_init_options,
        }
        try:
            ray.init(address=self.address, **options)
        except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise InferenceError(
                f"Cannot connect to the Ray cluster at {self.address or '$RAY_ADDRESS/local'}: "
                f"{_short(error)}. Check the address (auto, HOST:PORT or ray://HOST:PORT) and "
                "that the cluster runs the same Ray and Python versions."
            ) from error
        self._connected_here = True

    def release(self) -> None:
        """Stop the workers kept for later runs, handing their resources back to the cluster."""
        self._stop_workers()

    def close(self) -> None:
        """Stop this executor's actors and disconnect if :meth:`connect` connected.

        Workers kept between runs (``keep_workers=True``) also end when the
        driver process ends.
        """
        self._stop_workers()
        if self._connected_here:
            ray = _ray()
            ray.shutdown()
            self._connected_here = False

    def worker_pids(self) -> list[int]:
        """Process ids of the actors ready now (for operators and fault tests)."""
        return [int(w.info["pid"]) for w in self._live if w.info is not None]

    def describe(self) -> dict[str, Any]:
        """How cases are run: configuration, and the workers of the last run (connects first)."""
        self.connect()
        ray = _ray()
        return {
            "kind": "ray",
            "ray_version": ray.__version__,
            "address": self.address,
            "storage": self.storage.value,
            "threads_per_worker": self.threads_per_worker,
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": self.gpus_per_worker,
            "max_retries": self.max_retries,
            "workers": list(self.workers_info),
            "workers_lost": self.workers_lost,
            "retries": self.retries,
        }

    # ------------------------------------------------------------------ scheduling
    def _worker_options(self, use_gpu: bool) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_cpus": self.cpus_per_worker,
            "max_restarts": 0,  # the driver replaces lost workers and retries their cases
            "max_task_retries": 0,
            "max_concurrency": 1,  # one case at a time, in submission order
        }
        if use_gpu:
            options["num_gpus"] = self.gpus_per_worker
        return options

    def _count_workers(self, ray: Any, use_gpu: bool, n_cases: int) -> int:
        if self.num_workers is not None:
            return min(self.num_workers, n_cases)
        resources = ray.cluster_resources()
        if use_gpu:
            available = int(float(resources.get("GPU", 0)) // self.gpus_per_worker)
            if available < 1:
                raise InferenceError(
                    "The run's device is CUDA but the Ray cluster has no GPU. Found resources "
                    f"{_resource_text(resources)}; run with --device cpu or add GPU nodes."
                )
        else:
            available = int(float(resources.get("CPU", 0)) // self.cpus_per_worker)
        return max(1, min(available, n_cases))

    def _stop_workers(self) -> None:
        if not self._live:
            return
        ray = _ray()
        for worker in self._live:
            with contextlib.suppress(Exception):
                ray.kill(worker.handle, no_restart=True)
        self._live = []

    def map_cases(
        self,
        process: Callable[[Any], Any],
        cases: Iterable[Any],
        *,
        prepare: Callable[[Any], Any] | None = None,
    ) -> Iterator[Any]:
        """See :meth:`InferenceExecutor.map_cases`.

        ``process`` may provide the hooks described in
        :mod:`workbench.inference.executor` (``warm_up``, ``failed`` and, for
        ``storage="object_store"``, ``pack_case``/``run_packed``/``unpack_output``).

        Cases are sent to a worker as soon as it is created: they queue behind
        its model load, and the first one is read while the model loads.

        Raises
        ------
        InferenceError
            No worker could be started within ``startup_timeout_s``, or a case
            was lost more than ``max_retries`` times and ``process`` has no
            ``failed`` hook, or ``object_store`` storage without the packing hooks.
        """
        items = list(cases)
        if not items:
            return
        shipping = self.storage is RayStorage.OBJECT_STORE
        if shipping:
            missing = [
                h for h in ("pack_case", "run_packed", "unpack_output") if not hasattr(process, h)
            ]
            if missing:
                raise InferenceError(
                    "storage='object_store' needs a case processor with pack_case, run_packed "
                    f"and unpack_output. Found {type(process).__name__} without {missing}."
                )
        self.connect()
        ray = _ray()
        lost_errors = _lost_worker_errors(ray)
        use_gpu = str(getattr(process, "device", "cpu")).startswith("cuda")
        n_workers = self._count_workers(ray, use_gpu, len(items))
        window = self.max_in_flight or 2 * n_workers
        per_worker = max(1, -(-window // n_workers))
        # Finished cases wait (small outputs: the SEG is already stored) for an earlier one
        # at most this far back, so that one slow case does not idle the other workers.
        look_ahead = REORDER_FACTOR * window
        job = ray.put((process, prepare))
        # prefetch() runs in its own group, beside the case being computed.
        remote_cls = ray.remote(concurrency_groups={"reading": 1})(_CaseWorker).options(
            **self._worker_options(use_gpu)
        )
        self.workers_info, self.workers_lost, self.retries = [], 0, 0
        # Workers of an earlier run are reused when they have the same shape.
        reused = [w for w in self._live if w.use_gpu == use_gpu][:n_workers]
        for worker in self._live:
            if worker not in reused:
                with contextlib.suppress(Exception):
                    ray.kill(worker.handle, no_restart=True)
        self._live = []
        workers: list[_Worker] = []  # this run's workers not lost: starting or ready
        starting: dict[Any, _Worker] = {}  # ObjectRef of load() -> worker
        refs: dict[Any, tuple[int, _Worker]] = {}  # in-flight ObjectRef -> (case index, worker)
        payloads: dict[int, Any] = {}  # packed inputs kept for retries
        attempts = [0] * len(items)
        reasons: dict[int, str] = {}
        results: dict[int, Any] = {}
        pending: deque[int] = deque(range(len(items)))
        startup_failures = 0
        waiting_since: float | None = time.monotonic()  # since when no worker is ready
        next_yield = 0

        def load(worker: _Worker, *, eager: bool = False) -> None:
            worker.eager = eager
            worker.started = worker.handle.load.remote(job)
            worker.requested = time.monotonic()
            worker.info = None
            worker.in_flight.clear()
            starting[worker.started] = worker
            workers.append(worker)

        def start_worker(*, eager: bool = False) -> None:
            handle = remote_cls.remote(self.threads_per_worker)
            load(_Worker(self._next_slot, handle, use_gpu), eager=eager)
            self._next_slot += 1

        def eligible(worker: _Worker) -> bool:
            # A worker of the run's start takes cases at once (they wait behind its model
            # load); a replacement only once ready, since it may never find room.
            return worker.info is not None or (worker.eager and not self._live)

        def reclaim() -> bool:
            """Nothing left to send and a ready worker has room: take back the cases
            queued on workers that are still not ready well after the others were
            (perhaps never placed) and stop those workers, so that no case waits for
            them."""
            if pending or not any(
                w.info is not None and len(w.in_flight) < per_worker for w in workers
            ):
                return False
            slowest = max((float(w["ready_after_s"]) for w in self.workers_info), default=0.0)
            grace = max(RECLAIM_AFTER_S, 2 * slowest)
            now = time.monotonic()
            stuck = [
                w for w in workers if w.info is None and w.in_flight and now - w.requested > grace
            ]
            for worker in stuck:
                workers.remove(worker)
                starting.pop(worker.started, None)
                with contextlib.suppress(Exception):
                    ray.kill(worker.handle, no_restart=True)
                for ref in worker.in_flight:
                    index, _ = refs.pop(ref)
                    pending.append(index)
                worker.in_flight.clear()
            pending_sorted = sorted(pending)
            pending.clear()
            pending.extend(pending_sorted)
            return bool(stuck)

        def lose(worker: _Worker, error: BaseException, *, was_running: bool) -> None:
            """Requeue a dead worker's cases. With ``was_running`` its first unfinished
            case was running (actors run their cases in order) and counts an attempt."""
            if worker not in workers:
                return
            workers.remove(worker)
            if worker in self._live:
                self._live.remove(worker)
            starting.pop(worker.started, None)
            self.workers_lost += 1
            with contextlib.suppress(Exception):
                ray.kill(worker.handle, no_restart=True)
            requeue: list[int] = []
            counted = not was_running
            for ref in worker.in_flight:
                index, _ = refs.pop(ref)
                finished, _ = ray.wait([ref], num_returns=1, timeout=0)
                if finished:
                    try:  # finished before the worker died: keep its result
                        value = ray.get(ref)
                    except lost_errors:
                        pass
                    else:
                        finish(index, value)
                        continue
                if not counted:
                    counted = True
                    attempts[index] += 1
                    reasons[index] = _short(error)
                    if attempts[index] > self.max_retries:
                        payloads.pop(index, None)
                        results[index] = self._give_up(
                            process, items[index], attempts[index], reasons[index]
                        )
                        continue
                    self.retries += 1
                requeue.append(index)
            worker.in_flight.clear()
            for index in sorted(requeue, reverse=True):
                pending.appendleft(index)
            if len(results) + next_yield < len(items):
                start_worker()

        def ready(ref: Any) -> None:
            """A worker's load() returned: it is ready, or it died while starting."""
            nonlocal startup_failures, waiting_since
            worker = starting.pop(ref)
            try:
                info = ray.get(ref)
            except lost_errors as error:
                startup_failures += 1
                if startup_failures > 3 * n_workers:
                    raise InferenceError(
                        f"Ray workers keep dying while they start. Last: {_short(error)}"
                    ) from error
                lose(worker, error, was_running=False)  # its cases had not started
                return
            except ray.exceptions.RayTaskError as error:
                # warm_up refused the model (e.g. changed files): stop the run.
                raise error.as_instanceof_cause() from None
            worker.info = info
            self._live.append(worker)
            self.workers_info.append(
                {
                    "slot": worker.slot,
                    "ready_after_s": round(time.monotonic() - worker.requested, 3),
                    **info,
                }
            )
            waiting_since = None

        def finish(index: int, value: Any) -> None:
            payloads.pop(index, None)
            results[index] = process.unpack_output(value) if shipping else value  # type: ignore[attr-defined]

        def submit(worker: _Worker, index: int) -> None:
            if shipping:
                if index not in payloads:
                    payloads[index] = ray.put(process.pack_case(items[index]))  # type: ignore[attr-defined]
                ref = worker.handle.run_packed.remote(payloads[index])
            else:
                if worker.in_flight or worker.info is None:
                    # Busy or still loading its model: let it read this case meanwhile.
                    reading = worker.handle.prefetch.options(concurrency_group="reading")
                    reading.remote(items[index])
                ref = worker.handle.run.remote(items[index])
            worker.in_flight.append(ref)
            refs[ref] = (index, worker)

        for worker in reused:
            load(worker, eager=True)
        for _ in range(n_workers - len(reused)):
            start_worker(eager=True)
        completed = False
        try:
            while next_yield < len(items):
                while next_yield in results:
                    result = results.pop(next_yield)
                    next_yield += 1
                    yield result
                if next_yield >= len(items):
                    break
                # Dispatch: earliest cases first, to the least busy worker that may take one.
                while True:
                    takers = [w for w in workers if eligible(w)]
                    while pending and pending[0] < next_yield + look_ahead and takers:
                        worker = min(
                            takers, key=lambda w: (len(w.in_flight), w.info is None, w.slot)
                        )
                        if len(worker.in_flight) >= per_worker:
                            break
                        submit(worker, pending.popleft())
                    if not reclaim():
                        break
                if not workers:
                    raise InferenceError(
                        "No Ray worker is left to run the remaining cases. Found "
                        f"{self.workers_lost} worker(s) lost; check the cluster (ray status)."
                    )
                if (
                    waiting_since is not None
                    and time.monotonic() - waiting_since > self.startup_timeout_s
                ):
                    raise InferenceError(
                        f"No Ray worker started within {self.startup_timeout_s:g} s. Expected "
                        f"{self._worker_options(use_gpu)} per worker; found cluster resources "
                        f"{_resource_text(ray.cluster_resources())}."
                    )
                # Starting workers first: a case result is handled after its worker's load().
                done, _ = ray.wait(list(starting) + list(refs), num_returns=1, timeout=5.0)
                for ref in done:
                    if ref in starting:
                        ready(ref)
                        continue
                    if ref not in refs:
                        continue  # a dead worker's task, already requeued
                    index, worker = refs[ref]
                    if worker.started in starting:
                        ready(worker.started)
                        if worker not in workers:
                            continue  # lost while starting: the case is queued again
                    try:
                        value = ray.get(ref)
                    except lost_errors as error:
                        lose(worker, error, was_running=True)
                        continue
                    except ray.exceptions.RayTaskError as error:
                        raise error.as_instanceof_cause() from None
                    refs.pop(ref)
                    worker.in_flight.remove(ref)
                    finish(index, value)
                if not self._live and waiting_since is None:
                    waiting_since = time.monotonic()
            completed = True
        finally:
            for worker in starting.values():
                with contextlib.suppress(Exception):
                    ray.kill(worker.handle, no_restart=True)
            if completed and self.keep_workers:  # idle until the next run, without its model
                for worker in self._live:
                    worker.handle.unload.remote()
            else:  # (stopped early, the cases still queued on the workers stop too)
                self._stop_workers()

    def _give_up(self, process: Any, case: Any, attempts: int, reason: str) -> Any:
        message = (
            f"worker lost: the case was tried {attempts} time(s) "
            f"(max_retries={self.max_retries}); last error {reason}"
        )
        failed = getattr(process, "failed", None)
        if not callable(failed):
            raise InferenceError(f"Case {getattr(case, 'case_id', case)!r}: {message}")
        return failed(case, message)


def _resource_text(resources: dict[str, Any]) -> str:
    keys = ("CPU", "GPU", "memory", "object_store_memory")
    return "{" + ", ".join(f"{k}: {resources.get(k, 0):g}" for k in keys) + "}"
