"""Sign-in page: credentials, lockout, session expiry, sign-out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from tests.app._seed import ACCOUNTS
from workbench.app import _session
from workbench.records.models import User, UserSession, utcnow
from workbench.services import accounts
from workbench.services.context import Workbench


def _texts(at: AppTest) -> str:
    parts = [
        str(e.value) for kind in ("error", "warning", "success", "info") for e in getattr(at, kind)
    ]
    return "\n".join(parts)


def _login(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input(key="login-username").input(username)
    at.text_input(key="login-password").input(password)
    return at.button[0].click().run()


def test_signed_out_shows_only_sign_in(app: Callable[..., AppTest]) -> None:
    at = app(None)
    assert not at.exception
    assert at.text_input(key="login-username") is not None
    assert _session.TOKEN_KEY not in at.session_state


def test_sign_in_keeps_only_token_and_username(app: Callable[..., AppTest]) -> None:
    at = _login(app(None), "inspector", ACCOUNTS["inspector"][2])
    assert not at.exception
    assert at.session_state[_session.USERNAME_KEY] == "inspector"
    assert len(at.session_state[_session.TOKEN_KEY]) >= 20
    assert at.title[0].value == "Validation Workbench"
    assert any("Signed in as Alex Auditor" in c.value for c in at.caption)


def test_wrong_password_is_refused(app: Callable[..., AppTest]) -> None:
    at = _login(app(None), "qa.approver", "not-the-password")
    assert "username or password" in _texts(at).lower() or "invalid" in _texts(at).lower()
    assert _session.TOKEN_KEY not in at.session_state


def test_lockout_message(app: Callable[..., AppTest], wb: Workbench) -> None:
    admin = accounts.login(wb, "sysadmin", ACCOUNTS["sysadmin"][2])
    accounts.create_user(
        wb,
        admin,
        username="locked.user",
        full_name="Lou Locked",
        role="qa",
        password="Lockme-test-2026!",
        must_change_password=False,
    )
    at = app(None)
    for _ in range(6):
        at = _login(at, "locked.user", "wrong-password-123")
    at = _login(at, "locked.user", "Lockme-test-2026!")
    # The right password is refused with the one message that does not tell a caller
    # whether the account exists or is locked; the record says why.
    assert "invalid username or password" in _texts(at).lower()
    assert _session.TOKEN_KEY not in at.session_state
    with wb.transaction(readonly=True) as session:
        user = session.scalars(select(User).where(User.username == "locked.user")).one()
        assert user.locked


def test_expired_session_returns_to_sign_in(app: Callable[..., AppTest], wb: Workbench) -> None:
    at = app("qa.author")
    assert at.title[0].value == "Validation Workbench"
    with wb.transaction() as session:
        user = session.scalars(select(User).where(User.username == "qa.author")).one()
        for row in session.scalars(select(UserSession).where(UserSession.user_id == user.id)):
            row.last_activity_at = utcnow() - timedelta(hours=2)
    at.run()
    assert not at.exception
    assert "expired" in _texts(at).lower()
    assert at.text_input(key="login-username") is not None
    assert _session.TOKEN_KEY not in at.session_state


def test_sign_out(app: Callable[..., AppTest]) -> None:
    at = app("inspector")
    at.sidebar.button(key="sign-out").click().run()
    assert not at.exception
    assert _session.TOKEN_KEY not in at.session_state
    assert at.text_input(key="login-username") is not None


def test_password_change_required_restricts_to_account(
    app: Callable[..., AppTest], wb: Workbench
) -> None:
    admin = accounts.login(wb, "sysadmin", ACCOUNTS["sysadmin"][2])
    accounts.create_user(
        wb,
        admin,
        username="new.hire",
        full_name="Nia New",
        role="qa",
        password="Firstday-test-2026!",
        must_change_password=True,
    )
    at = AppTest.from_file(str(_main()), default_timeout=60)
    _actor, token = accounts.open_session(wb, "new.hire", "Firstday-test-2026!")
    at.session_state[_session.TOKEN_KEY] = token
    at.session_state[_session.USERNAME_KEY] = "new.hire"
    at.run()
    assert not at.exception
    assert at.title[0].value == "My account"
    with pytest.raises(ValueError):
        at.switch_page("pages/overview.py")
    inputs = at.text_input
    inputs[0].input("Firstday-test-2026!")
    inputs[1].input("Second-day-pass-2026?")
    inputs[2].input("Second-day-pass-2026?")
    at.button(key="change-password-submit").click().run()
    assert "Password changed" in _texts(at)
    at.run()
    at.switch_page("pages/overview.py").run()
    assert at.title[0].value == "Validation Workbench"


def _main():  # noqa: ANN202
    from tests.app.conftest import APP_MAIN

    return APP_MAIN
