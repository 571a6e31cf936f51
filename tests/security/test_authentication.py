"""Authentication: lockout, password policy, session expiry, no username enumeration."""

from __future__ import annotations

from datetime import timedelta

import harness
import pytest

from workbench import errors
from workbench.records import users
from workbench.records.models import utcnow
from workbench.services import accounts

WRONG = "Wrong-Password-2026!"


@pytest.fixture
def wb(tmp_path):  # type: ignore[no-untyped-def]
    made = harness.open_wb(tmp_path / "wb")
    harness.make_accounts(made)
    yield made
    made.close()


def test_lockout_after_five_failures_is_never_revealed_to_the_caller(wb) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        with pytest.raises(errors.AuthenticationError) as caught:
            accounts.login(wb, "qa1", WRONG)
        assert str(caught.value) == users.INVALID_CREDENTIALS
    with pytest.raises(errors.AuthenticationError) as caught:  # still the generic message
        accounts.login(wb, "qa1", WRONG)
    assert str(caught.value) == users.INVALID_CREDENTIALS
    # The right password on a locked account gets the same answer (no oracle).
    with pytest.raises(errors.AuthenticationError) as caught:
        accounts.login(wb, "qa1", harness.ACCOUNTS["qa1"][2])
    assert str(caught.value) == users.INVALID_CREDENTIALS
    assert type(caught.value) is errors.AuthenticationError
    with wb.transaction(readonly=True) as session:
        assert users.get_user(session, "qa1").locked
    admin = harness.login(wb, "admin")
    accounts.unlock_user(wb, admin, "qa1", reason="verified identity by phone")
    assert harness.login(wb, "qa1").username == "qa1"


def test_failed_signatures_count_towards_lockout(wb) -> None:  # type: ignore[no-untyped-def]
    from workbench.services import protocols

    qa = harness.login(wb, "qa1")
    path = wb.workdir.root / "p.yaml"
    path.write_text(harness.protocol_text())
    ref = protocols.add_protocol_version(wb, qa, path).ref
    qa2 = harness.login(wb, "qa2")
    for _ in range(5):
        with pytest.raises(errors.AuthenticationError):
            protocols.approve_protocol(wb, qa2, ref, password=WRONG)
    with pytest.raises(errors.AuthenticationError, match="Invalid username or password"):
        accounts.login(wb, "qa2", harness.ACCOUNTS["qa2"][2])
    with wb.transaction(readonly=True) as session:
        assert users.get_user(session, "qa2").locked


@pytest.mark.parametrize(
    "password",
    ["short-1A!", "alllowercaseletters", "ALLUPPERCASE1234", "1234567890123"],
)
def test_password_policy(wb, password: str) -> None:  # type: ignore[no-untyped-def]
    admin = harness.login(wb, "admin")
    with pytest.raises(errors.PasswordPolicyError) as caught:
        accounts.create_user(
            wb, admin, username="newbie", full_name="New Bie", role="qa", password=password
        )
    assert password not in str(caught.value)


def test_session_expires_after_fifteen_idle_minutes(wb) -> None:  # type: ignore[no-untyped-def]
    _, token = accounts.open_session(wb, "aud", harness.ACCOUNTS["aud"][2])
    assert accounts.resume_session(wb, token).username == "aud"
    with wb.transaction() as session:
        later = utcnow() + timedelta(minutes=14)
        assert users.check_session(session, token, now=later).username == "aud"
    with pytest.raises(errors.SessionExpiredError), wb.transaction() as session:
        users.check_session(session, token, now=later + timedelta(minutes=16))
    with pytest.raises(errors.SessionExpiredError):  # ended for good
        accounts.resume_session(wb, token)
    accounts.close_session(wb, accounts.open_session(wb, "aud", harness.ACCOUNTS["aud"][2])[1])


def test_unknown_user_and_wrong_password_say_the_same(wb) -> None:  # type: ignore[no-untyped-def]
    messages = set()
    for username, password in [
        ("nobody", WRONG),
        ("qa1", WRONG),
        ("QA1 ", WRONG),
        ("x'; DROP TABLE users;--", WRONG),
    ]:
        with pytest.raises(errors.AuthenticationError) as caught:
            accounts.login(wb, username, password)
        messages.add((type(caught.value).__name__, str(caught.value)))
    assert messages == {("AuthenticationError", users.INVALID_CREDENTIALS)}


@pytest.mark.slow
def test_cli_does_not_reveal_whether_a_user_exists(wb) -> None:  # type: ignore[no-untyped-def]
    workdir = wb.workdir.root
    outputs = []
    for username in ("nobody", "qa2"):
        done = harness.cli(workdir, "user", "list", "--user", username, "--password", WRONG)
        outputs.append((done.returncode, done.stdout, done.stderr))
    assert outputs[0] == outputs[1], outputs
    assert WRONG not in outputs[0][2]
    assert "Invalid username or password." in outputs[0][2]


def test_disabled_locked_unknown_and_wrong_password_say_the_same(wb) -> None:  # type: ignore[no-untyped-def]
    admin = harness.login(wb, "admin")
    accounts.disable_user(wb, admin, "qa2", reason="left the company")
    for _ in range(5):
        with pytest.raises(errors.AuthenticationError):
            accounts.login(wb, "rev1", WRONG)
    answers = set()
    for username, password in [
        ("nobody", WRONG),  # unknown
        ("qa1", WRONG),  # wrong password
        ("qa2", harness.ACCOUNTS["qa2"][2]),  # disabled, right password
        ("rev1", harness.ACCOUNTS["rev1"][2]),  # locked, right password
    ]:
        with pytest.raises(errors.AuthenticationError) as caught:
            accounts.login(wb, username, password)
        answers.add((type(caught.value).__name__, str(caught.value)))
    assert answers == {("AuthenticationError", users.INVALID_CREDENTIALS)}


def test_bare_actor_without_a_sign_in_is_refused(wb) -> None:  # type: ignore[no-untyped-def]
    from workbench.services import runs
    from workbench.services.context import Actor

    real = harness.login(wb, "qa2")
    assert runs.list_runs(wb, real) == []
    for forged in (
        Actor("qa2", real.full_name, real.role),  # an existing account, no password given
        Actor("qa2", real.full_name, real.role, credential="0" * 16 + "." + "0" * 64),
        Actor("qa2", real.full_name, "admin", credential=real.credential),  # role changed
    ):
        with pytest.raises(errors.AuthenticationError, match="sign-in"):
            runs.list_runs(wb, forged)


def test_password_policy_cannot_be_weakened_by_the_caller(wb) -> None:  # type: ignore[no-untyped-def]
    weak = users.PasswordPolicy(min_length=1, min_character_classes=1, history=0)
    with wb.transaction() as session, pytest.raises(errors.PasswordPolicyError, match="12"):
        users.create_user(
            session,
            actor="system",
            username="tiny",
            full_name="Tiny Password",
            role="qa",
            password="x",
            policy=weak,
        )
    with wb.transaction(readonly=True) as session:
        assert all(u.username != "tiny" for u in users.list_users(session))


def test_admin_reset_cannot_be_completed_by_the_admin_as_the_owner(wb) -> None:  # type: ignore[no-untyped-def]
    from workbench.records import audit

    admin = harness.login(wb, "admin")
    temporary = "Temporary-Pass-2026!"
    info = accounts.reset_password(
        wb, admin, "qa2", new_password=temporary, reason="forgotten password"
    )
    assert info.one_time_code and info.one_time_code not in repr(info)
    # The administrator knows the temporary password but not (necessarily) the code.
    with pytest.raises(errors.AuthenticationError, match="one-time code"):
        accounts.change_password(wb, "qa2", temporary, "Chosen-By-Admin-2026!")
    from workbench.services import protocols

    path = wb.workdir.root / "p.yaml"
    path.write_text(harness.protocol_text())
    ref = protocols.add_protocol_version(wb, harness.login(wb, "qa1"), path).ref
    with pytest.raises(errors.PasswordChangeRequiredError):  # the temporary one cannot sign
        protocols.approve_protocol(
            wb, accounts.login(wb, "qa2", temporary), ref, password=temporary
        )
    accounts.change_password(
        wb, "qa2", temporary, "Owner-Chosen-2026!", reset_code=info.one_time_code
    )
    assert accounts.login(wb, "qa2", "Owner-Chosen-2026!").username == "qa2"
    with wb.transaction(readonly=True) as session:
        reset = audit.export_audit(session, action="user.reset_password")[-1]
        changed = audit.export_audit(session, action="user.change_password")[-1]
    assert reset["actor"] == "admin"
    assert changed["actor"] == "qa2" and changed["new_value"]["reset_by"] == "admin"
    assert info.one_time_code not in str(reset) + str(changed)
