"""Electronic signatures: re-authentication, manifestation, linking, separation of duties."""

from __future__ import annotations

import hashlib

import pytest
from records_helpers import OTHER_PASSWORD, PASSWORD
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from workbench.errors import (
    AuthenticationError,
    PasswordChangeRequiredError,
    PermissionDeniedError,
    SignatureError,
)
from workbench.records import audit, signatures, users
from workbench.records.models import SignatureMeaning

CONTENT = hashlib.sha256(b"report v1").hexdigest()
CHANGED = hashlib.sha256(b"report v2").hexdigest()


def _sign(
    db, username="quinn", password=PASSWORD, meaning="authored", record_id=1, content=CONTENT
):
    with db.session() as s:
        return signatures.sign(
            s,
            username=username,
            password=password,
            meaning=meaning,
            record_type="report",
            record_id=record_id,
            content_sha256=content,
        )


def test_sign_and_verify(db, make_user):
    make_user(db, "quinn", "qa", full_name="Quinn Q. Example")
    sig = _sign(db)
    assert (sig.printed_name, sig.username, sig.role, sig.meaning) == (
        "Quinn Q. Example", "quinn", "qa", "authored",
    )  # fmt: skip
    assert sig.signed_at.tzinfo is not None
    assert "Quinn Q. Example (quinn)" in signatures.manifestation(sig)
    assert signatures.manifestation(sig).endswith("UTC, authored")
    with db.session() as s:
        result = signatures.verify(s, sig.id, CONTENT, record_type="report", record_id=1)
        assert result.valid and result.status == "valid"
        changed = signatures.verify(s, sig.id, CHANGED)
        assert not changed.valid and changed.status == "record changed since signing"
        assert signatures.verify(s, sig.id, CONTENT, record_id=2).status == signatures.OTHER_RECORD
        [entry] = audit.export_audit(s, action="signature.sign")
    assert (
        entry["record_id"] == "1" and entry["new_value"]["signature_sha256"] == sig.signature_sha256
    )
    assert PASSWORD not in str(entry)


def test_moved_signature_fails_verification(db, make_user, drop_guards):
    make_user(db, "quinn", "qa")
    sig = _sign(db)
    drop_guards(db)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE signatures SET record_id = '2' WHERE id = :i"), {"i": sig.id})
    with db.session() as s:
        result = signatures.verify(s, sig.id, CONTENT, record_type="report", record_id=2)
    assert result.status == "signature record altered" and not result.valid


def test_signatures_are_append_only(db, make_user):
    make_user(db, "quinn", "qa")
    _sign(db)
    for statement in ("UPDATE signatures SET meaning = 'approved'", "DELETE FROM signatures"):
        with pytest.raises(DBAPIError, match="append-only"), db.session() as s:
            s.execute(text(statement))


def test_every_signing_needs_the_password(db, make_user):
    make_user(db, "quinn", "qa")
    with db.session() as s:
        token = users.start_session(s, users.authenticate(s, "quinn", PASSWORD))
        users.check_session(s, token)
    with pytest.raises(AuthenticationError):
        _sign(db, password="")
    with db.session() as s:
        assert users.get_user(s, "quinn").failed_attempts == 1
        [event] = audit.export_audit(s, action="security.login_failed")
    assert event["new_value"]["context"] == "signature"


def test_failed_signings_lock_the_account(db, make_user):
    make_user(db, "quinn", "qa")
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            _sign(db, password="Wrong-Password-1")
    with pytest.raises(AuthenticationError) as refused:  # locked: the same answer
        _sign(db)
    assert str(refused.value) == users.INVALID_CREDENTIALS


def test_reset_password_cannot_sign_until_changed(db, make_user):
    make_user(db, "quinn", "qa")
    make_user(db, "admin1", "admin")
    with db.session() as s:
        code = users.reset_password(
            s, actor="admin1", username="quinn", new_password="Temporary-Pass-1", reason="forgot"
        ).one_time_code
    with pytest.raises(PasswordChangeRequiredError, match="change their password"):
        _sign(db, password="Temporary-Pass-1")
    with db.session() as s:
        users.change_password(
            s,
            username="quinn",
            old_password="Temporary-Pass-1",
            new_password=OTHER_PASSWORD,
            reset_code=code,
        )
    assert _sign(db, password=OTHER_PASSWORD).meaning == "authored"


def test_admin_cannot_sign(db, make_user):
    make_user(db, "admin1", "admin")
    with pytest.raises(PermissionDeniedError, match="Administrators cannot sign"):
        _sign(db, username="admin1")


@pytest.mark.parametrize(("meaning", "content"), [("approved-ish", CONTENT), ("approved", "abc")])
def test_bad_meaning_or_hash(db, make_user, meaning, content):
    make_user(db, "quinn", "qa")
    with pytest.raises(SignatureError, match="Expected"):
        _sign(db, meaning=meaning, content=content)


def test_all_meanings_accepted(db, make_user):
    make_user(db, "quinn", "qa")
    for i, meaning in enumerate(SignatureMeaning):
        assert _sign(db, meaning=meaning, record_id=i).meaning == meaning.value


def test_author_cannot_approve(db, make_user):
    make_user(db, "quinn", "qa")
    make_user(db, "rita", "qa")
    _sign(db, username="quinn", meaning="authored")
    with db.session() as s:
        with pytest.raises(PermissionDeniedError, match="different person"):
            signatures.require_different_signer(
                s, record_type="report", record_id=1, username="quinn"
            )
        signatures.require_different_signer(s, record_type="report", record_id=1, username="rita")
        with pytest.raises(PermissionDeniedError, match="created"):
            signatures.require_different_signer(
                s, record_type="report", record_id=2, username="rita", also_excluded=["Rita"]
            )
    _sign(db, username="rita", meaning="approved")
    with db.session() as s:
        assert [x.meaning for x in signatures.signatures_for(s, "report", 1)] == [
            "authored",
            "approved",
        ]
