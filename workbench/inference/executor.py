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

Scaling out needs no change to the runner; a Ray executor is a class with the
same method::

    import ray

    class RayExecutor:
        '''Fan cases out over a Ray cluster; results still come back in case order.'''

        def __init__(self, *, num_gpus: float = 0.25, max_in_flight: int = 64) -> None:
            self.num_gpus = num_gpus
            self.max_in_flight = max_in_flight

        def map_cases(self, process, cases, *, prepare=None):
            @ray.remote(num_gpus=self.num_gpus)
            def one(case):
                # ``process`` pickles without its torch module; on first use on a
                # worker it reloads the model from its path and re-verifies the
                # registered SHA-256 of every file (CaseProcessor.__setstate__).
                return process(prepare(case) if prepare is not None else case)

            cases = list(cases)
            refs = [one.remote(c) for c in cases[: self.max_in_flight]]
            for i in range(len(cases)):
                result = ray.get(refs[i])                 # wait in case order
                if i + self.max_in_flight < len(cases):   # keep the pipeline full
                    refs.append(one.remote(cases[i + self.max_in_flight]))
                yield result

    run_inference(cases, model, spec, out_dir=..., executor=RayExecutor())

The output folder must then be on storage the workers share; every output's
file name and DICOM UIDs depend only on the model digest and the case id, so
retries and resumes on other nodes write identical files.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = [
    "BACKGROUND_NICENESS",
    "InferenceExecutor",
    "InProcessExecutor",
    "SerialExecutor",
    "lower_thread_priority",
]

#: Niceness of the reader and writer threads of a run (0 = same as the caller).
BACKGROUND_NICENESS = 19


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> bool:
    """Lower the scheduling priority of the calling thread (Linux only).

    Parameters
    ----------
    niceness : int
        Value added to the thread's nice value, 0 to 19; 0 leaves it alone.

    Returns
    -------
    bool
        Whether the priority was changed. Elsewhere than on Linux (where
        ``setpriority`` applies to a thread id), or where the call is refused,
        the thread keeps its priority and ``False`` is returned.
    """
    if niceness <= 0 or sys.platform != "linux":
        return False
    try:
        thread_id = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(current + niceness, 19))
    except OSError:
        return False
    return True


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
