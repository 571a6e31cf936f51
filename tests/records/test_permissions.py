"""Every role x every action, denied attempts, and record locking."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from workbench.errors import (
    AccountLockedError,
    PasswordChangeRequiredError,
    PermissionDeniedError,
    RecordLockedError,
)
from workbench.records import audit, locking, permissions
from workbench.records.models import (
    Adjudication,
    AuditEntry,
    ProtocolVersion,
    Report,
    Role,
    TestSet,
    User,
    utcnow,
)
from workbench.records.permissions import Action

# The matrix, written out independently of the module under test.
EXPECTED = {
    "qa": {
        "testset.import", "testset.lock", "testset.verify", "model.register",
        "protocol.create", "protocol.approve", "run.start", "run.view",
        "report.build", "report.sign.author", "report.sign.approve", "report.seal",
        "report.verify", "audit.view", "audit.verify", "study.design", "study.view",
    },
    "reviewer": {
        "run.view", "discrepancy.adjudicate", "report.sign.review", "report.verify", "audit.view",
        "study.read",
    },
    "auditor": {
        "run.view", "testset.verify", "report.verify", "audit.view", "audit.export", "audit.verify",
        "study.view",
    },
    "admin": {"user.manage", "pacs.configure", "audit.view", "audit.verify"},
}  # fmt: skip


def _user(role: str, **kw) -> User:
    return User(
        id=1,
        username=f"{role}1",
        full_name="X",
        role=role,
        password_hash="x",
        password_changed_at=utcnow(),
        must_change_password=kw.get("must_change", False),
        failed_attempts=0,
        locked=kw.get("locked", False),
        disabled=False,
    )


@pytest.mark.parametrize("role", [r.value for r in Role])
@pytest.mark.parametrize("action", [a.value for a in Action])
def test_matrix(role, action):
    expected = action in EXPECTED[role]
    assert permissions.allowed(role, action) is expected
    if expected:
        permissions.require(_user(role), action)
    else:
        with pytest.raises(PermissionDeniedError, match=f"may not '{action}'"):
            permissions.require(_user(role), action)


def test_every_action_is_in_the_expected_table():
    assert {a.value for a in Action} == set().union(*EXPECTED.values())


def test_admin_cannot_alter_or_sign_records():
    signing_or_altering = {
        a
        for a in Action
        if a.value.split(".")[0] in {"testset", "model", "protocol", "run", "discrepancy", "report"}
    }
    assert not signing_or_altering & permissions.PERMISSIONS[Role.ADMIN]


def test_denied_attempt_is_recorded(db, make_user):
    user = make_user(db, "rev1", "reviewer")
    with pytest.raises(PermissionDeniedError), db.session() as s:
        permissions.require(user, "testset.lock", session=s)
    with db.session() as s:
        [event] = audit.export_audit(s, action="security.permission_denied")
        assert event["actor"] == "rev1" and event["new_value"]["action"] == "testset.lock"
        assert s.scalars(select(AuditEntry)).all()


def test_unusable_accounts_refused():
    with pytest.raises(PasswordChangeRequiredError):
        permissions.require(_user("qa", must_change=True), "run.view")
    with pytest.raises(AccountLockedError):
        permissions.require(_user("qa", locked=True), "run.view")


def test_unknown_action_suggests():
    with pytest.raises(ValueError, match="Did you mean 'testset.lock'"):
        permissions.require(_user("qa"), "testset.lok")
    assert permissions.roles_allowed("audit.export") == [Role.AUDITOR]


@pytest.mark.parametrize(
    ("record", "locked"),
    [
        (TestSet(name="t", status="draft"), False),
        (TestSet(name="t", status="locked", manifest_digest="ab" * 32), True),
        (ProtocolVersion(protocol_id="p", version="1", status="draft"), False),
        (ProtocolVersion(protocol_id="p", version="1", status="approved"), True),
        (ProtocolVersion(protocol_id="p", version="1", status="superseded"), True),
        (Report(report_uid="r", status="draft"), False),
        (Report(report_uid="r", status="signed"), True),
        (Report(report_uid="r", status="sealed"), True),
        (Adjudication(id=1, signature_id=None), False),
        (Adjudication(id=1, signature_id=3), True),
        (AuditEntry(seq=1), True),
    ],
)
def test_ensure_modifiable(record, locked):
    assert locking.is_locked(record) is locked
    if locked:
        with pytest.raises(RecordLockedError, match="new version"):
            locking.ensure_modifiable(record)
    else:
        locking.ensure_modifiable(record)
