#!/usr/bin/env python3
"""The results page of the app for a 10,000-case run, timed through Streamlit's AppTest.

A seeded demo-like workdir (tests/app/_seed.py) gets one extra run of 10,000 cases whose
per-case rows and stored results are computed from synthetic per-case values with the
real statistics (``evaluate_endpoints``, ``supplementary_analysis``); no inference runs.
The page is then opened as a QA user (first load: cold caches) and one interaction is
made (another endpoint in the forest-plot selector). Baseline in the same run: the same
two steps on the seeded 6-case run. Budget: about one second per interaction.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from streamlit.testing.v1 import AppTest  # noqa: E402

# Streamlit warns about cached calls outside a script run (the seeding below); not a result.
logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
    lambda record: "missing ScriptRunContext" not in record.getMessage()
)

from tests.app._seed import ACCOUNTS, seed_workdir  # noqa: E402
from workbench.app import _session  # noqa: E402
from workbench.protocols import (  # noqa: E402
    CaseAccounting,
    RunContext,
    RunResults,
    evaluate_endpoints,
    load_protocol,
)
from workbench.protocols.supplementary import supplementary_analysis  # noqa: E402
from workbench.records.models import CaseResult, ProtocolVersion, Run, utcnow  # noqa: E402
from workbench.services import accounts  # noqa: E402
from workbench.services.context import Workbench, sha256_json  # noqa: E402

APP_MAIN = ROOT / "workbench" / "app" / "main.py"
N_CASES = 10_000


def big_run(wb: Workbench, template_uid: str) -> str:
    """Store a 10,000-case copy of a segmentation run with real statistics."""
    rng = np.random.default_rng(0)
    scanners = rng.choice(
        ["Kestrel Imaging", "Meridian Medical Systems", "Solace Healthcare"], N_CASES
    )
    frame = pd.DataFrame(
        {
            "case_id": [f"big{i:05d}" for i in range(N_CASES)],
            "status": "completed",
            "dice": np.clip(
                rng.beta(9, 2, N_CASES) - (scanners == "Solace Healthcare") * 0.3, 0, 1
            ),
            "hd95": rng.gamma(2.0, 1.3, N_CASES),
            "surface_dice": rng.beta(9, 1.5, N_CASES),
            "assd": rng.gamma(2.0, 0.5, N_CASES),
            "manufacturer": scanners,
            "patient_sex": rng.choice(["F", "M"], N_CASES),
            "patient_age_years": rng.integers(18, 90, N_CASES),
        }
    )
    with wb.transaction() as session:
        template = session.query(Run).filter(Run.run_uid == template_uid).one()
        pv = session.get(ProtocolVersion, template.protocol_version_id)
        assert pv is not None
        protocol = load_protocol(pv.yaml_text.encode("utf-8"))
        results = RunResults(
            run_uid="RUN-BIG",
            context=RunContext(
                protocol=f"{pv.protocol_id}@{pv.version}",
                protocol_sha256=pv.sha256,
                model="bench",
                model_digest="",
                test_set="bench",
                manifest_digest="",
            ),
            workbench_version="bench",
            surface_dice_tolerance_mm=2.0,
            accounting=CaseAccounting.from_frame(frame.assign(reason=None), n_cases=N_CASES),
            evaluation=evaluate_endpoints(protocol, frame),
            supplementary=supplementary_analysis(protocol, frame),
        ).to_dict()
        run = Run(
            run_uid=f"RUN-BIG{uuid.uuid4().hex[:8].upper()}",
            protocol_version_id=template.protocol_version_id,
            model_id=template.model_id,
            test_set_id=template.test_set_id,
            status="completed",
            started_by=template.started_by,
            started_at=utcnow(),
            finished_at=utcnow(),
            device="cpu",
            environment={},
            results=results,
            results_sha256=sha256_json(results),
            verdict="fail",
        )
        session.add(run)
        session.flush()
        rows = [
            {
                "run_id": run.id,
                "case_id": r["case_id"],
                "status": "completed",
                "score": None,
                "metrics": {k: float(r[k]) for k in ("dice", "hd95", "surface_dice", "assd")},
                "strata": {
                    "manufacturer": r["manufacturer"],
                    "patient_sex": r["patient_sex"],
                    "patient_age_years": int(r["patient_age_years"]),
                },
                "created_at": utcnow(),
            }
            for r in frame.to_dict("records")
        ]
        session.execute(insert(CaseResult), rows)
        return run.run_uid


def page_times(wb: Workbench, run_uid: str) -> tuple[float, float]:
    at = AppTest.from_file(str(APP_MAIN), default_timeout=300)
    _actor, token = accounts.open_session(wb, "qa.author", ACCOUNTS["qa.author"][2])
    at.session_state[_session.TOKEN_KEY] = token
    at.session_state[_session.USERNAME_KEY] = "qa.author"
    at.run()
    at.switch_page("pages/results.py")
    at.query_params["run"] = run_uid
    started = time.perf_counter()
    at.run()
    first = time.perf_counter() - started
    assert not at.exception, at.exception
    chooser = next(s for s in at.selectbox if s.label == "Endpoint")
    options = list(chooser.options)
    started = time.perf_counter()
    chooser.select(options[-1]).run()
    interaction = time.perf_counter() - started
    assert not at.exception, at.exception
    return first, interaction


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        seeded = seed_workdir(Path(folder) / "wd", n_cases=6)
        wb = Workbench.open(seeded.workdir)
        os.environ["WORKBENCH_HOME"] = str(seeded.workdir)
        small = seeded.run_uids["lesion-segmentation"]
        started = time.perf_counter()
        big = big_run(wb, small)
        print(f"stored a {N_CASES}-case run in {time.perf_counter() - started:.1f} s")
        small_first, small_click = page_times(wb, small)
        big_first, big_click = page_times(wb, big)
        wb.close()
    for label, first, click in (
        ("6 cases     ", small_first, small_click),
        (f"{N_CASES} cases", big_first, big_click),
    ):
        print(f"results page, {label}: first load {first:6.2f} s, interaction {click:6.2f} s")
    print(
        f"ratio 10,000 / 6 cases    : first load {big_first / small_first:5.2f}x, "
        f"interaction {big_click / small_click:5.2f}x   budget: ~1 s per interaction"
    )


if __name__ == "__main__":
    main()
