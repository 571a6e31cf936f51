"""Faults of a validation on a real Ray cluster: a node lost, a driver killed, a worker
killed as the out-of-memory killer does.

Each test runs ``runs.validate`` in a driver process of its own (the script below,
whose forward pass first waits, so that faults land mid-case) against a cluster that
this module starts with ``scripts/ray_test_cluster.sh`` (a two-CPU head that accepts
worker nodes); the node-loss test adds a second node with ``ray start --address`` and
kills that node's processes (raylet, workers, agents) while one of its workers runs a
case. Afterwards the
database must hold every case exactly once and the audit chain must verify.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_MALFORMED = Path(__file__).resolve().parents[1] / "malformed"
if str(_MALFORMED) not in sys.path:
    sys.path.insert(0, str(_MALFORMED))

import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RAY_CLI = Path(sys.executable).with_name("ray")
N_CASES = 6

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        # Ray itself runs in the drivers and nodes this module starts, never in this
        # process, whose Ray settings (loopback, test_ray_executor.py) stay untouched.
        importlib.util.find_spec("ray") is None or not RAY_CLI.exists(),
        reason="needs the 'ray' package and its command line (pip install '.[ray]')",
    ),
]

#: The driver: ``runs.validate`` on the cluster, with a forward pass that waits
#: FAULT_WAIT_S and a worker that kills itself (SIGKILL, as the kernel's out-of-memory
#: killer does) whenever it is given case FAULT_KILL_CASE. Progress lines go to
#: FAULT_PROGRESS; the summary is printed as JSON.
DRIVER = """
import json, os, signal, sys, time
from pathlib import Path

sys.path.insert(0, os.environ["FAULT_HARNESS_DIR"])
import harness
from workbench.inference import runner as runner_module
from workbench.inference.ray_executor import RayExecutor
from workbench.services import runs

WAIT_S = float(os.environ["FAULT_WAIT_S"])
KILL_CASE = os.environ.get("FAULT_KILL_CASE", "")
PROGRESS = Path(os.environ["FAULT_PROGRESS"])


class FaultyProcessor(runner_module.CaseProcessor):
    def compute(self, prepared):
        if prepared.case.case_id == KILL_CASE:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(WAIT_S)
        return super().compute(prepared)


runner_module.CaseProcessor = FaultyProcessor


def progress(done, total, message):
    with PROGRESS.open("a") as handle:
        handle.write(f"{done}\\t{total}\\t{message}\\n")


wb = harness.open_wb(Path(sys.argv[1]))
executor = RayExecutor(
    address=os.environ["FAULT_RAY_ADDRESS"],
    num_workers=int(os.environ["FAULT_WORKERS"]),
    threads_per_worker=1,
    max_retries=2,
)
try:
    summary = runs.validate(
        wb,
        harness.login(wb, "qa1"),
        protocol=os.environ["FAULT_PROTOCOL"],
        model=os.environ["FAULT_MODEL"],
        test_set=harness.TEST_SET,
        device="cpu",
        executor=executor,
        progress=progress,
    )
    print(json.dumps({
        "run_uid": summary.run_uid,
        "status": summary.status,
        "n_completed": summary.n_completed,
        "workers_lost": executor.workers_lost,
        "retries": executor.retries,
    }))
finally:
    executor.close()
    wb.close()
"""


@dataclass(frozen=True)
class Cluster:
    address: str
    temp: Path

    @property
    def pgid(self) -> int:
        """Process group of the head's ``ray start`` (its workers are descendants)."""
        return int((self.temp / "ray-start.pid").read_text())


def _ray_env(**extra: str) -> dict[str, str]:
    env = harness.env(RAY_AUTH_MODE="disabled", **extra)
    # A multi-node cluster: Ray must not keep to loopback (see scripts/ray_test_cluster.sh).
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def head() -> Iterator[Cluster]:
    """A two-CPU head that accepts worker nodes, stopped after the module."""
    started = subprocess.run(
        ["bash", str(REPO / "scripts" / "ray_test_cluster.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=180,
        env=_ray_env(WORKBENCH_TEST_RAY_MULTINODE="1", WORKBENCH_TEST_RAY_CPUS="2"),
    )
    if started.returncode != 0:
        pytest.fail(f"the Ray head did not start: {started.stderr[-2000:]}")
    address, temp = started.stdout.split()[:2]
    yield Cluster(address, Path(temp))
    subprocess.run(
        ["bash", str(REPO / "scripts" / "ray_test_cluster.sh"), "stop", temp],
        capture_output=True,
        timeout=120,
        env=_ray_env(),
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> harness.Pipeline:
    """A workbench with a locked six-case test set, a model and an approved protocol."""
    return harness.build(
        tmp_path_factory.mktemp("ray-faults") / "wb", stage="protocol", n_cases=N_CASES
    )


def _driver(
    pipe: harness.Pipeline,
    cluster: Cluster,
    progress: Path,
    *,
    workers: int,
    wait_s: float = 2.0,
    **extra: str,
) -> subprocess.Popen[str]:
    script = progress.with_name("driver.py")
    script.write_text(DRIVER)
    env = _ray_env(
        FAULT_HARNESS_DIR=str(_MALFORMED),
        FAULT_RAY_ADDRESS=cluster.address,
        FAULT_WORKERS=str(workers),
        FAULT_PROTOCOL=pipe.protocol_ref,
        FAULT_MODEL=pipe.model_ref,
        FAULT_PROGRESS=str(progress),
        FAULT_WAIT_S=str(wait_s),
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, str(script), str(pipe.workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def _finish(driver: subprocess.Popen[str], timeout: float = 400) -> dict[str, Any]:
    out, err = driver.communicate(timeout=timeout)
    assert driver.returncode == 0, err[-4000:]
    # Ray's own processes may log to the driver's stdout after the result line.
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise AssertionError(f"the driver printed no result: {out[-4000:]}")


def _progress(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line]


def _wait_for(condition: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _processes(pgid: int, title_prefix: str = "") -> list[int]:
    """Processes of one Ray node: those of the process group its ``ray start`` leads and
    their descendants (Ray starts each worker in a process group of its own, as a child
    of the node's raylet), whose command line starts with ``title_prefix`` (Ray names a
    worker process after the actor method it runs)."""
    parent: dict[int, int] = {}
    command: dict[int, str] = {}
    members: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command[pid] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        parent[pid] = int(fields[1])
        if int(fields[2]) == pgid:
            members.add(pid)
    found = []
    for pid in command:
        ancestor = pid
        while ancestor > 1 and ancestor not in members:
            ancestor = parent.get(ancestor, 0)
        if ancestor in members and command[pid].startswith(title_prefix):
            found.append(pid)
    return found


def _kill_node(pgid: int) -> None:
    """SIGKILL every process of the node at once, as when its machine goes down."""
    for pid in _processes(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _case_rows(workdir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each run's case records, by run uid, sorted by case id."""
    from sqlalchemy import select

    from workbench.records.models import Run
    from workbench.services import runs

    wb = harness.open_wb(workdir)
    try:
        with wb.transaction(readonly=True) as session:
            rows = {}
            for run in session.scalars(select(Run)).all():
                frame = runs.case_frame(session, run.id)
                columns = ["case_id", "status", "reason", "score", "mask_sha256"]
                rows[run.run_uid] = frame[columns].sort_values("case_id").to_dict(orient="records")
    finally:
        wb.close()
    return rows


def _recorded_once(rows: list[dict[str, Any]]) -> bool:
    return len(rows) == N_CASES and set(Counter(r["case_id"] for r in rows).values()) == {1}


def test_node_lost_mid_case_its_cases_run_elsewhere_once(
    head: Cluster, pipeline: harness.Pipeline, tmp_path: Path
) -> None:
    """A second node joins; four workers (two per node) run the validation; the second
    node's process group is killed while one of its workers runs a case. Its cases are
    retried on the head's workers and every case is stored exactly once, with the
    scores and masks of a local run."""
    node_log = tmp_path / "node.log"
    with node_log.open("w") as log:
        node = subprocess.Popen(
            [str(RAY_CLI), "start", f"--address={head.address}", "--block", "--num-cpus=2"]
            + ["--num-gpus=0", "--disable-usage-stats"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_ray_env(),
            start_new_session=True,  # its own process group, killed below
        )
    try:
        _wait_for(lambda: "Ray runtime started" in node_log.read_text(), "the second node")
        pipe = harness.copy_workdir(pipeline, tmp_path / "wb")
        progress = tmp_path / "progress.tsv"
        # Long cases: the second node's workers start later than the head's, and must
        # be running a case when the node goes.
        driver = _driver(pipe, head, progress, workers=4, wait_s=6.0)
        _wait_for(
            lambda: bool(_processes(node.pid, "ray::_CaseWorker.run")) or driver.poll() is not None,
            "a case running on the second node",
        )
        assert driver.poll() is None, driver.communicate()[1][-4000:]
        _kill_node(node.pid)
        node.wait(timeout=30)
        result = _finish(driver)
    finally:
        _kill_node(node.pid)
    assert result["status"] == "completed" and result["n_completed"] == N_CASES
    assert result["workers_lost"] >= 1 and result["retries"] >= 1
    assert [int(line[0]) for line in _progress(progress)] == list(range(N_CASES + 1))

    from workbench.services import runs

    wb = harness.open_wb(pipe.workdir)
    try:
        local = runs.validate(
            wb,
            harness.login(wb, "qa1"),
            protocol=pipe.protocol_ref,
            model=pipe.model_ref,
            test_set=harness.TEST_SET,
            device="cpu",
        )
    finally:
        wb.close()
    rows = _case_rows(pipe.workdir)
    assert _recorded_once(rows[result["run_uid"]])
    assert rows[result["run_uid"]] == rows[local.run_uid]
    assert harness.verify_chain(pipe.workdir).count > 0  # raises on any broken entry


def test_driver_killed_mid_run_resumes_with_validate(
    head: Cluster, pipeline: harness.Pipeline, tmp_path: Path
) -> None:
    """The driver is killed (SIGKILL) after two cases are stored: its workers go with it;
    running validate again resumes the same run, and every case is stored once."""
    pipe = harness.copy_workdir(pipeline, tmp_path / "wb")
    progress = tmp_path / "progress.tsv"
    driver = _driver(pipe, head, progress, workers=2)
    _wait_for(
        lambda: any(int(line[0]) >= 2 for line in _progress(progress)) or driver.poll() is not None,
        "two cases stored",
    )
    assert driver.poll() is None, driver.communicate()[1][-4000:]
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    stored = max(int(line[0]) for line in _progress(progress))
    assert 2 <= stored < N_CASES
    # The actors belong to the driver: the cluster ends them.
    _wait_for(
        lambda: not _processes(head.pgid, "ray::_CaseWorker"),
        "the dead driver's workers to end",
        120,
    )

    resumed_progress = tmp_path / "resumed.tsv"
    result = _finish(_driver(pipe, head, resumed_progress, workers=2))
    lines = _progress(resumed_progress)
    already = int(lines[0][2].split()[0])
    assert already >= stored and lines[0][2].endswith(f"{N_CASES - already} to run")
    assert int(lines[-1][0]) == N_CASES
    assert result["status"] == "completed" and result["n_completed"] == N_CASES
    rows = _case_rows(pipe.workdir)
    assert list(rows) == [result["run_uid"]]  # the interrupted run, resumed: no second run
    assert _recorded_once(rows[result["run_uid"]])
    assert all(r["status"] == "completed" for r in rows[result["run_uid"]])
    assert harness.verify_chain(pipe.workdir).count > 0


def test_worker_killed_for_memory_is_retried_then_recorded_failed(
    head: Cluster, pipeline: harness.Pipeline, tmp_path: Path
) -> None:
    """Every worker that gets one case dies of SIGKILL, as the out-of-memory killer
    kills a process: the case is tried 1 + max_retries (2) times on fresh workers,
    then recorded as failed with the reason; the other cases complete, each once."""
    pipe = harness.copy_workdir(pipeline, tmp_path / "wb")
    cases = sorted(p.name for p in (pipe.test_set_root / "cases").iterdir())
    doomed = cases[1]
    result = _finish(
        _driver(pipe, head, tmp_path / "progress.tsv", workers=2, FAULT_KILL_CASE=doomed)
    )
    assert result["status"] == "completed" and result["n_completed"] == N_CASES - 1
    # Three workers die with the case. On a loaded machine a replacement may also be lost
    # while it starts, and another case queued on a killed worker is tried again too: the
    # doomed case's own tries are the reason's count below (1 + max_retries), and every
    # other case is recorded once.
    assert result["workers_lost"] >= 3 and result["retries"] >= 2
    rows = _case_rows(pipe.workdir)[result["run_uid"]]
    assert _recorded_once(rows)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["case_id"] for r in failed] == [doomed]
    reason = failed[0]["reason"]
    assert reason.startswith("worker lost: the case was tried 3 time(s) (max_retries=2)")
    assert "ActorDiedError" in reason or "RayActorError" in reason
    assert harness.verify_chain(pipe.workdir).count > 0
