"""Every page as every role: no exception; forbidden pages absent, forbidden actions absent."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from streamlit.testing.v1 import AppTest

from tests.app._seed import ROLE_USERS, Seeded
from workbench.app._nav import PAGES

#: (page, widget key) pairs that only roles with the action may see.
GUARDED_WIDGETS = {
    ("pages/test_sets.py", "verify-ts"): "testset.verify",
    ("pages/models.py", "verify-model"): "run.view",
}


@pytest.mark.parametrize("role", sorted(ROLE_USERS))
def test_every_page_as_every_role(role: str, app: Callable[..., AppTest], seeded: Seeded) -> None:
    at = app(ROLE_USERS[role])
    assert not at.exception, at.exception
    for page in PAGES:
        if page.visible_to(role):
            at.switch_page(page.path).run()
            assert not at.exception, (role, page.key, at.exception)
        else:
            # Not registered for this role: refused, or the router falls back to another page.
            try:
                at.switch_page(page.path)
            except ValueError:
                continue
            at.run()
            assert not at.exception
            assert any("not available to the role" in e.value for e in at.error), (role, page.key)
            assert not at.dataframe and not at.get("plotly_chart")


def _labels(at: AppTest) -> set[str]:
    found = {str(e.label) for e in at.get("expandable")}
    found |= {str(b.label) for b in at.button}
    return found


def test_forbidden_actions_are_absent(app: Callable[..., AppTest]) -> None:
    at = app(ROLE_USERS["auditor"])
    at.switch_page("pages/test_sets.py").run()
    assert not any("Import" in label for label in _labels(at))
    assert not any("Lock" in label for label in _labels(at))
    # Auditors verify locked test sets (testset.verify) but cannot import or lock.
    assert [b for b in at.button if b.key == "verify-ts"]
    at.switch_page("pages/runs.py").run()
    assert not any("Start a run" in label for label in _labels(at))
    at.switch_page("pages/reports.py").run()
    assert not any("Build a report" in label for label in _labels(at))
    assert not at.get("radio") or all(r.key != "sign-meaning" for r in at.radio)
    at.switch_page("pages/audit.py").run()
    assert [b for b in at.button if b.key == "prepare-export"]

    qa = app(ROLE_USERS["qa"])
    qa.switch_page("pages/audit.py").run()
    assert not [b for b in qa.button if b.key == "prepare-export"]  # audit.export: auditors only


def test_reviewer_cannot_see_results_of_run_with_open_items(
    app: Callable[..., AppTest], seeded: Seeded
) -> None:
    run_uid = seeded.run_uids["lesion-segmentation"]
    at = app(ROLE_USERS["reviewer"])
    at.query_params["run"] = run_uid
    at.switch_page("pages/results.py").run()
    assert not at.exception
    assert any("still to adjudicate" in w.value for w in at.warning)
    assert not at.get("plotly_chart")
    at.query_params["case"] = "x"
    at.switch_page("pages/case_viewer.py").run()
    assert any("still to adjudicate" in w.value for w in at.warning)
    assert not at.get("image")
    at.switch_page("pages/runs.py").run()
    table = at.dataframe[0].value
    assert (table.loc[table["run"] == run_uid, "verdict"] == "hidden until adjudicated").all()

    qa = app(ROLE_USERS["qa"])
    qa.query_params["run"] = run_uid
    qa.switch_page("pages/results.py").run()
    assert not qa.exception
    assert qa.get("plotly_chart")
