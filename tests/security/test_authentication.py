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


def test_lockout_after_five_failures_and_only_revealed_with_the_right_password(wb) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        with pytest.raises(errors.AuthenticationError) as caught:
            accounts.login(wb, "qa1", WRONG)
        assert str(caught.value) == users.INVALID_CREDENTIALS
    with pytest.raises(errors.AuthenticationError) as caught:  # still the generic message
        accounts.login(wb, "qa1", WRONG)
    assert str(caught.value) == users.INVALID_CREDENTIALS
    with pytest.raises(errors.AccountLockedError):
        accounts.login(wb, "qa1", harness.ACCOUNTS["qa1"][2])
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
    with pytest.raises(errors.AccountLockedError):
        accounts.login(wb, "qa2", harness.ACCOUNTS["qa2"][2])


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
