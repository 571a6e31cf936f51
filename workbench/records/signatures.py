"""Electronic signatures (21 CFR 11.50, 11.70, 11.200).

Each signing is a full two-component signing: :func:`sign` asks for the
username AND the password every time, also within a continuous login session
(11.200(a)(1)(i) is not used to waive the password). Failed signing attempts
count towards the account lockout like failed logins.

A signature stores the signer's printed name, username and role, the UTC time,
the meaning (a controlled list, :class:`~workbench.records.models.SignatureMeaning`)
and the SHA-256 of the exact record content signed. ``signature_sha256`` is the
SHA-256 of the canonical JSON of all of these plus the record's type and id,
so a signature cannot be copied or moved to another record (11.70): changing
any field, the record id included, makes :func:`verify` fail. Signature rows
are append-only in the database.

Administrators cannot sign; a user whose password was reset or has expired
cannot sign until they change it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import (
    NotFoundError,
    PasswordChangeRequiredError,
    PermissionDeniedError,
    SignatureError,
)
from workbench.records import audit
from workbench.records.models import Role, Signature, SignatureMeaning, utcnow
from workbench.records.users import DEFAULT_POLICY, PasswordPolicy, authenticate

__all__ = [
    "VALID",
    "RECORD_CHANGED",
    "SIGNATURE_ALTERED",
    "OTHER_RECORD",
    "SignatureVerification",
    "signature_digest",
    "sign",
    "verify",
    "signatures_for",
    "manifestation",
    "require_different_signer",
]

VALID = "valid"
RECORD_CHANGED = "record changed since signing"
SIGNATURE_ALTERED = "signature record altered"
OTHER_RECORD = "signature belongs to another record"

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FORMAT = "workbench-signature/1"


@dataclass(frozen=True, slots=True)
class SignatureVerification:
    """Outcome of :func:`verify`.

    Attributes
    ----------
    status : str
        ``"valid"``, ``"record changed since signing"``, ``"signature record altered"``
        or ``"signature belongs to another record"``.
    signature_id : int
    printed_name, username, meaning : str
    signed_at : datetime
    record_type, record_id : str
    """

    status: str
    signature_id: int
    printed_name: str
    username: str
    meaning: str
    signed_at: datetime
    record_type: str
    record_id: str

    @property
    def valid(self) -> bool:
        """True when the signature and the record are unchanged."""
        return self.status == VALID


def signature_digest(signature: Signature) -> str:
    """SHA-256 binding the signer, meaning, time and signed record of ``signature``."""
    fields = {
        "format": _FORMAT,
        "user_id": signature.user_id,
        "username": signature.username,
        "printed_name": signature.printed_name,
        "role": signature.role,
        "meaning": signature.meaning,
        "signed_at": signature.signed_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "record_type": signature.record_type,
        "record_id": signature.record_id,
        "content_sha256": signature.content_sha256,
    }
    return hashlib.sha256(audit.canonical_json(fields)).hexdigest()


def _check_sha256(value: str) -> str:
    value = value.strip().lower()
    if not _SHA256_RE.match(value):
        raise SignatureError(
            f"Expected the record content's SHA-256 as 64 hex digits; found {value[:80]!r}."
        )
    return value


def sign(
    session: Session,
    *,
    username: str,
    password: str,
    meaning: SignatureMeaning | str,
    record_type: str,
    record_id: str | int,
    content_sha256: str,
    policy: PasswordPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> Signature:
    """Apply an electronic signature to a record after re-authenticating the signer.

    Parameters
    ----------
    session : Session
        The caller's transaction; the signature and its audit entry commit with it.
    username, password : str
        Both components, every time.
    meaning : SignatureMeaning or str
        ``authored``, ``reviewed``, ``approved``, ``responsibility`` or ``adjudicated``.
    record_type : str
        E.g. ``"report"``.
    record_id : str or int
        Id of the signed record.
    content_sha256 : str
        SHA-256 of the exact content signed (e.g. the PDF or canonical JSON).
    policy : PasswordPolicy
    now : datetime, optional
        For tests.

    Returns
    -------
    Signature

    Raises
    ------
    AuthenticationError, AccountLockedError
        Wrong credentials (counted towards lockout) or locked account.
    PasswordChangeRequiredError
        The password was reset or has expired and must be changed first.
    PermissionDeniedError
        The signer is an administrator.
    SignatureError
        Unknown meaning or malformed content hash.
    """
    try:
        meaning_value = SignatureMeaning(meaning).value
    except ValueError:
        raise SignatureError(
            f"Expected a signature meaning from {[m.value for m in SignatureMeaning]}; "
            f"found {meaning!r}."
        ) from None
    digest = _check_sha256(content_sha256)
    if not str(record_type).strip() or not str(record_id).strip():
        raise SignatureError("Expected the type and id of the record to sign; found none.")
    now = now or utcnow()
    user = authenticate(session, username, password, policy=policy, context="signature", now=now)
    if user.role == Role.ADMIN.value:
        raise PermissionDeniedError(
            f"Administrators cannot sign records; {user.username!r} has the admin role."
        )
    if user.must_change_password:
        raise PasswordChangeRequiredError(
            f"{user.username!r} must change their password (it was reset or has expired) "
            "before signing."
        )
    signature = Signature(
        user_id=user.id,
        printed_name=user.full_name,
        username=user.username,
        role=user.role,
        meaning=meaning_value,
        signed_at=now,
        record_type=str(record_type),
        record_id=str(record_id),
        content_sha256=digest,
    )
    signature.signature_sha256 = signature_digest(signature)
    session.add(signature)
    session.flush()
    audit.append(
        session,
        actor=user.username,
        action="signature.sign",
        record_type=signature.record_type,
        record_id=signature.record_id,
        new={
            "signature_id": signature.id,
            "printed_name": signature.printed_name,
            "role": signature.role,
            "meaning": signature.meaning,
            "signed_at": signature.signed_at,
            "content_sha256": signature.content_sha256,
            "signature_sha256": signature.signature_sha256,
        },
    )
    return signature


def verify(
    session: Session,
    signature_id: int,
    current_content_sha256: str,
    *,
    record_type: str | None = None,
    record_id: str | int | None = None,
) -> SignatureVerification:
    """Check a signature against the record's current content.

    Parameters
    ----------
    session : Session
    signature_id : int
    current_content_sha256 : str
        SHA-256 of the record's content now.
    record_type, record_id : optional
        When given, the signature must belong to this record.

    Returns
    -------
    SignatureVerification
        ``status`` is ``"valid"`` only when the signature row is intact, belongs
        to the record and the content hash is unchanged.

    Raises
    ------
    NotFoundError
        No signature with this id.
    """
    signature = session.get(Signature, signature_id)
    if signature is None:
        raise NotFoundError(f"Expected an existing signature; found no signature {signature_id}.")
    if signature_digest(signature) != signature.signature_sha256:
        status = SIGNATURE_ALTERED
    elif (record_type is not None and signature.record_type != str(record_type)) or (
        record_id is not None and signature.record_id != str(record_id)
    ):
        status = OTHER_RECORD
    elif current_content_sha256.strip().lower() != signature.content_sha256:
        status = RECORD_CHANGED
    else:
        status = VALID
    return SignatureVerification(
        status=status,
        signature_id=signature.id,
        printed_name=signature.printed_name,
        username=signature.username,
        meaning=signature.meaning,
        signed_at=signature.signed_at,
        record_type=signature.record_type,
        record_id=signature.record_id,
    )


def signatures_for(session: Session, record_type: str, record_id: str | int) -> list[Signature]:
    """Signatures of one record, oldest first."""
    return list(
        session.scalars(
            select(Signature)
            .where(Signature.record_type == record_type, Signature.record_id == str(record_id))
            .order_by(Signature.signed_at, Signature.id)
        )
    )


def manifestation(signature: Signature) -> str:
    """Human-readable signature line (11.50): printed name, time (UTC) and meaning."""
    when = signature.signed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{signature.printed_name} ({signature.username}), {when}, {signature.meaning}"


def require_different_signer(
    session: Session,
    *,
    record_type: str,
    record_id: str | int,
    username: str,
    meanings: Iterable[SignatureMeaning | str] = (SignatureMeaning.AUTHORED,),
    also_excluded: Iterable[str] = (),
) -> None:
    """Separation of duties: refuse a signer who already signed the record with ``meanings``.

    For example the author of a report cannot approve it::

        require_different_signer(s, record_type="report", record_id=r.id,
                                 username=approver, also_excluded=[r.created_by])

    Raises
    ------
    PermissionDeniedError
        ``username`` signed the record with one of ``meanings`` or is in ``also_excluded``.
    """
    name = username.strip().lower()
    wanted = {SignatureMeaning(m).value for m in meanings}
    excluded = {u.strip().lower() for u in also_excluded}
    for signature in signatures_for(session, record_type, record_id):
        if signature.username == name and signature.meaning in wanted:
            raise PermissionDeniedError(
                f"{name!r} signed {record_type} {record_id} as {signature.meaning!r} and cannot "
                "also sign it in this role; a different person must sign."
            )
    if name in excluded:
        raise PermissionDeniedError(
            f"{name!r} created {record_type} {record_id} and cannot also sign it in this role; "
            "a different person must sign."
        )
