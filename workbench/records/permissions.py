"""Authority checks: which role may do what (21 CFR 11.10(d), 11.10(g)).

The matrix below is the single source of truth; the services call
:func:`require` before every use case, so the UI hiding a button is never the
only protection.

Denied attempts
---------------
When :func:`require` is given the caller's ``session``, a denied attempt is
written to the audit trail as the security event ``security.permission_denied``
(kept even though the caller's transaction then rolls back, see
:func:`workbench.records.db.run_durably`). Without a session nothing is
written; services always pass one.
"""

from __future__ import annotations

import difflib
from enum import StrEnum

from sqlalchemy.orm import Session

from workbench.errors import AccountLockedError, PasswordChangeRequiredError, PermissionDeniedError
from workbench.records import audit
from workbench.records.db import run_durably
from workbench.records.models import Role, User

__all__ = ["Action", "PERMISSIONS", "allowed", "roles_allowed", "require", "as_action"]


class Action(StrEnum):
    """Actions that the services guard."""

    TESTSET_IMPORT = "testset.import"
    TESTSET_LOCK = "testset.lock"
    TESTSET_VERIFY = "testset.verify"
    MODEL_REGISTER = "model.register"
    PROTOCOL_CREATE = "protocol.create"
    PROTOCOL_APPROVE = "protocol.approve"
    RUN_START = "run.start"
    RUN_VIEW = "run.view"
    DISCREPANCY_ADJUDICATE = "discrepancy.adjudicate"
    REPORT_BUILD = "report.build"
    REPORT_SIGN_AUTHOR = "report.sign.author"
    REPORT_SIGN_REVIEW = "report.sign.review"
    REPORT_SIGN_APPROVE = "report.sign.approve"
    REPORT_SEAL = "report.seal"
    REPORT_VERIFY = "report.verify"
    AUDIT_VIEW = "audit.view"
    AUDIT_EXPORT = "audit.export"
    AUDIT_VERIFY = "audit.verify"
    USER_MANAGE = "user.manage"
    PACS_CONFIGURE = "pacs.configure"
    STUDY_DESIGN = "study.design"
    STUDY_READ = "study.read"
    STUDY_VIEW = "study.view"


A = Action

#: Role x action matrix. Administrators manage accounts and the PACS servers
#: offered to users (``pacs.configure``) only: they cannot sign or alter
#: validation records.
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.QA: frozenset(
        {
            A.TESTSET_IMPORT,
            A.TESTSET_LOCK,
            A.TESTSET_VERIFY,
            A.MODEL_REGISTER,
            A.PROTOCOL_CREATE,
            A.PROTOCOL_APPROVE,
            A.RUN_START,
            A.RUN_VIEW,
            A.REPORT_BUILD,
            A.REPORT_SIGN_AUTHOR,
            A.REPORT_SIGN_APPROVE,
            A.REPORT_SEAL,
            A.REPORT_VERIFY,
            A.AUDIT_VIEW,
            A.AUDIT_VERIFY,
            A.STUDY_DESIGN,
            A.STUDY_VIEW,
        }
    ),
    Role.REVIEWER: frozenset(
        {
            A.RUN_VIEW,
            A.DISCREPANCY_ADJUDICATE,
            A.REPORT_SIGN_REVIEW,
            A.REPORT_VERIFY,
            A.AUDIT_VIEW,
            A.STUDY_READ,
        }
    ),
    Role.AUDITOR: frozenset(
        {
            A.RUN_VIEW,
            A.TESTSET_VERIFY,
            A.REPORT_VERIFY,
            A.AUDIT_VIEW,
            A.AUDIT_EXPORT,
            A.AUDIT_VERIFY,
            A.STUDY_VIEW,
        }
    ),
    Role.ADMIN: frozenset({A.USER_MANAGE, A.PACS_CONFIGURE, A.AUDIT_VIEW, A.AUDIT_VERIFY}),
}


def as_action(action: Action | str) -> Action:
    """Convert ``action`` to :class:`Action`, suggesting the closest name on a typo.

    Raises
    ------
    ValueError
        Unknown action.
    """
    try:
        return Action(action)
    except ValueError:
        close = difflib.get_close_matches(str(action), [a.value for a in Action], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Expected one of the actions {[a.value for a in Action]}; found {action!r}.{hint}"
        ) from None


def allowed(role: Role | str, action: Action | str) -> bool:
    """Whether ``role`` may perform ``action``."""
    return as_action(action) in PERMISSIONS[Role(role)]


def roles_allowed(action: Action | str) -> list[Role]:
    """Roles that may perform ``action``, in matrix order."""
    wanted = as_action(action)
    return [role for role, actions in PERMISSIONS.items() if wanted in actions]


def require(user: User, action: Action | str, *, session: Session | None = None) -> None:
    """Refuse ``action`` unless ``user``'s role allows it and the account is usable.

    Parameters
    ----------
    user : User
        The authenticated user.
    action : Action or str
        E.g. ``"testset.lock"``.
    session : Session, optional
        When given, a denied attempt is recorded as ``security.permission_denied``.

    Raises
    ------
    PermissionDeniedError
        The role does not allow the action.
    AccountLockedError
        The account is locked or disabled.
    PasswordChangeRequiredError
        The password was reset or has expired; the user must change it first.
    ValueError
        Unknown action.
    """
    wanted = as_action(action)
    if user.disabled or user.locked:
        raise AccountLockedError(
            f"The account {user.username!r} is locked or disabled and may not {wanted.value}."
        )
    if user.must_change_password:
        raise PasswordChangeRequiredError(
            f"{user.username!r} must change their password before they may {wanted.value}."
        )
    if wanted in PERMISSIONS[Role(user.role)]:
        return
    if session is not None:
        username, user_id, role = user.username, user.id, user.role

        def record(s: Session) -> None:
            audit.append_security_event(
                s,
                actor=username,
                action="permission_denied",
                record_id=user_id,
                details={"action": wanted.value, "role": role},
            )

        run_durably(session, record)
    roles = ", ".join(r.value for r in roles_allowed(wanted)) or "none"
    raise PermissionDeniedError(
        f"The role {user.role!r} may not {wanted.value!r} (user {user.username!r}); "
        f"roles allowed: {roles}."
    )
