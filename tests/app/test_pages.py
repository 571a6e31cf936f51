"""One AppTest per page with the seeded state."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS, Seeded
from workbench.services import adjudication, reports
from workbench.services.context import Workbench


def _messages(at: AppTest) -> str:
    return "\n".join(
        str(e.value) for kind in ("error", "warning", "success", "info") for e in getattr(at, kind)
    )


def _open(app: Callable[..., AppTest], user: str, page: str, **query: str) -> AppTest:
    at = app(user)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_overview(app: Callable[..., AppTest]) -> None:
    at = _open(app, "qa.author", "pages/overview.py")
    assert [m.value for m in at.metric][:1] == ["1"]  # one test set
    reviewer = _open(app, "dr.reviewer", "pages/overview.py")
    assert "Waiting for adjudication" in [h.value for h in reviewer.subheader]


def test_test_sets_summary_and_verify(app: Callable[..., AppTest]) -> None:
    at = _open(app, "qa.author", "pages/test_sets.py")
    assert at.dataframe[0].value["status"].tolist() == ["locked"]
    assert len(at.get("plotly_chart")) == 3  # scanner, sex, age
    at.button(key="verify-ts").click().run()
    assert "Intact" in _messages(at)


def test_models_card_and_hashes(app: Callable[..., AppTest]) -> None:
    at = _open(app, "inspector", "pages/models.py")
    assert set(at.dataframe[0].value["model"]) == {"tiny-seg@1.0", "tiny-cls@1.0"}
    at.button(key="verify-model").click().run()
    assert "match the hashes" in _messages(at)


def test_protocols_versions_and_diff(app: Callable[..., AppTest]) -> None:
    at = _open(app, "qa.author", "pages/protocols.py")
    table = at.dataframe[0].value
    assert "superseded" in set(table["status"]) and "approved" in set(table["status"])
    at.selectbox(key="protocol-choice").set_value("lesion-segmentation").run()
    codes = [c.value for c in at.code]
    assert any("+  readers_per_case: 2" in c for c in codes)


def test_runs_start_with_progress(app: Callable[..., AppTest], seeded: Seeded) -> None:
    at = _open(app, "qa.author", "pages/runs.py")
    before = len(at.dataframe[0].value)
    at.selectbox[0].select("malignancy-classification@1")
    at.selectbox[1].select("tiny-cls@1.0")
    at.button[1].click().run(timeout=300) if False else None
    submit = next(b for b in at.button if "Start validation" in str(b.label))
    submit.click().run(timeout=300)
    assert not at.exception
    assert "completed" in _messages(at)
    assert at.get("progress")
    at.run()
    assert len(at.dataframe[0].value) == before + 1


def test_results_plots_and_case_table(app: Callable[..., AppTest], seeded: Seeded) -> None:
    seg = _open(app, "qa.author", "pages/results.py", run=seeded.run_uids["lesion-segmentation"])
    assert seg.get("plotly_chart")  # forest plots and the Dice distribution
    cases = seg.dataframe[-1].value
    assert {"case_id", "dice", "manufacturer"} <= set(cases.columns)
    cls = _open(
        app, "inspector", "pages/results.py", run=seeded.run_uids["malignancy-classification"]
    )
    tabs = [t.label for t in cls.tabs]
    assert "ROC" in tabs
    assert "Calibration and decision curve" in tabs
    tables = {}
    for key in ("calib-table", "decision-table"):
        try:
            tables[key] = cls.dataframe(key=key).value
        except KeyError:
            pass
    notes = " ".join(str(i.value) for i in cls.info)
    # Each analysis shows its table, or says why it could not be estimated.
    if "calib-table" in tables:
        calibration = tables["calib-table"]
        assert calibration["stratum"].iloc[0] == "overall"
        assert {"intercept", "slope", "brier", "ece"} <= set(calibration.columns)
    else:
        assert "Calibration:" in notes, notes
    if "decision-table" in tables:  # only when the protocol asks for a decision curve
        decision = tables["decision-table"]
        assert {"model net benefit", "treat all", "interventions avoided per 100"} <= set(
            decision.columns
        )
        assert (decision["judged here"] == "yes").sum() == 1
    # (the seeded protocol asks for no decision curve: tests/app/test_decision_table.py)
    assert not cls.exception


def test_case_viewer_renders_slice(app: Callable[..., AppTest], seeded: Seeded) -> None:
    at = _open(
        app,
        "qa.author",
        "pages/case_viewer.py",
        run=seeded.run_uids["lesion-segmentation"],
        case="case0002",
    )
    assert at.get("image")
    slider = at.slider(key=f"case-{seeded.run_uids['lesion-segmentation']}-case0002-slice")
    slider.set_value(3).run()
    assert not at.exception
    at.radio(key=f"case-{seeded.run_uids['lesion-segmentation']}-case0002-preset").set_value(
        "Lung"
    ).run()
    assert not at.exception


def _adjudicate_in_page(at: AppTest, decision: str, password: str) -> AppTest:
    at.radio[-1].set_value(decision)
    at.text_area[0].input("Contour B follows the lesion edge; A leaks into bone.")
    at.text_input[-1].input(password)
    next(b for b in at.button if "Sign and record" in str(b.label)).click().run()
    assert not at.exception, at.exception
    return at


def test_adjudication_two_readers_and_consensus(
    app: Callable[..., AppTest], seeded: Seeded, wb: Workbench
) -> None:
    run_uid = seeded.run_uids["lesion-segmentation@2"]
    at = _open(app, "dr.reviewer", "pages/adjudication.py", run=run_uid)
    assert at.get("image"), "the viewer shows the case"
    assert {"Show A", "Show B"} <= {c.label for c in at.checkbox}
    first = at.selectbox(key="adj-item").value
    at = _adjudicate_in_page(at, "a_correct", ACCOUNTS["dr.reviewer"][2])
    assert "now open" in _messages(at)
    second = _open(app, "dr.second", "pages/adjudication.py", run=run_uid)
    second.selectbox(key="adj-item").set_value(first).run()
    second = _adjudicate_in_page(second, "b_correct", ACCOUNTS["dr.second"][2])
    assert "needs_consensus" in _messages(second)
    consensus = _open(app, "dr.reviewer", "pages/adjudication.py", run=run_uid)
    consensus.selectbox(key="adj-item").set_value(first).run()
    assert "consensus" in _messages(consensus)
    consensus = _adjudicate_in_page(consensus, "both_acceptable", ACCOUNTS["dr.reviewer"][2])
    assert "adjudicated" in _messages(consensus)
    statuses = {
        i.discrepancy_id: i.status for i in adjudication.queue(wb, accounts_actor(wb), run_uid)
    }
    assert statuses[first] == "adjudicated"


def test_adjudication_wrong_password_is_refused(
    app: Callable[..., AppTest], seeded: Seeded
) -> None:
    at = _open(
        app, "dr.second", "pages/adjudication.py", run=seeded.run_uids["lesion-segmentation"]
    )
    at = _adjudicate_in_page(at, "neither", "wrong-password")
    assert "now" not in _messages(at).lower() or "error" in _messages(at).lower()
    assert at.error


def accounts_actor(wb: Workbench):  # noqa: ANN201
    from workbench.services import accounts

    return accounts.login(wb, "inspector", ACCOUNTS["inspector"][2])


def test_reports_sign_and_seal(app: Callable[..., AppTest], seeded: Seeded, wb: Workbench) -> None:
    from workbench.services import accounts

    run_uid = seeded.run_uids["malignancy-classification"]
    reviewer = accounts.login(wb, "dr.reviewer", ACCOUNTS["dr.reviewer"][2])
    for item in adjudication.queue(wb, reviewer, run_uid):
        if item.status == "open":
            adjudication.adjudicate(
                wb,
                reviewer,
                item.discrepancy_id,
                decision="both_acceptable",
                comment="fixture decision",
                password=ACCOUNTS["dr.reviewer"][2],
            )
    at = _open(app, "qa.author", "pages/reports.py")
    at.selectbox(key="build-run").set_value(run_uid)
    at.button(key="build-report").click().run(timeout=120)
    assert "Built" in _messages(at)
    uid = next(r.report_uid for r in reports.list_reports(wb) if r.run_uid == run_uid)

    def sign(user: str, meaning: str) -> AppTest:
        page = _open(app, user, "pages/reports.py")
        page.selectbox(key="report-choice").set_value(uid).run()
        assert meaning in [str(o) for o in page.radio(key="sign-meaning").options]
        page.radio(key="sign-meaning").set_value(meaning).run()
        assert any(meaning.capitalize()[:4] in i.value for i in page.info)  # the meaning is shown
        page.text_input(key=f"sign-{uid}-{meaning}-password").input(ACCOUNTS[user][2])
        next(b for b in page.button if f"Sign ({meaning})" in str(b.label)).click().run()
        assert "Signed" in _messages(page), _messages(page)
        return page

    sign("qa.author", "authored")
    sign("dr.second", "reviewed")
    page = sign("qa.approver", "approved")
    page = _open(app, "qa.approver", "pages/reports.py")
    page.selectbox(key="report-choice").set_value(uid).run()
    page.button(key="seal").click().run(timeout=120)
    assert "Sealed" in _messages(page), _messages(page)
    sealed = next(r for r in reports.list_reports(wb) if r.report_uid == uid)
    assert sealed.status == "sealed"
    assert reports.verify_report_file(wb, sealed.sealed_path).valid
    auditor = _open(app, "inspector", "pages/reports.py")
    auditor.selectbox(key="report-choice").set_value(uid).run()
    assert len(auditor.get("download_button")) == 2


def test_audit_filter_verify_export(app: Callable[..., AppTest]) -> None:
    at = _open(app, "inspector", "pages/audit.py")
    at.button(key="verify-chain").click().run()
    assert "Intact" in _messages(at)
    at.text_input(key="audit-user").input("qa.approver")
    next(b for b in at.button if "Search" in str(b.label)).click().run()
    users = set(at.dataframe[0].value["user"])
    assert users == {"qa.approver"}
    at.button(key="prepare-export").click().run()
    assert at.get("download_button")


def test_admin_unlock_and_reset(app: Callable[..., AppTest], wb: Workbench) -> None:
    from workbench.errors import AuthenticationError
    from workbench.services import accounts

    admin = accounts.login(wb, "sysadmin", ACCOUNTS["sysadmin"][2])
    accounts.create_user(
        wb,
        admin,
        username="temp.user",
        full_name="Tim Temp",
        role="auditor",
        password="Tempus-test-2026!",
        must_change_password=False,
    )
    for _ in range(6):
        try:
            accounts.login(wb, "temp.user", "nope-nope-nope")
        except AuthenticationError:
            pass
    at = _open(app, "sysadmin", "pages/admin.py")
    table = at.dataframe[0].value
    assert bool(table.loc[table["username"] == "temp.user", "locked"].iloc[0])
    at.selectbox(key="admin-target").set_value("temp.user").run()
    at.text_input(key="admin-reason").input("called the help desk")
    at.button(key="admin-unlock").click().run()
    assert "unlocked" in _messages(at)
    accounts.login(wb, "temp.user", "Tempus-test-2026!")


def test_account_page(app: Callable[..., AppTest]) -> None:
    at = _open(app, "inspector", "pages/account.py")
    assert "Alex Auditor" in at.markdown[-1].value or any(
        "Alex Auditor" in m.value for m in at.markdown
    )


def test_admin_reset_hands_over_the_one_time_code(
    app: Callable[..., AppTest], wb: Workbench
) -> None:
    from tests.app.conftest import APP_MAIN
    from workbench.app import _session
    from workbench.services import accounts

    admin = accounts.login(wb, "sysadmin", ACCOUNTS["sysadmin"][2])
    accounts.create_user(
        wb,
        admin,
        username="reset.user",
        full_name="Rae Reset",
        role="auditor",
        password="Resetme-test-2026!",
        must_change_password=False,
    )
    at = _open(app, "sysadmin", "pages/admin.py")
    at.selectbox(key="admin-target").set_value("reset.user").run()
    at.text_input(key="admin-reason").input("forgot the password")
    at.text_input(key="admin-temp").input("Temporary-pass-2026!")
    at.button(key="admin-reset").click().run()
    assert not at.exception, at.exception
    assert "one-time code" in _messages(at)
    code = str(at.code[-1].value).strip()
    assert code

    owner = AppTest.from_file(str(APP_MAIN), default_timeout=60)
    _actor, token = accounts.open_session(wb, "reset.user", "Temporary-pass-2026!")
    owner.session_state[_session.TOKEN_KEY] = token
    owner.session_state[_session.USERNAME_KEY] = "reset.user"
    owner.run()
    assert owner.title[0].value == "My account"
    fields = owner.text_input
    fields[0].input("Temporary-pass-2026!")
    fields[1].input("Brand-new-secret-2026?")
    fields[2].input("Brand-new-secret-2026?")
    fields[3].input(code)
    owner.button(key="change-password-submit").click().run()
    assert "Password changed" in _messages(owner), _messages(owner)
    accounts.login(wb, "reset.user", "Brand-new-secret-2026?")


def test_audit_link_opens_one_records_trail(app: Callable[..., AppTest], wb: Workbench) -> None:
    """A link with ``record_type`` and ``record`` (as the case explorer's discrepancy links)
    fills the filters and shows that record's entries, however old."""
    from sqlalchemy import select

    from workbench.records.models import Discrepancy

    with wb.transaction(readonly=True) as session:
        discrepancy_id = str(session.scalars(select(Discrepancy.id).limit(1)).one())
    at = _open(app, "inspector", "pages/audit.py", record_type="discrepancy", record=discrepancy_id)
    assert at.text_input(key="audit-record").value == discrepancy_id
    assert at.selectbox(key="audit-type").value == "discrepancy"
    assert at.date_input(key="audit-since").value is None
    table = at.dataframe[0].value
    assert len(table) >= 1
    assert set(table["record type"]) == {"discrepancy"}
    assert set(table["record id"].astype(str)) == {discrepancy_id}
    assert "discrepancy.create" in set(table["action"])
