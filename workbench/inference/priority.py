"""Thread priority for the background work of inference (readers, writers, workers).

The forward pass runs as one OpenMP team on every core; a reader thread that
preempts one team thread stalls the whole team at the next barrier. At a low
priority the readers and writers use the moments the team leaves free.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["BACKGROUND_NICENESS", "lower_thread_priority"]

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
