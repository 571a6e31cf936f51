from __future__ import annotations

import os
import sys
import threading
import time

import pytest
import torch

from workbench.inference.environment import (
    deterministic_mode,
    deterministic_settings,
    select_device,
    snapshot,
)
from workbench.inference.executor import (
    InferenceExecutor,
    InProcessExecutor,
    SerialExecutor,
    lower_thread_priority,
)


@pytest.mark.parametrize("executor", [SerialExecutor(), InProcessExecutor(prefetch=2)])
def test_results_come_in_case_order(executor) -> None:
    assert isinstance(executor, InferenceExecutor)

    def prepare(i: int) -> int:
        time.sleep(0.01 * (5 - i % 5))  # later cases finish loading first
        return i * 10

    assert list(executor.map_cases(lambda p: p + 1, range(12), prepare=prepare)) == [
        i * 10 + 1 for i in range(12)
    ]


def test_prefetch_overlaps_and_is_bounded() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def prepare(i: int) -> int:
        with lock:
            started.append(i)
        return i

    results = []
    for value in InProcessExecutor(prefetch=2).map_cases(lambda p: p, range(10), prepare=prepare):
        time.sleep(0.02)
        with lock:
            # never more than prefetch + 1 cases prepared beyond those already processed
            assert len(started) <= len(results) + 1 + 3
        results.append(value)
    assert results == list(range(10))


def test_prepare_error_is_raised_at_its_case() -> None:
    def prepare(i: int) -> int:
        if i == 3:
            raise RuntimeError("bad case")
        return i

    out = []
    with pytest.raises(RuntimeError, match="bad case"):
        for value in InProcessExecutor().map_cases(lambda p: p, range(6), prepare=prepare):
            out.append(value)
    assert out == [0, 1, 2]


def test_executor_options_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InProcessExecutor(prefetch=0)
    with pytest.raises(ValueError, match="background_niceness should be 0 to 19"):
        InProcessExecutor(background_niceness=20)


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is a Linux feature")
def test_loader_threads_run_below_the_callers_priority() -> None:
    caller = _niceness()
    seen: list[int] = []

    def prepare(i: int) -> int:
        seen.append(_niceness())
        return i

    executor = InProcessExecutor(background_niceness=5)
    assert list(executor.map_cases(lambda p: p, range(4), prepare=prepare)) == [0, 1, 2, 3]
    assert seen == [min(caller + 5, 19)] * 4
    assert _niceness() == caller  # the caller's thread keeps its priority
    seen.clear()
    list(InProcessExecutor(background_niceness=0).map_cases(lambda p: p, range(2), prepare=prepare))
    assert seen == [caller] * 2


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is a Linux feature")
def test_lower_thread_priority_changes_only_the_calling_thread() -> None:
    caller = _niceness()
    outcome: dict[str, object] = {}

    def work() -> None:
        outcome["changed"] = lower_thread_priority(3)
        outcome["niceness"] = _niceness()
        outcome["unchanged"] = lower_thread_priority(0)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert outcome == {"changed": True, "niceness": min(caller + 3, 19), "unchanged": False}
    assert _niceness() == caller


def test_device_and_snapshot() -> None:
    device = select_device()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="Expected a CUDA device"):
            select_device("cuda")
    info = snapshot("cpu")
    for key in ("python", "packages", "device", "cpu_model", "torch_threads", "deterministic"):
        assert key in info
    assert set(info["packages"]) >= {"torch", "monai", "numpy", "pydicom", "highdicom"}


def test_deterministic_mode_restores_settings() -> None:
    before = deterministic_settings()
    with deterministic_mode() as inside:
        assert inside["use_deterministic_algorithms"] is True
        assert inside["cudnn_benchmark"] is False
    assert deterministic_settings() == before
