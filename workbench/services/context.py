"""The handle every service takes: the workdir and its records database.

Services are plain functions ``service(wb, actor, ...)``. ``wb`` is a
:class:`Workbench`; ``actor`` is the :class:`Actor` returned by
:func:`workbench.services.accounts.login` (or ``open_session`` /
``resume_session``). An actor carries a credential that only a sign-in issues,
so a hand-made ``Actor("qa.approver", ...)`` is refused. Every service re-reads
the actor's account inside its own transaction and checks the permission matrix
there, so a UI that forgets to hide a button still cannot do what the role
forbids.

Every write transaction that records a lock, an approval, a signature, a
completed run or a seal, or that brings the trail :data:`audit.CHECKPOINT_EVERY`
entries past the newest checkpoint, ends by signing the chain head with the
workbench's checkpoint key into a stored, audited checkpoint
(:func:`workbench.records.audit.record_checkpoint`).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from workbench.config import Workdir, resolve_workdir
from workbench.errors import AuthenticationError, IntegrityError, NotFoundError, StorageError
from workbench.records import anchors, audit
from workbench.records.db import Database, open_database
from workbench.records.models import User
from workbench.records.permissions import require

__all__ = ["Workbench", "Actor", "Progress", "issue_actor", "sha256_json", "sha256_file"]

#: Progress callback: ``progress(done, total, message)``.
Progress = Any


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated user as the services see it.

    Parameters
    ----------
    username, full_name, role : str
        Account fields at login time; services re-check them in the database.
    credential : str
        Proof that a sign-in in this process issued the actor
        (:func:`issue_actor`); services refuse an actor without a valid one.
    """

    username: str
    full_name: str
    role: str
    credential: str = field(default="", repr=False, compare=False)


#: Key of the actor credentials issued by this process; never stored or shown.
_ACTOR_KEY = secrets.token_bytes(32)


def _credential_mac(nonce: str, username: str, role: str) -> str:
    message = f"{nonce}\n{username}\n{role}".encode()
    return hmac.new(_ACTOR_KEY, message, hashlib.sha256).hexdigest()


def issue_actor(username: str, full_name: str, role: str) -> Actor:
    """The :class:`Actor` of a user who has just authenticated (sign-in helpers only).

    Call it only after checking the password (``users.authenticate``) or a live
    login session (``users.check_session``).
    """
    nonce = secrets.token_hex(16)
    return Actor(
        username=username,
        full_name=full_name,
        role=role,
        credential=f"{nonce}.{_credential_mac(nonce, username, role)}",
    )


def _issued_by_sign_in(actor: Actor) -> bool:
    nonce, _, mac = str(getattr(actor, "credential", "")).partition(".")
    if not nonce or not mac:
        return False
    return hmac.compare_digest(mac, _credential_mac(nonce, actor.username, actor.role))


@dataclass(slots=True)
class Workbench:
    """An open workbench installation: paths plus the records database.

    Parameters
    ----------
    workdir : Workdir
        Paths of the installation.
    db : Database
        The records database.
    """

    workdir: Workdir
    db: Database

    @classmethod
    def open(cls, workdir: str | Path | None = None, db_url: str | None = None) -> Workbench:
        """Open (and migrate) the workbench at ``workdir``.

        Parameters
        ----------
        workdir : str or Path, optional
            Default ``$WORKBENCH_HOME``, else ``./var``.
        db_url : str, optional
            Default ``$WORKBENCH_DB_URL``, else SQLite ``workdir/workbench.db``.

        Returns
        -------
        Workbench
        """
        paths = resolve_workdir(workdir, db_url).ensure()
        return cls(workdir=paths, db=open_database(paths.db_url))

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session whose changes and audit entries commit together or not at all.

        Raises
        ------
        StorageError
            The disk is full (or a file-size limit was hit); the transaction was
            rolled back and nothing was saved.
        """
        try:
            with self.db.session(readonly=readonly) as session:
                yield session
                if not readonly and audit.needs_checkpoint(session):
                    audit.record_checkpoint(
                        session, self.workdir.keys_dir / audit.CHECKPOINT_KEY_NAME
                    )
        except (OperationalError, OSError) as error:
            if _is_storage_full(error):
                raise StorageError(
                    "The disk is full (or a file-size limit was reached): free space and retry. "
                    "Nothing was saved."
                ) from error
            raise

    def close(self) -> None:
        """Release database connections."""
        self.db.dispose()


_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def _is_storage_full(error: BaseException) -> bool:
    """Whether an error means the disk (or the file-size limit) is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return True
        text = str(current).lower()
        if "database or disk is full" in text or "disk i/o error" in text or "no space" in text:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def current_user(session: Session, actor: Actor, action: str | None = None) -> User:
    """Re-read ``actor``'s account and check that it may perform ``action``.

    Parameters
    ----------
    session : Session
    actor : Actor
    action : str, optional
        An action of the permission matrix (:mod:`workbench.records.permissions`).

    Returns
    -------
    User

    Raises
    ------
    AuthenticationError
        The actor was not issued by a sign-in, or the account no longer
        exists, is disabled or locked.
    PermissionDeniedError
        The role does not allow ``action``; the refusal is written to the audit trail.
    IntegrityError
        The account's role, name or disabled flag differs from its audited value (changed
        outside the services): nothing is done on its authority.
    """
    if not isinstance(actor, Actor) or not _issued_by_sign_in(actor):
        raise AuthenticationError(
            "Expected an actor returned by a sign-in (accounts.login, open_session or "
            "resume_session); found one that no sign-in issued. Sign in."
        )
    user = session.scalars(select(User).where(User.username == actor.username)).first()
    if user is None:
        raise AuthenticationError("This account no longer exists; sign in again.")
    if action is not None:
        differs = anchors.check_user(session, user)
        if differs:
            raise IntegrityError(
                f"The account {user.username!r} differs from its audited record ("
                + "; ".join(f"{m.field} is {m.found}, audited {m.anchored}" for m in differs)
                + "): it was changed outside the workbench. Nothing is done on its authority; "
                "an administrator should run 'workbench audit verify'."
            )
        require(user, action, session=session)
    elif user.disabled or user.locked:
        raise AuthenticationError("This account is disabled or locked; sign in again.")
    return user


def get_one(session: Session, model: type[Any], what: str, **filters: Any) -> Any:
    """Fetch exactly one record by its unique fields or raise :class:`NotFoundError`."""
    statement = select(model)
    for name, value in filters.items():
        statement = statement.where(getattr(model, name) == value)
    found = session.scalars(statement).first()
    if found is None:
        described = ", ".join(f"{k}={v!r}" for k, v in filters.items())
        raise NotFoundError(f"No {what} with {described}.")
    return found


def sha256_json(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value`` (sorted keys, no whitespace, UTF-8)."""
    return hashlib.sha256(audit.canonical_json(value)).hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dumps(value: Any) -> str:
    """Canonical JSON text of ``value``."""
    return audit.canonical_json(value).decode("utf-8")
