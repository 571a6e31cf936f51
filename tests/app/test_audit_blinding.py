"""The Audit trail page as a clinical reviewer while a run's adjudication is open.

The reviewer must not learn the run's outcome from the trail: the page shows the
verdict, its reason, the results hashes and every case's score redacted, where
an auditor on the same page sees the stored values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS, Seeded
from workbench.records import audit
from workbench.services import accounts, adjudication
from workbench.services.context import Workbench


def _trail(app: Callable[..., AppTest], user: str) -> list[dict[str, Any]]:
    at = app(user)
    at.switch_page("pages/audit.py").run()
    assert not at.exception, at.exception
    frame = at.dataframe[-1].value
    return [
        {**row, "new": json.loads(row["new"]) if row["new"] else None}
        for row in frame.to_dict(orient="records")
    ]


def _outcome(rows: list[dict[str, Any]], run_uid: str) -> tuple[dict[str, Any], list[Any]]:
    [complete] = [
        r["new"] for r in rows if r["action"] == "run.complete" and r["record id"] == run_uid
    ]
    scores = [
        r["new"]["score"]
        for r in rows
        if r["action"] == "case.record" and str(r["record id"]).startswith(run_uid + "/")
    ]
    return complete, scores


def test_reviewer_with_an_open_adjudication_sees_no_outcome_on_the_audit_page(
    app: Callable[..., AppTest], seeded: Seeded, wb: Workbench
) -> None:
    run_uid = seeded.run_uids["lesion-segmentation"]
    reviewer = accounts.login(wb, "dr.reviewer", ACCOUNTS["dr.reviewer"][2])
    assert any(i.status == "open" for i in adjudication.queue(wb, reviewer, run_uid))

    stored, stored_scores = _outcome(_trail(app, "inspector"), run_uid)
    assert stored["verdict"] in ("pass", "fail", "not_evaluable")
    assert stored_scores and audit.REDACTED not in stored_scores

    rows = _trail(app, "dr.reviewer")
    shown, scores = _outcome(rows, run_uid)
    for field in ("verdict", "verdict_reason", "results_sha256"):
        assert shown[field] == audit.REDACTED, field
    assert len(scores) == len(stored_scores) and set(scores) == {audit.REDACTED}
    page_text = json.dumps(rows, ensure_ascii=False, default=str)
    secrets = [stored["results_sha256"], stored.get("verdict_reason")]
    assert [s for s in secrets if s and s in page_text] == []
