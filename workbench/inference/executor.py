"""How the cases of a run are scheduled: the seam between the runner and a cluster.

The runner (:func:`workbench.inference.runner.run_inference`) splits the work of
one case into two picklable callables:

``prepare(case) -> prepared``
    I/O and CPU work that does not need the model: read the DICOM series,
    reorient, resample and window it.
``process(prepared) -> result``
    Inference, post-processing and writing the case's outputs.

An :class:`InferenceExecutor` decides where and when these run and yields the
results **in the order of the cases**, so that the caller can persist each one
as it arrives and a resumed run sees the same sequence.

:class:`InProcessExecutor` (the default) overlaps reading with compute: a
background thread prepares the next cases while the caller's thread runs the
model on the current one (a bounded queue of ``prefetch`` cases keeps memory
flat). :class:`SerialExecutor` runs everything in the caller's thread.

On Linux the background threads run at a lower scheduling priority
(:func:`lower_thread_priority`). On a CPU the forward pass keeps every core
busy with one OpenMP team; a reader that preempted one of its threads would
stall the whole team at its next barrier, so the reader and the writer take
the moments the team leaves free instead. On a GPU it keeps the thread that
feeds the device from waiting behind them.

Scaling out needs no change to the runner:
:class:`~workbench.inference.ray_executor.RayExecutor` has the same method and
sends the cases to Ray actors. Executors that run ``process`` in other
processes use these optional methods of the object they are given (the
runner's :class:`~workbench.inference.runner.CaseProcessor` has them all):

``warm_up()``
    Called once per worker before its first case: load the model and verify
    its registered SHA-256 hashes, so that a changed model stops the run.
``failed(case, reason) -> result``
    The result recorded for a case that could not be processed at all (its
    worker was lost more often than the retry limit allows).
``pack_case(case)``, ``run_packed(packed)``, ``unpack_output(packed_output)``
    For workers that cannot see the driver's storage: the driver reads the
    case's files, the worker processes them in a scratch folder and returns
    the output files, the driver stores them.

:func:`make_executor` builds an executor by name (``local`` or ``ray``), as the
``workbench validate --executor`` option and ``$WORKBENCH_EXECUTOR`` do.

Every output's file name and DICOM UIDs depend only on the model digest and
the case id, so retries and resumes on other nodes write identical files.
"""

from __future__ import annotations

import difflib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable

from workbench.inference.priority import BACKGROUND_NICENESS, lower_thread_priority

__all__ = [
    "BACKGROUND_NICENESS",
    "EXECUTOR_KINDS",
    "InferenceExecutor",
    "InProcessExecutor",
    "SerialExecutor",
    "lower_thread_priority",
    "make_executor",
]

C = TypeVar("C")
P = TypeVar("P")
R = TypeVar("R")


@runtime_checkable
class InferenceExecutor(Protocol):
    """Runs ``process(prepare(case))`` for every case; yields results in case order."""

    def map_cases(
        self,
        process: Callable[[Any], R],
        cases: Iterable[Any],
        *,
        prepare: Callable[[Any], Any] | None = None,
    ) -> Iterator[R]:
        """Process each case and yield the results in the order of ``cases``.

        Parameters
        ----------
        process : callable
            ``process(prepared) -> result``; picklable for executors that run
            it in other processes.
        cases : iterable
            The work items, in the order results must come back.
        prepare : callable, optional
            ``prepare(case) -> prepared``; the identity when ``None``.

        Yields
        ------
        result
            ``process(prepare(case))`` for each case, in order. An exception
            raised by either callable is re-raised when its case is reached.
        """
        ...


class SerialExecutor:
    """Prepare and process each case in turn in the caller's thread (no overlap)."""

    def map_cases(
        self,
        process: Callable[[P], R],
        cases: Iterable[C],
        *,
        prepare: Callable[[C], P] | None = None,
    ) -> Iterator[R]:
        """See :meth:`InferenceExecutor.map_cases`."""
        for case in cases:
            yield process(prepare(case) if prepare is not None else case)  # type: ignore[arg-type]


class InProcessExecutor:
    """Prepare upcoming cases in background threads while the current one is processed.

    Parameters
    ----------
    prefetch : int
        How many prepared cases may wait ahead of the one being processed
        (bounds memory to ``prefetch + 1`` volumes).
    loader_threads : int
        Threads that run ``prepare``; pydicom decoding and MONAI resampling
        release the GIL for much of their work.
    background_niceness : int
        Niceness of the loader threads (see :func:`lower_thread_priority`);
        0 runs them at the caller's priority.
    """

    def __init__(
        self,
        *,
        prefetch: int = 2,
        loader_threads: int = 1,
        background_niceness: int = BACKGROUND_NICENESS,
    ) -> None:
        if prefetch < 1 or loader_threads < 1:
            raise ValueError(
                "prefetch and loader_threads should be at least 1. "
                f"Found prefetch={prefetch}, loader_threads={loader_threads}."
            )
        if not 0 <= background_niceness <= 19:
            raise ValueError(f"background_niceness should be 0 to 19. Found {background_niceness}.")
        self.prefetch = prefetch
        self.loader_threads = loader_threads
        self.background_niceness = background_niceness

    def map_cases(
        self,
        process: Callable[[P], R],
        cases: Iterable[C],
        *,
        prepare: Callable[[C], P] | None = None,
    ) -> Iterator[R]:
        """See :meth:`InferenceExecutor.map_cases`."""
        if prepare is None:
            for case in cases:
                yield process(case)  # type: ignore[arg-type]
            return
        pending: deque[Future[P]] = deque()
        source = iter(cases)
        pool = ThreadPoolExecutor(
            max_workers=self.loader_threads,
            thread_name_prefix="workbench-prefetch",
            initializer=lower_thread_priority,
            initargs=(self.background_niceness,),
        )
        try:

            def submit_next() -> None:
                for case in source:
                    pending.append(pool.submit(prepare, case))
                    return

            for _ in range(self.prefetch + 1):
                submit_next()
            while pending:
                prepared = pending.popleft().result()
                submit_next()
                yield process(prepared)
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


#: Executor names accepted by :func:`make_executor` (``workbench validate --executor``).
EXECUTOR_KINDS = ("local", "ray")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} should be an integer. Found {value!r}.") from None


def make_executor(
    kind: str | None = None,
    *,
    address: str | None = None,
    storage: str | None = None,
    num_workers: int | None = None,
    threads_per_worker: int | None = None,
    max_retries: int | None = None,
    connect: bool = True,
) -> InferenceExecutor | None:
    """The executor of a run, by name.

    Parameters
    ----------
    kind : str, optional
        ``"local"`` (this process: the runner's default
        :class:`InProcessExecutor`) or ``"ray"`` (a Ray cluster). Default
        ``$WORKBENCH_EXECUTOR``, else ``"local"``.
    address : str, optional
        Ray cluster address: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.
        Default ``$WORKBENCH_RAY_ADDRESS``, else ``$RAY_ADDRESS`` or a new
        local Ray instance.
    storage : str, optional
        ``"shared"`` or ``"object_store"``; default ``$WORKBENCH_RAY_STORAGE``,
        else ``"shared"`` (see :mod:`workbench.inference.ray_executor`).
    num_workers, threads_per_worker, max_retries : int, optional
        Default ``$WORKBENCH_RAY_WORKERS`` (one per GPU or per
        ``threads_per_worker`` CPUs), ``$WORKBENCH_RAY_THREADS`` (1) and
        ``$WORKBENCH_RAY_MAX_RETRIES`` (2).
    connect : bool
        Connect to the cluster now, so that a wrong address fails before the
        run starts and the run's environment snapshot lists the cluster.

    Returns
    -------
    InferenceExecutor or None
        ``None`` for ``local`` (the runner's default).

    Raises
    ------
    ValueError
        An unknown kind (with a did-you-mean hint) or a bad setting.
    InferenceError
        Ray is not installed or the cluster cannot be reached.
    """
    name = (kind or os.environ.get("WORKBENCH_EXECUTOR") or "local").strip().lower()
    if name not in EXECUTOR_KINDS:
        close = difflib.get_close_matches(name, EXECUTOR_KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"executor should be one of {list(EXECUTOR_KINDS)}. Found {kind!r}.{hint}")
    if name == "local":
        return None
    from workbench.inference.ray_executor import RayExecutor

    options: dict[str, Any] = {}
    workers = num_workers if num_workers is not None else _env_int("WORKBENCH_RAY_WORKERS")
    threads = (
        threads_per_worker if threads_per_worker is not None else _env_int("WORKBENCH_RAY_THREADS")
    )
    retries = max_retries if max_retries is not None else _env_int("WORKBENCH_RAY_MAX_RETRIES")
    if workers is not None:
        options["num_workers"] = workers
    if threads is not None:
        options["threads_per_worker"] = threads
    if retries is not None:
        options["max_retries"] = retries
    executor = RayExecutor(
        address=address or os.environ.get("WORKBENCH_RAY_ADDRESS") or None,
        storage=storage or os.environ.get("WORKBENCH_RAY_STORAGE") or "shared",
        **options,
    )
    if connect:
        executor.connect()
    return executor
