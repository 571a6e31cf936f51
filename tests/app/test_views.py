"""The app's read models (``workbench.services.views``), blinding and cache keys."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS, TEST_SET, Seeded
from workbench.app import _cached
from workbench.errors import AuthenticationError, PermissionDeniedError
from workbench.records.models import CaseResult, Discrepancy, ProtocolVersion, Run
from workbench.services import accounts, views
from workbench.services.context import Actor, Workbench
from workbench.vocabulary import CaseStatus

APP_DIR = Path(__file__).resolve().parents[2] / "workbench" / "app"


def _actor(wb: Workbench, username: str) -> Actor:
    return accounts.login(wb, username, ACCOUNTS[username][2])


def _calls(seeded: Seeded) -> dict[str, Callable[[Workbench, Actor], object]]:
    seg = seeded.run_uids["lesion-segmentation"]
    return {
        "list_runs": lambda wb, a: views.list_runs(wb, a),
        "run_detail": lambda wb, a: views.run_detail(wb, a, seg),
        "results_refusal": lambda wb, a: views.results_refusal(wb, a, seg),
        "latest_quality": lambda wb, a: views.latest_quality(wb, a, TEST_SET),
        "series_demographics": lambda wb, a: views.series_demographics(wb, a, TEST_SET),
        "file_sha256s": lambda wb, a: views.file_sha256s(wb, a, []),
        "case_images": lambda wb, a: views.case_images(wb, a, seg, "case0002"),
        "list_test_sets": lambda wb, a: views.list_test_sets(wb, a),
        "list_models": lambda wb, a: views.list_models(wb, a),
        "list_protocols": lambda wb, a: views.list_protocols(wb, a),
        "list_reports": lambda wb, a: views.list_reports(wb, a),
        "protocol_diff": lambda wb, a: views.protocol_diff(
            wb, a, "lesion-segmentation@1", "lesion-segmentation@2"
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "list_runs",
        "run_detail",
        "results_refusal",
        "latest_quality",
        "series_demographics",
        "file_sha256s",
        "case_images",
        "list_test_sets",
        "list_models",
        "list_protocols",
        "list_reports",
        "protocol_diff",
    ],
)
def test_views_refuse_without_permission(name: str, seeded: Seeded, wb: Workbench) -> None:
    call = _calls(seeded)[name]
    # Administrators manage accounts only: no run.view.
    with pytest.raises(PermissionDeniedError, match="run.view"):
        call(wb, _actor(wb, "sysadmin"))
    # An actor that no sign-in issued is refused before any permission is looked at.
    with pytest.raises(AuthenticationError):
        call(wb, Actor("qa.author", "Quinn Avery (QA)", "qa"))
    # Every reader role may (the blinded reviewer's case images aside, tested below).
    for username in ("qa.author", "inspector"):
        call(wb, _actor(wb, username))


def test_account_must_change_password_needs_a_signed_in_actor(wb: Workbench) -> None:
    assert views.account_must_change_password(wb, _actor(wb, "sysadmin")) is False
    with pytest.raises(AuthenticationError):
        views.account_must_change_password(wb, Actor("sysadmin", "Ada Admin", "admin"))


def test_run_detail_hides_results_from_a_blinded_reviewer(seeded: Seeded, wb: Workbench) -> None:
    seg = seeded.run_uids["lesion-segmentation"]
    hidden = views.run_detail(wb, _actor(wb, "dr.reviewer"), seg)
    assert hidden.hidden_reason and "still to adjudicate" in hidden.hidden_reason
    assert hidden.summary.verdict is None and hidden.summary.results is None
    assert not hidden.summary.results_sha256 and not hidden.environment
    shown = views.run_detail(wb, _actor(wb, "inspector"), seg)
    assert shown.hidden_reason is None
    assert shown.summary.verdict is not None and shown.summary.results is not None
    assert shown.task == "segmentation" and shown.protocol_ref == "lesion-segmentation@1"
    assert shown.acceptance_thresholds and shown.started_by == "qa.author"
    listed = {r.summary.run_uid: r for r in views.list_runs(wb, _actor(wb, "dr.reviewer"))}
    assert listed[seg].hidden and listed[seg].summary.verdict is None
    with pytest.raises(PermissionDeniedError, match="still to adjudicate"):
        views.case_images(wb, _actor(wb, "dr.reviewer"), seg, "case0002")


def test_case_images_come_from_the_case_record(seeded: Seeded, wb: Workbench) -> None:
    seg = seeded.run_uids["lesion-segmentation"]
    images = views.case_images(wb, _actor(wb, "qa.author"), seg, "case0002")
    with wb.transaction(readonly=True) as session:
        run = session.scalars(select(Run).where(Run.run_uid == seg)).one()
        stored = session.scalars(
            select(CaseResult).where(CaseResult.run_id == run.id, CaseResult.case_id == "case0002")
        ).one()
        assert images.series_instance_uid == stored.strata["series_instance_uid"]
    assert images.status is CaseStatus(stored.status)
    assert images.ct_paths and all(Path(p).is_file() for p in images.ct_paths)
    assert images.reference_segs and images.reference_rule == "majority"
    recorded = views.file_sha256s(wb, _actor(wb, "inspector"), images.ct_paths)
    assert set(recorded) == set(images.ct_paths)


def test_case_series_of_a_run_stored_without_it_comes_from_the_case_frame(
    seeded: Seeded, wb: Workbench
) -> None:
    from workbench.services.protocols import parsed_protocol
    from workbench.services.views import _series_uid

    seg = seeded.run_uids["lesion-segmentation"]
    with wb.transaction(readonly=True) as session:
        run = session.scalars(select(Run).where(Run.run_uid == seg)).one()
        stored = session.scalars(
            select(CaseResult).where(CaseResult.run_id == run.id, CaseResult.case_id == "case0002")
        ).one()
        protocol = parsed_protocol(session.get(ProtocolVersion, run.protocol_version_id))
        # As release 0.1 stored it: no series UID among the case's attributes.
        earlier = CaseResult(run_id=run.id, case_id="case0002", status="completed", strata={})
        assert _series_uid(session, run, earlier, protocol) == stored.strata["series_instance_uid"]


def _page_text(at: AppTest) -> str:
    parts: list[str] = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "text", "code"):
        parts += [str(e.value) for e in at.get(kind)]
    for metric in at.metric:
        parts += [str(metric.label), str(metric.value)]
    for frame in at.dataframe:
        parts.append(frame.value.to_csv(index=False))
    for kind in ("selectbox", "radio"):
        for widget in at.get(kind):
            parts += [str(o) for o in widget.options]
    return "\n".join(parts)


def test_blinded_reviewer_never_sees_the_finding_or_the_score(
    app: Callable[..., AppTest], seeded: Seeded, wb: Workbench
) -> None:
    run_uid = seeded.run_uids["malignancy-classification"]
    with wb.transaction(readonly=True) as session:
        run = session.scalars(select(Run).where(Run.run_uid == run_uid)).one()
        stored = {
            d.id: dict(d.details or {})
            for d in session.scalars(select(Discrepancy).where(Discrepancy.run_id == run.id))
        }
    assert stored, "the seeded classification run has discrepancies"
    at = AppTest.from_file(str(APP_DIR / "main.py"), default_timeout=60)
    from tests.app.conftest import sign_in

    sign_in(at, wb, "dr.reviewer")
    at.query_params["run"] = run_uid
    at.run()
    at.switch_page("pages/adjudication.py").run()
    assert not at.exception, at.exception
    at.toggle(key="adj-all").set_value(True).run()
    for discrepancy_id, details in stored.items():
        at.selectbox(key="adj-item").set_value(discrepancy_id).run()
        assert not at.exception, at.exception
        text = _page_text(at)
        assert "A says" in text, "the blinded case is shown"
        finding = str(details.get("finding", ""))
        assert finding and finding not in text
        assert "model decision" not in text
        score = details.get("score")
        if score is not None:
            assert repr(float(score)) not in text
            assert f"score {float(score):.4g}" not in text
            assert f"score {float(score):.3f}" not in text


def test_app_reaches_data_only_through_services() -> None:
    assert not (APP_DIR / "_data.py").exists()
    for path in APP_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = []
            for name in names:
                assert not name.startswith(("workbench.records", "sqlalchemy")), (path, name)
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                assert "AttributeError" not in ast.unparse(node.type), path
    adjudication_page = (APP_DIR / "pages" / "adjudication.py").read_text(encoding="utf-8")
    assert "adjudication.open_case(" in adjudication_page


def test_results_cache_is_keyed_by_the_actor_and_the_results_hash(
    seeded: Seeded, wb: Workbench
) -> None:
    keyed = inspect.signature(_cached._run_results).parameters
    assert {"database", "run_uid", "results_sha256", "actor"} <= set(keyed)
    # Only the shared handle is left out of the key (a leading underscore).
    assert [name for name in keyed if name.startswith("_")] == ["_wb"]

    seg = seeded.run_uids["lesion-segmentation"]
    qa = _actor(wb, "qa.author")
    sha = views.run_detail(wb, qa, seg).summary.results_sha256
    assert sha
    results, frame = _cached.run_results(wb, qa, seg, sha)
    assert results.endpoints and len(frame)
    # Same run and hash, another user: their own permission check runs, never qa's entry.
    with pytest.raises(PermissionDeniedError, match="still to adjudicate"):
        _cached.run_results(wb, _actor(wb, "dr.reviewer"), seg, sha)


def test_results_page_differs_by_who_is_looking(
    app: Callable[..., AppTest], seeded: Seeded
) -> None:
    run_uid = seeded.run_uids["lesion-segmentation"]
    qa = app("qa.author")
    qa.query_params["run"] = run_uid
    qa.switch_page("pages/results.py").run()
    assert not qa.exception, qa.exception
    assert qa.get("plotly_chart")
    assert any("Verdict" in str(m.value) for m in [*qa.success, *qa.error, *qa.warning])

    reviewer = app("dr.reviewer")
    reviewer.query_params["run"] = run_uid
    reviewer.switch_page("pages/results.py").run()
    assert not reviewer.exception, reviewer.exception
    assert any("still to adjudicate" in w.value for w in reviewer.warning)
    assert not reviewer.get("plotly_chart") and not reviewer.dataframe


def test_results_page_renders_typed_results(app: Callable[..., AppTest], seeded: Seeded) -> None:
    at = app("inspector")
    at.query_params["run"] = seeded.run_uids["malignancy-classification"]
    at.switch_page("pages/results.py").run()
    assert not at.exception, at.exception
    endpoints = at.dataframe[0].value
    assert set(endpoints["verdict"]) <= {"PASS", "FAIL", "NOT EVALUABLE"}
    for _, row in endpoints.iterrows():
        if row["verdict"] == "NOT EVALUABLE":
            assert row["reason"]
    assert "ROC" in [t.label for t in at.tabs]
