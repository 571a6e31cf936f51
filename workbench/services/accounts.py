"""Sign-in, login sessions and account administration.

``login`` checks the password (failures are counted and lock the account; the
message never says whether the username exists), then that the account's name,
role and disabled flag are those of the audit trail (a role raised in the
database grants no sign-in). ``open_session`` and ``resume_session`` give the
app a bearer token whose inactivity timeout is enforced by the records layer.
Administration (create, disable, unlock, reset) needs the ``user.manage``
permission; administrators cannot sign or alter validation records (see the
permission matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session

from workbench.errors import IntegrityError
from workbench.records import anchors, audit, users
from workbench.records.db import run_durably
from workbench.records.models import Role
from workbench.records.permissions import allowed
from workbench.services.context import Actor, Workbench, current_user, issue_actor

__all__ = [
    "UserInfo",
    "login",
    "open_session",
    "resume_session",
    "close_session",
    "change_password",
    "create_user",
    "disable_user",
    "unlock_user",
    "reset_password",
    "list_users",
    "bootstrap_admin",
    "Role",
    "allowed",
]


@dataclass(frozen=True, slots=True)
class UserInfo:
    """An account as shown to administrators (never the password hash).

    ``one_time_code`` is set only in the answer to :func:`reset_password`: the
    code the owner needs to set their new password (shown once, never stored).
    """

    username: str
    full_name: str
    role: str
    locked: bool
    disabled: bool
    must_change_password: bool
    failed_attempts: int
    created_at: str
    one_time_code: str | None = field(default=None, repr=False)


def _actor(user: users.User) -> Actor:
    return issue_actor(user.username, user.full_name, user.role)


def _as_audited(session: Session, user: users.User, context: str) -> users.User:
    """``user``, refused when its name, role or disabled flag differs from the audit trail.

    A role raised (or an account re-enabled) directly in the database does not
    grant a sign-in; the refusal is kept as a security event.
    """
    differs = anchors.check_user(session, user)
    if not differs:
        return user
    user_id, name = user.id, user.username
    fields = sorted({d.field for d in differs})

    def refuse(s: Session) -> None:
        audit.append_security_event(
            s,
            actor=name,
            action="login_refused",
            record_id=user_id,
            details={"context": context, "state": "differs from audit trail", "fields": fields},
        )

    run_durably(session, refuse)
    raise IntegrityError(
        f"Account {name!r} differs from its audited record ("
        + "; ".join(d.describe() for d in differs)
        + "); sign-in is refused. An administrator should run 'workbench audit verify'."
    )


def login(wb: Workbench, username: str, password: str) -> Actor:
    """Authenticate with username and password.

    Raises
    ------
    AuthenticationError
        Wrong username or password (one message for both), locked or disabled account.
    IntegrityError
        The account's name, role or disabled flag was changed outside the
        workbench (it differs from the audit trail; see
        :func:`workbench.records.anchors.check_user`).
    """
    with wb.transaction() as session:
        user = users.authenticate(session, username, password)
        return _actor(_as_audited(session, user, "login"))


def open_session(wb: Workbench, username: str, password: str) -> tuple[Actor, str]:
    """Authenticate and start a login session; returns the actor and its bearer token.

    Raises
    ------
    AuthenticationError, IntegrityError
        As :func:`login`.
    """
    with wb.transaction() as session:
        user = _as_audited(session, users.authenticate(session, username, password), "session")
        token = users.start_session(session, user)
        return _actor(user), token


def resume_session(wb: Workbench, token: str) -> Actor:
    """The actor of a live session (activity recorded).

    Raises
    ------
    SessionExpiredError
        Inactive for longer than the policy's timeout, or ended.
    IntegrityError
        The account was changed outside the workbench since (as :func:`login`).
    """
    with wb.transaction() as session:
        return _actor(_as_audited(session, users.check_session(session, token), "resume"))


def close_session(wb: Workbench, token: str) -> None:
    """End a login session (sign out)."""
    with wb.transaction() as session:
        users.end_session(session, token)


def change_password(
    wb: Workbench,
    username: str,
    old_password: str,
    new_password: str,
    *,
    reset_code: str | None = None,
) -> None:
    """The account owner changes their password (policy and history enforced).

    After an administrator reset the password, ``reset_code`` (the one-time code
    issued with the reset) is required as well.
    """
    with wb.transaction() as session:
        users.change_password(
            session,
            username=username,
            old_password=old_password,
            new_password=new_password,
            reset_code=reset_code,
        )


def _info(user: users.User) -> UserInfo:
    return UserInfo(
        username=user.username,
        full_name=user.full_name,
        role=user.role,
        locked=user.locked,
        disabled=user.disabled,
        must_change_password=user.must_change_password,
        failed_attempts=user.failed_attempts,
        created_at=user.created_at.isoformat(),
    )


def create_user(
    wb: Workbench,
    actor: Actor,
    *,
    username: str,
    full_name: str,
    role: str,
    password: str,
    must_change_password: bool = True,
) -> UserInfo:
    """Create an account (``user.manage``). The owner changes the initial password first."""
    with wb.transaction() as session:
        admin = current_user(session, actor, "user.manage")
        user = users.create_user(
            session,
            actor=admin.username,
            username=username,
            full_name=full_name,
            role=Role(role),
            password=password,
            must_change_password=must_change_password,
        )
        return _info(user)


def disable_user(wb: Workbench, actor: Actor, username: str, *, reason: str) -> UserInfo:
    """Disable an account (never deleted; the username is never reused)."""
    with wb.transaction() as session:
        admin = current_user(session, actor, "user.manage")
        return _info(
            users.disable_user(session, actor=admin.username, username=username, reason=reason)
        )


def unlock_user(wb: Workbench, actor: Actor, username: str, *, reason: str) -> UserInfo:
    """Unlock an account locked after failed attempts."""
    with wb.transaction() as session:
        admin = current_user(session, actor, "user.manage")
        return _info(
            users.unlock_user(session, actor=admin.username, username=username, reason=reason)
        )


def reset_password(
    wb: Workbench, actor: Actor, username: str, *, new_password: str, reason: str
) -> UserInfo:
    """Set a temporary password; its owner must change it before signing anything.

    Returns
    -------
    UserInfo
        With ``one_time_code``: the owner needs it, with the temporary password,
        to set their new password. Hand it to the owner only.
    """
    with wb.transaction() as session:
        admin = current_user(session, actor, "user.manage")
        done = users.reset_password(
            session,
            actor=admin.username,
            username=username,
            new_password=new_password,
            reason=reason,
        )
        return replace(_info(done.user), one_time_code=done.one_time_code)


def list_users(wb: Workbench, actor: Actor) -> list[UserInfo]:
    """Every account, disabled ones included (``user.manage``)."""
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "user.manage")
        return [_info(u) for u in users.list_users(session)]


def bootstrap_admin(wb: Workbench, *, username: str, full_name: str, password: str) -> UserInfo:
    """Create the first administrator of an empty installation.

    Raises
    ------
    WorkflowError
        Accounts exist already: further accounts are made by an administrator.
    """
    from workbench.errors import WorkflowError

    with wb.transaction() as session:
        if users.list_users(session):
            raise WorkflowError(
                "This workbench already has accounts; an administrator creates new ones."
            )
        user = users.create_user(
            session,
            actor="system",
            username=username,
            full_name=full_name,
            role=Role.ADMIN,
            password=password,
            must_change_password=False,
        )
        return _info(user)
