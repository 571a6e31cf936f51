from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from inference_fixtures import tiny_spec

from workbench.inference.loading import load_model
from workbench.inference.runner import SEG_FILENAME, cases_from_test_set, run_inference

WORKER = Path(__file__).with_name("resume_worker.py")


def _worker(test_set: Path, model: Path, out: Path, markers: Path, hang_after: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(test_set), str(model), str(out), str(markers), str(hang_after)]
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=env)


@pytest.mark.slow
def test_kill_and_resume_gives_identical_outputs(
    tiny_test_set: Path, model_dir: Path, tmp_path: Path
) -> None:
    model = model_dir / "threshold.ts"
    out, markers = tmp_path / "interrupted", tmp_path / "markers"
    process = _worker(tiny_test_set, model, out, markers, hang_after=2)
    deadline = time.monotonic() + 120
    while not (markers / ".hanging").exists():
        assert process.poll() is None, "worker exited before it was killed"
        assert time.monotonic() < deadline, "worker did not reach the kill point"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    first_part = sorted(p.stem for p in markers.glob("*.json"))
    assert len(first_part) == 2

    resumed = _worker(tiny_test_set, model, out, markers, hang_after=-1)
    assert resumed.wait(timeout=120) == 0
    ids = [c.case_id for c in cases_from_test_set(tiny_test_set)]
    assert sorted(p.stem for p in markers.glob("*.json")) == ids

    spec = tiny_spec()
    reference = run_inference(
        cases_from_test_set(tiny_test_set),
        load_model(model, spec, "cpu"),
        spec,
        out_dir=tmp_path / "uninterrupted",
    )
    for output in reference.outputs:
        recorded = json.loads((markers / f"{output.case_id}.json").read_text())
        resumed_seg = out / "cases" / output.case_id / SEG_FILENAME
        assert resumed_seg.read_bytes() == output.mask_path.read_bytes()
        assert recorded["seg_sha256"] == output.seg_sha256
        assert recorded["mask_sha256"] == output.mask_sha256
        assert recorded["score"] == output.score
    assert not list(out.rglob("*.partial"))
