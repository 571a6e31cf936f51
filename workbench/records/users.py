"""User accounts, passwords, lockout and login sessions.

Implements 21 CFR 11.10(d) (limiting access to authorized individuals),
11.10(g) (authority checks, together with :mod:`workbench.records.permissions`),
11.100 (unique signatures never reused or reassigned: usernames are unique
and accounts are disabled, never deleted) and 11.300 (controls for
identification codes and passwords: policy, aging, lockout, reporting of
unauthorized attempts to the audit trail).

Passwords are hashed with Argon2id (argon2-cffi). Tests select cheap
parameters with ``WORKBENCH_ARGON2_PROFILE=fast`` or
:func:`set_password_hasher`; the default uses argon2-cffi's recommended
parameters (RFC 9106).

Authentication failures say the same thing, ``"Invalid username or password."``,
whether the username is unknown, the password wrong, or the account locked or
disabled, and take a similar time (an unknown username is checked against a
dummy hash), so a sign-in reveals neither which accounts exist nor which are
locked. The audit trail records the real cause as a security event.

The password policy is a floor: a caller may pass a stricter
:class:`PasswordPolicy`, never a weaker one (:func:`effective_policy`).

After an administrator resets a password (:func:`reset_password`), the account
can only get a new password from the holder of the one-time code issued with
the reset (:func:`change_password` with ``reset_code``); the audit trail
records who reset the account and that the owner completed it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import (
    AccountLockedError,
    AuthenticationError,
    DuplicateError,
    NotFoundError,
    PasswordPolicyError,
    SessionExpiredError,
    WorkflowError,
)
from workbench.records import audit
from workbench.records.db import DurableWrite, run_durably
from workbench.records.models import PasswordHistory, Role, User, UserSession, utcnow

__all__ = [
    "PasswordPolicy",
    "PasswordReset",
    "DEFAULT_POLICY",
    "effective_policy",
    "INVALID_CREDENTIALS",
    "password_hasher",
    "set_password_hasher",
    "validate_password",
    "password_expired",
    "create_user",
    "get_user",
    "list_users",
    "authenticate",
    "change_password",
    "reset_password",
    "disable_user",
    "unlock_user",
    "start_session",
    "check_session",
    "end_session",
]

#: The one message of every failed authentication.
INVALID_CREDENTIALS = "Invalid username or password."

_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_RESERVED_USERNAMES = frozenset({"system", "unknown", "anonymous"})


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """Password, lockout and session rules (21 CFR 11.300).

    Attributes
    ----------
    min_length : int
        Minimum number of characters.
    min_character_classes : int
        How many of lower case, upper case, digits and other characters a
        password must mix.
    history : int
        A new password may not equal the current one or any of the last
        ``history`` passwords.
    max_age : timedelta or None
        Passwords older than this must be changed at the next login.
    lockout_threshold : int
        Consecutive failed attempts that lock the account.
    session_timeout : timedelta
        Inactivity after which a login session expires.
    """

    min_length: int = 12
    min_character_classes: int = 3
    history: int = 5
    max_age: timedelta | None = timedelta(days=90)
    lockout_threshold: int = 5
    session_timeout: timedelta = timedelta(minutes=15)


DEFAULT_POLICY = PasswordPolicy()


def effective_policy(policy: PasswordPolicy = DEFAULT_POLICY) -> PasswordPolicy:
    """``policy``, with its password rules raised to at least :data:`DEFAULT_POLICY`'s.

    Length, character classes, history and lockout threshold can be made
    stricter by a caller, never weaker; aging and the session timeout are the
    caller's (tests shorten them).
    """
    return replace(
        policy,
        min_length=max(policy.min_length, DEFAULT_POLICY.min_length),
        min_character_classes=max(
            policy.min_character_classes, DEFAULT_POLICY.min_character_classes
        ),
        history=max(policy.history, DEFAULT_POLICY.history),
        lockout_threshold=min(policy.lockout_threshold, DEFAULT_POLICY.lockout_threshold),
    )


@dataclass(frozen=True, slots=True)
class PasswordReset:
    """Outcome of :func:`reset_password`.

    Attributes
    ----------
    user : User
        The account, now with a temporary password that must be changed.
    one_time_code : str
        Give it to the account's owner only (not through the administrator
        who reset the account, where the organisation can arrange that); the
        owner needs it to set their new password. Only its SHA-256 is stored.
    """

    user: User
    one_time_code: str


_hasher: PasswordHasher | None = None
_dummy_hash: tuple[PasswordHasher, str] | None = None


def password_hasher() -> PasswordHasher:
    """Return the Argon2id hasher in use.

    ``WORKBENCH_ARGON2_PROFILE=fast`` selects cheap parameters (tests only).
    """
    global _hasher
    if _hasher is None:
        if os.environ.get("WORKBENCH_ARGON2_PROFILE", "").lower() == "fast":
            _hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        else:
            _hasher = PasswordHasher()
    return _hasher


def set_password_hasher(hasher: PasswordHasher | None) -> None:
    """Replace the hasher (``None`` goes back to the environment's choice)."""
    global _hasher, _dummy_hash
    _hasher = hasher
    _dummy_hash = None


def _dummy() -> str:
    global _dummy_hash
    hasher = password_hasher()
    if _dummy_hash is None or _dummy_hash[0] is not hasher:
        _dummy_hash = (hasher, hasher.hash(secrets.token_urlsafe(24)))
    return _dummy_hash[1]


def _verify(password_hash: str, password: str) -> bool:
    try:
        return password_hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _normalize_username(username: str) -> str:
    return username.strip().lower()


def validate_password(
    password: str, *, username: str | None = None, policy: PasswordPolicy = DEFAULT_POLICY
) -> None:
    """Check ``password`` against the policy's length and complexity rules.

    Parameters
    ----------
    password : str
        The candidate password (never echoed in messages).
    username : str, optional
        The account's username, which the password may not contain.
    policy : PasswordPolicy

    Raises
    ------
    PasswordPolicyError
        Naming every rule that is broken.
    """
    policy = effective_policy(policy)
    problems = []
    if len(password) < policy.min_length:
        problems.append(
            f"at least {policy.min_length} characters are required; found {len(password)}"
        )
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < policy.min_character_classes:
        problems.append(
            f"at least {policy.min_character_classes} of lower case, upper case, digits and "
            f"symbols are required; found {classes}"
        )
    if username and len(username) >= 3 and username.lower() in password.lower():
        problems.append("the password may not contain the username")
    if problems:
        raise PasswordPolicyError("The password does not meet the policy: " + "; ".join(problems))


def password_expired(
    user: User, *, policy: PasswordPolicy = DEFAULT_POLICY, now: datetime | None = None
) -> bool:
    """Whether ``user``'s password is older than the policy's ``max_age``."""
    if policy.max_age is None:
        return False
    return (now or utcnow()) - user.password_changed_at > policy.max_age


def get_user(session: Session, username: str) -> User:
    """Return the account named ``username``.

    Raises
    ------
    NotFoundError
        No such account. (Not for authentication: use :func:`authenticate`.)
    """
    user = session.scalars(
        select(User).where(User.username == _normalize_username(username))
    ).first()
    if user is None:
        raise NotFoundError(f"Expected an existing user account; found no user {username!r}.")
    return user


def list_users(session: Session, *, include_disabled: bool = True) -> list[User]:
    """Return the accounts ordered by username."""
    query = select(User).order_by(User.username)
    if not include_disabled:
        query = query.where(User.disabled.is_(False))
    return list(session.scalars(query))


def _public_state(user: User) -> dict[str, object]:
    return {
        "username": user.username,
        "full_name": user.full_name,
        "role": user.role,
        "must_change_password": user.must_change_password,
        "failed_attempts": user.failed_attempts,
        "locked": user.locked,
        "disabled": user.disabled,
    }


def create_user(
    session: Session,
    *,
    actor: str,
    username: str,
    full_name: str,
    role: Role | str,
    password: str,
    must_change_password: bool = True,
    policy: PasswordPolicy = DEFAULT_POLICY,
) -> User:
    """Create an account (the caller has checked ``user.manage``).

    Parameters
    ----------
    session : Session
    actor : str
        Username of the administrator (``"system"`` when bootstrapping).
    username : str
        2-64 characters of ``a-z 0-9 . _ -``, stored in lower case. Never reused.
    full_name : str
        Printed name shown with the user's signatures.
    role : Role or str
        ``qa``, ``reviewer``, ``auditor`` or ``admin``.
    password : str
        Initial password; must meet the policy.
    must_change_password : bool, default True
        An initial password set by an administrator must be changed by its
        owner before signing. Pass False only for scripted set-ups where the
        owner chose the password.
    policy : PasswordPolicy

    Returns
    -------
    User

    Raises
    ------
    DuplicateError
        The username exists (also when that account is disabled).
    PasswordPolicyError, ValueError
    """
    name = _normalize_username(username)
    if not _USERNAME_RE.match(name) or name in _RESERVED_USERNAMES:
        raise ValueError(
            "Expected a username of 2-64 characters from a-z, 0-9, '.', '_', '-' (not "
            f"'system', 'unknown' or 'anonymous'); found {username!r}."
        )
    if not full_name.strip():
        raise ValueError("Expected the user's full name (printed with signatures); found none.")
    role_value = Role(role).value
    if session.scalars(select(User.id).where(User.username == name)).first() is not None:
        raise DuplicateError(
            f"The username {name!r} is taken. Usernames are never reused, even after an "
            "account is disabled; choose another."
        )
    validate_password(password, username=name, policy=policy)
    now = utcnow()
    password_hash = password_hasher().hash(password)
    user = User(
        username=name,
        full_name=full_name.strip(),
        role=role_value,
        password_hash=password_hash,
        password_changed_at=now,
        must_change_password=must_change_password,
        failed_attempts=0,
        locked=False,
        disabled=False,
        created_at=now,
    )
    session.add(user)
    session.flush()
    session.add(PasswordHistory(user_id=user.id, password_hash=password_hash, created_at=now))
    audit.append(
        session,
        actor=actor,
        action="user.create",
        record_type="user",
        record_id=user.id,
        new=_public_state(user),
    )
    return user


def _record_failure(username: str, *, context: str, policy: PasswordPolicy) -> DurableWrite:
    def write(session: Session) -> None:
        user = session.scalars(
            select(User).where(User.username == username).with_for_update()
        ).first()
        if user is None:
            # The attempted name may be a mistyped password: keep only its hash.
            digest = hashlib.sha256(username.encode("utf-8")).hexdigest()
            audit.append_security_event(
                session,
                actor="unknown",
                action="login_failed",
                details={"context": context, "username_sha256": digest},
            )
            return
        user.failed_attempts += 1
        audit.append_security_event(
            session,
            actor=user.username,
            action="login_failed",
            record_id=user.id,
            details={"context": context, "failed_attempts": user.failed_attempts},
        )
        if not user.locked and user.failed_attempts >= policy.lockout_threshold:
            user.locked = True
            audit.append_security_event(
                session,
                actor="system",
                action="account_locked",
                record_id=user.id,
                details={"username": user.username, "failed_attempts": user.failed_attempts},
            )
        session.flush()

    return write


def authenticate(
    session: Session,
    username: str,
    password: str,
    *,
    policy: PasswordPolicy = DEFAULT_POLICY,
    context: str = "login",
    now: datetime | None = None,
) -> User:
    """Check a username and password; count failures and lock the account.

    Parameters
    ----------
    session : Session
        A session from :meth:`Database.session`, so that failure records
        survive the rollback caused by the exception (see
        :func:`workbench.records.db.run_durably`).
    username, password : str
    policy : PasswordPolicy
    context : str, default "login"
        Recorded with failures: ``"login"``, ``"signature"``, ``"password_change"``.
    now : datetime, optional
        For tests.

    Returns
    -------
    User
        The account. Check ``user.must_change_password``: such users may only
        change their password (signing and :func:`permissions.require` refuse).
        An expired password sets that flag here.

    Raises
    ------
    AuthenticationError
        Wrong username or password, or a locked or disabled account (the same
        message for all of them).
    """
    policy = effective_policy(policy)
    now = now or utcnow()
    name = _normalize_username(username)
    user = session.scalars(select(User).where(User.username == name).with_for_update()).first()
    if user is None:
        _verify(_dummy(), password)  # same work as for a real account
        run_durably(session, _record_failure(name, context=context, policy=policy))
        raise AuthenticationError(INVALID_CREDENTIALS)
    if not _verify(user.password_hash, password):
        run_durably(session, _record_failure(name, context=context, policy=policy))
        raise AuthenticationError(INVALID_CREDENTIALS)
    if user.locked or user.disabled:
        state = "disabled" if user.disabled else "locked"
        user_id = user.id

        def refuse(s: Session) -> None:
            audit.append_security_event(
                s,
                actor=name,
                action="login_refused",
                record_id=user_id,
                details={"context": context, "state": state},
            )

        run_durably(session, refuse)
        # The same answer as for a wrong password, so that a sign-in cannot tell
        # which accounts are locked or disabled; the audit trail has the cause.
        raise AuthenticationError(INVALID_CREDENTIALS)
    if password_hasher().check_needs_rehash(user.password_hash):
        user.password_hash = password_hasher().hash(password)
    if user.failed_attempts:
        user.failed_attempts = 0
    user.last_activity_at = now
    if not user.must_change_password and password_expired(user, policy=policy, now=now):
        user.must_change_password = True
        audit.append_security_event(
            session,
            actor="system",
            action="password_expired",
            record_id=user.id,
            details={"username": user.username, "password_changed_at": user.password_changed_at},
        )
    if context == "login":
        audit.append_security_event(session, actor=name, action="login", record_id=user.id)
    session.flush()
    return user


def _check_reuse(session: Session, user: User, password: str, policy: PasswordPolicy) -> None:
    hashes = [user.password_hash]
    hashes += session.scalars(
        select(PasswordHistory.password_hash)
        .where(PasswordHistory.user_id == user.id)
        .order_by(PasswordHistory.created_at.desc(), PasswordHistory.id.desc())
        .limit(policy.history)
    ).all()
    if any(_verify(h, password) for h in hashes):
        raise PasswordPolicyError(
            f"The password does not meet the policy: it may not repeat the current or the last "
            f"{policy.history} passwords. Choose a new one."
        )


def _set_password(session: Session, user: User, password: str, now: datetime) -> None:
    user.password_hash = password_hasher().hash(password)
    user.password_changed_at = now
    session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash, created_at=now))


def change_password(
    session: Session,
    *,
    username: str,
    old_password: str,
    new_password: str,
    reset_code: str | None = None,
    policy: PasswordPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> User:
    """Let an account's owner change their password (clears ``must_change_password``).

    Parameters
    ----------
    session : Session
    username, old_password, new_password : str
    reset_code : str, optional
        Required after an administrator reset the password: the one-time code
        issued with the reset (:class:`PasswordReset`). A wrong code counts as
        a failed attempt.
    policy : PasswordPolicy
    now : datetime, optional

    Raises
    ------
    AuthenticationError
        ``old_password`` or ``reset_code`` is wrong (counted as a failed
        attempt), or the account is locked or disabled.
    PasswordPolicyError
        The new password is too weak or one of the last ``policy.history``.
    """
    policy = effective_policy(policy)
    now = now or utcnow()
    user = authenticate(
        session, username, old_password, policy=policy, context="password_change", now=now
    )
    reset_by = user.reset_by
    if user.reset_code_sha256 is not None:
        given = hashlib.sha256((reset_code or "").strip().encode("utf-8")).hexdigest()
        if not hmac.compare_digest(given, user.reset_code_sha256):
            run_durably(
                session, _record_failure(user.username, context="reset_code", policy=policy)
            )
            raise AuthenticationError(
                "This password was reset by an administrator: enter the one-time code issued "
                "with the reset to set your new password."
            )
    validate_password(new_password, username=user.username, policy=policy)
    _check_reuse(session, user, new_password, policy)
    old = {
        "password_changed_at": user.password_changed_at,
        "must_change_password": user.must_change_password,
    }
    _set_password(session, user, new_password, now)
    user.must_change_password = False
    new: dict[str, object] = {"password_changed_at": now, "must_change_password": False}
    reason = "password changed by the account owner"
    if user.reset_code_sha256 is not None:
        new.update(reset_by=reset_by, reset_at=user.reset_at, one_time_code="verified")
        reason = f"password reset by {reset_by} completed with the one-time code"
        user.reset_code_sha256 = None
        user.reset_by = None
        user.reset_at = None
    audit.append(
        session,
        actor=user.username,
        action="user.change_password",
        record_type="user",
        record_id=user.id,
        old=old,
        new=new,
        reason=reason,
    )
    return user


def reset_password(
    session: Session,
    *,
    actor: str,
    username: str,
    new_password: str,
    reason: str,
    policy: PasswordPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> PasswordReset:
    """Set a temporary password (administrator) and issue a one-time code for the owner.

    The temporary password lets the owner sign in only to change it; setting
    the new password also needs the one-time code (see :func:`change_password`),
    so the administrator who knows the temporary password cannot finish the
    reset "as the owner" without that code. Also clears a lockout. The caller
    has checked ``user.manage``.

    Returns
    -------
    PasswordReset
        The account and the one-time code (shown once; only its hash is kept).

    Raises
    ------
    NotFoundError, PasswordPolicyError, ReasonRequiredError
    """
    policy = effective_policy(policy)
    now = now or utcnow()
    user = get_user(session, username)
    if user.username == _normalize_username(actor):
        raise WorkflowError(
            "Administrators cannot reset their own password; use change_password instead."
        )
    validate_password(new_password, username=user.username, policy=policy)
    _check_reuse(session, user, new_password, policy)
    old = _public_state(user)
    _set_password(session, user, new_password, now)
    code = secrets.token_hex(8)
    user.reset_code_sha256 = hashlib.sha256(code.encode("utf-8")).hexdigest()
    user.reset_by = _normalize_username(actor)
    user.reset_at = now
    user.must_change_password = True
    user.failed_attempts = 0
    user.locked = False
    audit.append(
        session,
        actor=actor,
        action="user.reset_password",
        record_type="user",
        record_id=user.id,
        old=old,
        new={**_public_state(user), "one_time_code_issued": True},
        reason=reason,
    )
    _end_user_sessions(session, user, now=now, reason="password_reset")
    return PasswordReset(user=user, one_time_code=code)


def disable_user(session: Session, *, actor: str, username: str, reason: str) -> User:
    """Disable an account for good (accounts are never deleted; the name stays taken).

    Raises
    ------
    NotFoundError, ReasonRequiredError, WorkflowError
        The account is already disabled, or an administrator disables themselves.
    """
    user = get_user(session, username)
    if user.disabled:
        raise WorkflowError(f"Expected an enabled account; {user.username!r} is already disabled.")
    if user.username == _normalize_username(actor):
        raise WorkflowError("Administrators cannot disable their own account.")
    old = _public_state(user)
    user.disabled = True
    audit.append(
        session,
        actor=actor,
        action="user.disable",
        record_type="user",
        record_id=user.id,
        old=old,
        new=_public_state(user),
        reason=reason,
    )
    _end_user_sessions(session, user, now=utcnow(), reason="disabled")
    return user


def unlock_user(session: Session, *, actor: str, username: str, reason: str) -> User:
    """Clear a lockout and the failed-attempt counter.

    Raises
    ------
    NotFoundError, ReasonRequiredError, WorkflowError
        The account is not locked.
    """
    user = get_user(session, username)
    if not user.locked and not user.failed_attempts:
        raise WorkflowError(f"Expected a locked account; {user.username!r} is not locked.")
    old = _public_state(user)
    user.locked = False
    user.failed_attempts = 0
    audit.append(
        session,
        actor=actor,
        action="user.unlock",
        record_type="user",
        record_id=user.id,
        old=old,
        new=_public_state(user),
        reason=reason,
    )
    return user


# --------------------------------------------------------------------------- login sessions


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(session: Session, user: User, *, now: datetime | None = None) -> str:
    """Open a login session for an authenticated user and return its bearer token.

    Only the token's SHA-256 is stored. Pass the token to :func:`check_session`
    on every request.
    """
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            token_sha256=_token_digest(token),
            user_id=user.id,
            created_at=now,
            last_activity_at=now,
        )
    )
    session.flush()
    return token


def check_session(
    session: Session,
    token: str,
    *,
    policy: PasswordPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
) -> User:
    """Return the session's user and record activity, or end an inactive session.

    Parameters
    ----------
    session : Session
    token : str
        From :func:`start_session`.
    policy : PasswordPolicy
        ``policy.session_timeout`` is the allowed inactivity (15 minutes by default).
    now : datetime, optional
        For tests.

    Raises
    ------
    SessionExpiredError
        Unknown or ended token, or inactive for longer than the timeout (the
        session is then ended and a security event recorded).
    AccountLockedError
        The account was locked or disabled meanwhile.
    """
    now = now or utcnow()
    record = session.scalars(
        select(UserSession).where(UserSession.token_sha256 == _token_digest(token))
    ).first()
    if record is None or record.ended_at is not None:
        raise SessionExpiredError("Your session has ended. Sign in again.")
    idle = now - record.last_activity_at
    if idle > policy.session_timeout:
        session_id = record.id
        minutes = policy.session_timeout.total_seconds() / 60

        def expire(s: Session) -> None:
            row = s.get(UserSession, session_id)
            if row is None or row.ended_at is not None:
                return
            row.ended_at = now
            row.end_reason = "timeout"
            audit.append_security_event(
                s,
                actor=row.user.username,
                action="session_expired",
                record_id=row.user_id,
                details={"idle_seconds": int(idle.total_seconds())},
            )

        run_durably(session, expire)
        raise SessionExpiredError(
            f"Your session expired after more than {minutes:g} minutes without activity. "
            "Sign in again."
        )
    user = record.user
    if user.locked or user.disabled:
        record.ended_at = now
        record.end_reason = "account_locked"
        raise AccountLockedError("This account is locked or disabled. Ask an administrator.")
    record.last_activity_at = now
    user.last_activity_at = now
    return user


def end_session(session: Session, token: str, *, now: datetime | None = None) -> None:
    """Log out: end the session (unknown or ended tokens are ignored)."""
    record = session.scalars(
        select(UserSession).where(UserSession.token_sha256 == _token_digest(token))
    ).first()
    if record is not None and record.ended_at is None:
        record.ended_at = now or utcnow()
        record.end_reason = "logout"
        audit.append_security_event(
            session, actor=record.user.username, action="logout", record_id=record.user_id
        )


def _end_user_sessions(session: Session, user: User, *, now: datetime, reason: str) -> None:
    for record in session.scalars(
        select(UserSession).where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
    ):
        record.ended_at = now
        record.end_reason = reason
