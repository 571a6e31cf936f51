"""Subprocess of the kill-and-resume test: runs inference, one completion marker per case.

Usage: python resume_worker.py TEST_SET MODEL OUT_DIR MARKERS HANG_AFTER

Each finished case is recorded atomically as MARKERS/<case_id>.json (written to
a temporary name, then renamed). Cases with a marker are passed as
``completed``. With HANG_AFTER = n >= 1 the worker stops after the n-th new
case and waits to be killed (after touching MARKERS/.hanging).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from inference_fixtures import tiny_spec  # noqa: E402

from workbench.inference.loading import load_model  # noqa: E402
from workbench.inference.runner import CaseOutput, cases_from_test_set, run_inference  # noqa: E402


def main() -> None:
    test_set, model_path, out_dir, markers_arg, hang_arg = sys.argv[1:6]
    torch.set_num_threads(1)
    markers = Path(markers_arg)
    markers.mkdir(parents=True, exist_ok=True)
    hang_after = int(hang_arg)
    done = {p.stem for p in markers.glob("*.json")}
    spec = tiny_spec()
    model = load_model(model_path, spec, "cpu")
    finished = 0

    def on_case(output: CaseOutput) -> None:
        nonlocal finished
        partial = markers / f".{output.case_id}.json.partial"
        partial.write_text(json.dumps(output.to_dict(), sort_keys=True))
        os.replace(partial, markers / f"{output.case_id}.json")
        finished += 1
        if finished == hang_after:
            (markers / ".hanging").touch()
            time.sleep(600)

    run_inference(
        cases_from_test_set(test_set), model, spec, out_dir=out_dir, completed=done, on_case=on_case
    )


if __name__ == "__main__":
    main()
