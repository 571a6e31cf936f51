"""Accounts, password policy, lockout, aging and login sessions."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from records_helpers import OTHER_PASSWORD, PASSWORD
from sqlalchemy import select

from workbench.errors import (
    AccountLockedError,
    AuthenticationError,
    DuplicateError,
    PasswordPolicyError,
    ReasonRequiredError,
    SessionExpiredError,
    WorkflowError,
)
from workbench.records import audit, users
from workbench.records.models import PasswordHistory, User, utcnow


def _events(db, action):
    with db.session() as s:
        return audit.export_audit(s, action=action)


def test_create_user_is_audited_without_secrets(db, make_user):
    user = make_user(db, "Alice", "qa", full_name="Alice Example")
    assert user.username == "alice" and user.role == "qa"
    assert user.password_hash.startswith("$argon2id$")
    [entry] = _events(db, "user.create")
    assert entry["new_value"]["full_name"] == "Alice Example"
    dumped = str(entry)
    assert PASSWORD not in dumped and "argon2" not in dumped


def test_usernames_are_never_reused(db, make_user):
    make_user(db, "bob", "reviewer")
    make_user(db, "admin1", "admin")
    with db.session() as s:
        users.disable_user(s, actor="admin1", username="bob", reason="left the company")
    with pytest.raises(DuplicateError, match="never reused"):
        make_user(db, "BOB", "qa")
    with db.session() as s:
        assert s.scalars(select(User).where(User.username == "bob")).one().disabled


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Short-1a", "at least 12 characters"),
        ("alllowercaseletters", "at least 3 of"),
        ("Carol-Password-9", "may not contain the username"),
    ],
)
def test_password_policy(db, make_user, password, problem):
    with pytest.raises(PasswordPolicyError, match=problem) as info:
        make_user(db, "carol", "qa", password=password)
    assert password not in str(info.value)


def test_authenticate_success_and_generic_failures(db, make_user):
    make_user(db, "dave", "qa")
    with db.session() as s:
        assert users.authenticate(s, "Dave", PASSWORD).username == "dave"
    messages = []
    for name, password in (("dave", "Wrong-Password-1"), ("nobody", "Wrong-Password-1")):
        with pytest.raises(AuthenticationError) as info:
            with db.session() as s:
                users.authenticate(s, name, password)
        assert type(info.value) is AuthenticationError
        messages.append(str(info.value))
    assert messages == [users.INVALID_CREDENTIALS] * 2
    assert [e["actor"] for e in _events(db, "security.login_failed")] == ["dave", "unknown"]
    unknown = _events(db, "security.login_failed")[1]
    assert "nobody" not in str(unknown) and len(unknown["new_value"]["username_sha256"]) == 64


def test_unknown_user_costs_a_hash_verification(db, make_user):
    make_user(db, "erin", "qa")
    with mock.patch.object(users, "_verify", wraps=users._verify) as verify:
        for name in ("erin", "nobody"):
            with pytest.raises(AuthenticationError):
                with db.session() as s:
                    users.authenticate(s, name, "Wrong-Password-1")
    assert verify.call_count == 2


def test_lockout_after_five_failures_is_a_security_event(db, make_user):
    make_user(db, "frank", "qa")
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            with db.session() as s:  # the exception rolls this transaction back
                users.authenticate(s, "frank", "Wrong-Password-1")
    with db.session() as s:
        frank = users.get_user(s, "frank")
        assert frank.locked and frank.failed_attempts == 5
    [locked] = _events(db, "security.account_locked")
    assert locked["new_value"]["username"] == "frank"
    assert len(_events(db, "security.login_failed")) == 5
    # Even the right password is refused now, with the same answer as a wrong one
    # (a sign-in must not reveal that the account is locked); the trail has the cause.
    with pytest.raises(AuthenticationError) as right:
        with db.session() as s:
            users.authenticate(s, "frank", PASSWORD)
    assert str(right.value) == users.INVALID_CREDENTIALS
    assert not isinstance(right.value, AccountLockedError)
    [refused] = _events(db, "security.login_refused")
    assert refused["new_value"]["state"] == "locked"
    with pytest.raises(AuthenticationError) as info:
        with db.session() as s:
            users.authenticate(s, "frank", "Wrong-Password-1")
    assert str(info.value) == users.INVALID_CREDENTIALS
    make_user(db, "admin1", "admin")
    with pytest.raises(ReasonRequiredError):
        with db.session() as s:
            users.unlock_user(s, actor="admin1", username="frank", reason="")
    with db.session() as s:
        users.unlock_user(s, actor="admin1", username="frank", reason="identity confirmed by phone")
    with db.session() as s:
        assert users.authenticate(s, "frank", PASSWORD).failed_attempts == 0
        audit.verify_chain(s)


def test_failures_recorded_when_caller_catches(db, make_user):
    make_user(db, "gina", "qa")
    with db.session() as s:
        with pytest.raises(AuthenticationError):
            users.authenticate(s, "gina", "Wrong-Password-1")
    with db.session() as s:
        assert users.get_user(s, "gina").failed_attempts == 1
    assert len(_events(db, "security.login_failed")) == 1


def test_success_resets_failure_counter(db, make_user):
    make_user(db, "hank", "qa")
    for _ in range(4):
        with pytest.raises(AuthenticationError), db.session() as s:
            users.authenticate(s, "hank", "Wrong-Password-1")
    with db.session() as s:
        users.authenticate(s, "hank", PASSWORD)
    with pytest.raises(AuthenticationError), db.session() as s:
        users.authenticate(s, "hank", "Wrong-Password-1")
    with db.session() as s:
        assert not users.get_user(s, "hank").locked


def test_reset_sets_must_change_and_change_clears_it(db, make_user):
    make_user(db, "ivy", "reviewer")
    make_user(db, "admin1", "admin")
    with db.session() as s:
        code = users.reset_password(
            s, actor="admin1", username="ivy", new_password="Temporary-Pass-1", reason="forgotten"
        ).one_time_code
    with db.session() as s:
        assert users.authenticate(s, "ivy", "Temporary-Pass-1").must_change_password
    # Knowing the temporary password is not enough: the one-time code is needed too.
    for wrong in (None, "0" * len(code)):
        with pytest.raises(AuthenticationError, match="one-time code"), db.session() as s:
            users.change_password(
                s,
                username="ivy",
                old_password="Temporary-Pass-1",
                new_password=OTHER_PASSWORD,
                reset_code=wrong,
            )
    with db.session() as s:
        assert users.get_user(s, "ivy").failed_attempts == 2  # wrong codes count
        user = users.change_password(
            s,
            username="ivy",
            old_password="Temporary-Pass-1",
            new_password=OTHER_PASSWORD,
            reset_code=code,
        )
        assert not user.must_change_password and user.reset_code_sha256 is None
    [entry] = _events(db, "user.reset_password")
    assert entry["reason"] == "forgotten" and entry["new_value"]["must_change_password"] is True
    assert code not in str(entry)
    [done] = _events(db, "user.change_password")
    assert done["actor"] == "ivy" and done["new_value"]["reset_by"] == "admin1"
    assert "admin1" in done["reason"]
    with pytest.raises(WorkflowError, match="own password"), db.session() as s:
        users.reset_password(
            s, actor="admin1", username="admin1", new_password="Another-Pass-11", reason="x"
        )


def test_last_five_passwords_cannot_be_reused(db, make_user):
    make_user(db, "jack", "qa")
    history = [PASSWORD] + [f"New-Password-{i:02d}" for i in range(1, 6)]
    for old, new in zip(history, history[1:], strict=False):
        with db.session() as s:
            users.change_password(s, username="jack", old_password=old, new_password=new)
    current = history[-1]
    for reused in history[1:]:  # current + last five
        with pytest.raises(PasswordPolicyError, match="last 5"), db.session() as s:
            users.change_password(s, username="jack", old_password=current, new_password=reused)
    with db.session() as s:  # the password from six changes ago is allowed again
        users.change_password(s, username="jack", old_password=current, new_password=PASSWORD)
        assert s.scalars(select(PasswordHistory)).all()


def test_password_aging_forces_change(db, make_user):
    make_user(db, "kate", "qa")
    later = utcnow() + timedelta(days=91)
    with db.session() as s:
        assert users.authenticate(s, "kate", PASSWORD, now=later).must_change_password
    assert len(_events(db, "security.password_expired")) == 1
    no_aging = users.PasswordPolicy(max_age=None)
    make_user(db, "leo", "qa")
    with db.session() as s:
        assert not users.authenticate(
            s, "leo", PASSWORD, policy=no_aging, now=later
        ).must_change_password


def test_disabled_account_cannot_log_in(db, make_user):
    make_user(db, "mia", "qa")
    make_user(db, "admin1", "admin")
    with db.session() as s:
        users.disable_user(s, actor="admin1", username="mia", reason="contract ended")
    with pytest.raises(AuthenticationError) as refused, db.session() as s:
        users.authenticate(s, "mia", PASSWORD)
    assert str(refused.value) == users.INVALID_CREDENTIALS
    assert _events(db, "security.login_refused")[-1]["new_value"]["state"] == "disabled"
    with pytest.raises(WorkflowError, match="own account"), db.session() as s:
        users.disable_user(s, actor="admin1", username="admin1", reason="x")


def test_session_inactivity_timeout(db, make_user):
    make_user(db, "ned", "qa")
    start = utcnow()
    with db.session() as s:
        token = users.start_session(s, users.authenticate(s, "ned", PASSWORD), now=start)
    with db.session() as s:
        assert users.check_session(s, token, now=start + timedelta(minutes=14)).username == "ned"
    with pytest.raises(SessionExpiredError, match="15 minutes"), db.session() as s:
        users.check_session(s, token, now=start + timedelta(minutes=30))
    with pytest.raises(SessionExpiredError), db.session() as s:  # stays ended
        users.check_session(s, token, now=start + timedelta(minutes=31))
    assert len(_events(db, "security.session_expired")) == 1
    with pytest.raises(SessionExpiredError), db.session() as s:
        users.check_session(s, "not-a-token")


def test_logout_ends_session(db, make_user):
    make_user(db, "olga", "qa")
    with db.session() as s:
        token = users.start_session(s, users.authenticate(s, "olga", PASSWORD))
    with db.session() as s:
        users.end_session(s, token)
    with pytest.raises(SessionExpiredError), db.session() as s:
        users.check_session(s, token)


def test_username_validation(db, make_user):
    with pytest.raises(ValueError, match="username"):
        make_user(db, "system", "qa")
    with pytest.raises(ValueError, match="username"):
        make_user(db, "bad name", "qa")
    with pytest.raises(ValueError):
        make_user(db, "pat", "superuser")
