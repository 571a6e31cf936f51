"""The append-only, hash-chained audit trail (21 CFR 11.10(e)).

Every entry records who (``actor``) did what (``action``) to which record
(``record_type``, ``record_id``), the values before and after, the reason for a
modification, and a UTC timestamp. Entries are numbered ``1, 2, 3, ...``
without gaps; each entry's ``entry_hash`` is the SHA-256 of the canonical JSON
of all its other fields, including ``prev_hash``, the hash of the entry before
it (64 zeros for the first). Editing, deleting, inserting or reordering an
entry therefore breaks the chain at that entry, which :func:`verify_chain`
reports. Removing entries from the end cannot be seen from the chain alone;
a signed checkpoint (:func:`export_checkpoint`) kept outside the database
makes it visible (:func:`verify_checkpoint`).

The database refuses ``UPDATE`` and ``DELETE`` on ``audit_log`` (triggers
created by the migrations). :func:`append` writes in the caller's session, so
the audited change and its entry commit in one transaction or not at all.

Concurrency
-----------
Appends are serialized: on SQLite every write session holds the database
write lock from its first statement (``BEGIN IMMEDIATE``, see
:mod:`workbench.records.db`); on PostgreSQL :func:`append` takes a
transaction-scoped advisory lock before reading the chain head. Either way two
writers can never read the same head, so sequence numbers stay gap-free and
the chain linear, with threads and processes alike.

Which actions need a reason
---------------------------
An action is a *modification* when its last dotted part is, or starts with
``<verb>_`` for, one of :data:`MODIFICATION_VERBS` (``update``, ``edit``,
``delete``, ``disable``, ``unlock``, ``reset``, ``supersede``, ...), e.g.
``testset.update``, ``user.reset_password``, ``protocol.supersede``.
Creating a record, recording a workflow step (``lock``, ``approve``, ``sign``,
``start``, ``complete``) and security events are not modifications.
:func:`append` refuses a modification without a non-blank ``reason``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path, PurePath
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from workbench.errors import AuditChainError, ConfigurationError, ReasonRequiredError
from workbench.records.models import AuditCheckpoint, AuditEntry, utcnow

__all__ = [
    "GENESIS_HASH",
    "MODIFICATION_VERBS",
    "SECURITY_PREFIX",
    "CHECKPOINT_KEY_NAME",
    "ChainStatus",
    "canonical_json",
    "to_jsonable",
    "is_modification",
    "entry_fields",
    "entry_hash",
    "append",
    "append_security_event",
    "head",
    "verify_chain",
    "load_or_create_signing_key",
    "load_public_key",
    "export_checkpoint",
    "verify_checkpoint",
    "export_audit",
    "write_audit_csv",
    "write_audit_json",
    "audit_csv_text",
    "count_entries",
    "CHECKPOINT_ACTION",
    "CHECKPOINT_EVERY",
    "ANCHORING_ACTIONS",
    "needs_checkpoint",
    "record_checkpoint",
    "verify_stored_checkpoints",
    "bounded_text",
    "REDACTED",
    "redact_for_blinded_reviewer",
]

#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64

#: Verbs whose actions change or remove an existing record and need a reason.
MODIFICATION_VERBS: frozenset[str] = frozenset(
    {
        "update",
        "edit",
        "modify",
        "correct",
        "change",
        "set",
        "rename",
        "delete",
        "remove",
        "void",
        "revoke",
        "supersede",
        "retire",
        "reopen",
        "restore",
        "disable",
        "enable",
        "unlock",
        "reset",
    }
)

#: Action prefix of security events (failed logins, lockouts, denied actions).
SECURITY_PREFIX = "security."

#: File name of the checkpoint signing key inside the workdir's ``keys`` folder.
CHECKPOINT_KEY_NAME = "audit_checkpoint_ed25519.pem"

#: Action of the audit entry written for every stored checkpoint.
CHECKPOINT_ACTION = "audit.checkpoint"

#: A checkpoint is signed automatically at least every this many entries.
CHECKPOINT_EVERY = 200

#: Steps after which the chain head is signed automatically (see :func:`needs_checkpoint`).
#: They include every step whose entry anchors a record's changing state (an
#: account's role, a discrepancy's status), so that :func:`verify_stored_checkpoints`
#: can demand a signed checkpoint after each of them.
ANCHORING_ACTIONS: frozenset[str] = frozenset(
    {
        "testset.lock",
        "protocol.approve",
        "run.complete",
        "report.sign",
        "report.seal",
        "signature.sign",
        "user.create",
        "user.disable",
        "user.reset_password",
        "discrepancy.create",
        "discrepancy.adjudicate",
    }
)

_APPENDED = "workbench.audit.appended"
_CHECKPOINT_FORMAT = "workbench-audit-checkpoint/1"
_PG_APPEND_LOCK = 0x57420002  # advisory lock key that serializes appends
_CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_EXPORT_COLUMNS = (
    "seq",
    "ts",
    "actor",
    "action",
    "record_type",
    "record_id",
    "old_value",
    "new_value",
    "reason",
    "prev_hash",
    "entry_hash",
)


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """Result of a successful chain verification.

    Attributes
    ----------
    count : int
        Number of entries verified.
    head_seq : int
        Sequence number of the last entry (0 when empty).
    head_hash : str
        ``entry_hash`` of the last entry (:data:`GENESIS_HASH` when empty).
    verified_at : datetime
        UTC time of the verification.
    """

    count: int
    head_seq: int
    head_hash: str
    verified_at: datetime
    checkpoints: int = 0
    covered: int = 0


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON types (dict, list, str, int, float, bool, None).

    Datetimes become ISO 8601 strings, paths POSIX strings, enums their value,
    sets sorted lists, decimals strings, bytes their SHA-256 (never raw content).

    Raises
    ------
    TypeError
        For values with no JSON form, or non-finite floats.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"Expected a finite number in an audit value; found {value!r}.")
        return value
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TypeError(f"Expected a timezone-aware datetime; found {value!r}.")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((to_jsonable(v) for v in value), key=canonical_json)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return to_jsonable(item())
    raise TypeError(f"Expected a JSON-serializable audit value; found {type(value).__name__}.")


def canonical_json(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, no NaN.

    Parameters
    ----------
    value : Any
        Plain JSON data (see :func:`to_jsonable`).

    Returns
    -------
    bytes
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def bounded_text(value: Any, *, limit: int = 128) -> str:
    """Printable, bounded form of text that may come from outside (a PDF, a file name).

    Control, line-separator and bidirectional-formatting characters (e.g. a
    right-to-left override) become ``?``; text longer than ``limit`` is cut and
    ends with ``...``.

    Parameters
    ----------
    value : Any
        Converted with ``str``.
    limit : int, default 128
        Maximum length of the result.
    """
    import unicodedata

    text_value = "".join(
        ch if ch.isprintable() and unicodedata.category(ch) not in {"Cf", "Zl", "Zp"} else "?"
        for ch in str(value)[: limit + 1]
    )
    return text_value if len(text_value) <= limit else text_value[: limit - 3] + "..."


def is_modification(action: str) -> bool:
    """Whether ``action`` modifies an existing record and so needs a reason.

    Parameters
    ----------
    action : str
        Dotted action name such as ``"testset.update"``.

    Returns
    -------
    bool
    """
    if action.startswith(SECURITY_PREFIX):
        return False
    verb = action.rsplit(".", 1)[-1].lower()
    return any(verb == v or verb.startswith(v + "_") for v in MODIFICATION_VERBS)


def entry_fields(entry: AuditEntry) -> dict[str, Any]:
    """Return the fields of ``entry`` that its hash covers, as plain JSON data."""
    return {
        "seq": entry.seq,
        "ts": _format_ts(entry.ts),
        "actor": entry.actor,
        "action": entry.action,
        "record_type": entry.record_type,
        "record_id": entry.record_id,
        "old_value": entry.old_value,
        "new_value": entry.new_value,
        "reason": entry.reason,
        "prev_hash": entry.prev_hash,
    }


def entry_hash(entry: AuditEntry) -> str:
    """SHA-256 (hex) of the canonical JSON of :func:`entry_fields`."""
    return hashlib.sha256(canonical_json(entry_fields(entry))).hexdigest()


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_APPEND_LOCK})
    # SQLite: the write session already holds the database write lock (BEGIN IMMEDIATE).


def head(session: Session) -> AuditEntry | None:
    """Return the last entry of the chain, or ``None`` when the trail is empty."""
    return session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)).first()


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    record_type: str,
    record_id: str | int | None,
    old: Any = None,
    new: Any = None,
    reason: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit trail in the caller's transaction.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        The session that makes the audited change; the entry commits with it.
    actor : str
        Username of who did it (``"system"`` for the workbench itself).
    action : str
        Dotted action name, e.g. ``"testset.lock"``.
    record_type : str
        Kind of record, e.g. ``"test_set"``.
    record_id : str or int or None
        Id of the record (stored as text).
    old, new : Any, optional
        Values before and after; converted with :func:`to_jsonable`.
    reason : str, optional
        Why; required (non-blank) for modifications (:func:`is_modification`).

    Returns
    -------
    AuditEntry
        The flushed entry with its ``seq`` and ``entry_hash``.

    Raises
    ------
    ReasonRequiredError
        ``action`` is a modification and ``reason`` is blank.
    ValueError
        ``actor``, ``action`` or ``record_type`` is empty.
    """
    for name, value in (("actor", actor), ("action", action), ("record_type", record_type)):
        if not value or not str(value).strip():
            raise ValueError(f"Expected a non-empty {name} for the audit entry; found {value!r}.")
    if is_modification(action) and not (reason and reason.strip()):
        raise ReasonRequiredError(
            f"'{action}' modifies an existing record, so a reason for the change is required; "
            "found none. Give the reason for the change."
        )
    old_value = to_jsonable(old)
    new_value = to_jsonable(new)
    if record_id is not None:
        # Ids can come from untrusted input (a PDF handed in for verification).
        record_id = bounded_text(record_id)
    _lock_chain(session)
    last = head(session)
    now = utcnow()
    if last is not None and last.ts > now:
        now = last.ts  # keep timestamps non-decreasing along the chain if the clock steps back
    entry = AuditEntry(
        seq=1 if last is None else last.seq + 1,
        ts=now,
        actor=str(actor),
        action=str(action),
        record_type=str(record_type),
        record_id=None if record_id is None else str(record_id),
        old_value=old_value,
        new_value=new_value,
        reason=reason,
        prev_hash=GENESIS_HASH if last is None else last.entry_hash,
    )
    entry.entry_hash = entry_hash(entry)
    session.add(entry)
    session.flush()
    session.info.setdefault(_APPENDED, []).append((entry.seq, entry.action))
    return entry


def append_security_event(
    session: Session,
    *,
    actor: str,
    action: str,
    record_type: str = "user",
    record_id: str | int | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append a security event (``action`` is prefixed with ``"security."``).

    Security events record failed logins, lockouts, expired sessions and
    denied actions. They never contain passwords.
    """
    if not action.startswith(SECURITY_PREFIX):
        action = SECURITY_PREFIX + action
    return append(
        session,
        actor=actor,
        action=action,
        record_type=record_type,
        record_id=record_id,
        new=dict(details) if details else None,
    )


def _iter_entries(
    session: Session, batch_size: int, after_seq: int | None = None
) -> Iterator[AuditEntry]:
    last_seq: int | None = after_seq
    while True:
        query = select(AuditEntry).order_by(AuditEntry.seq).limit(batch_size)
        if last_seq is not None:
            query = query.where(AuditEntry.seq > last_seq)
        batch = list(session.scalars(query))
        if not batch:
            return
        yield from batch
        last_seq = batch[-1].seq
        for entry in batch:
            session.expunge(entry)


def verify_chain(
    session: Session, *, batch_size: int = 2000, after: tuple[int, str] | None = None
) -> ChainStatus:
    """Walk the audit trail and check every link.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Any session on the database.
    batch_size : int, default 2000
        Entries read per query.
    after : (int, str), optional
        ``(seq, entry_hash)`` of an entry already verified (e.g. the head of a
        signed checkpoint): only the entries after it are walked, and the
        first of them must link to that hash.

    Returns
    -------
    ChainStatus
        Count and head of the intact chain.

    Raises
    ------
    AuditChainError
        At the first bad entry, with its sequence number in ``.sequence``: a
        missing number (deleted entry), a ``prev_hash`` that does not match the
        entry before (inserted, deleted or reordered entries), or an
        ``entry_hash`` that does not match the content (edited entry).
    """
    session.flush()
    expected_seq = 1 if after is None else after[0] + 1
    prev_hash = GENESIS_HASH if after is None else after[1]
    count = expected_seq - 1
    for entry in _iter_entries(session, batch_size, None if after is None else after[0]):
        if entry.seq != expected_seq:
            raise AuditChainError(
                f"Audit trail broken at entry {expected_seq}: expected entry {expected_seq} "
                f"next, found entry {entry.seq} (entries are missing).",
                sequence=expected_seq,
            )
        if entry.prev_hash != prev_hash:
            raise AuditChainError(
                f"Audit trail broken at entry {entry.seq}: its prev_hash {entry.prev_hash[:12]}... "
                f"does not match the hash {prev_hash[:12]}... of entry {entry.seq - 1} "
                "(an entry was inserted, removed or moved).",
                sequence=entry.seq,
            )
        computed = entry_hash(entry)
        if computed != entry.entry_hash:
            raise AuditChainError(
                f"Audit trail broken at entry {entry.seq}: its content hashes to "
                f"{computed[:12]}... but the stored entry_hash is {entry.entry_hash[:12]}... "
                "(the entry was edited).",
                sequence=entry.seq,
            )
        prev_hash = entry.entry_hash
        expected_seq += 1
        count += 1
    return ChainStatus(
        count=count, head_seq=expected_seq - 1, head_hash=prev_hash, verified_at=utcnow()
    )


# --------------------------------------------------------------------------- checkpoints


def load_or_create_signing_key(key_path: str | Path) -> Ed25519PrivateKey:
    """Load the Ed25519 checkpoint key, creating it (mode 0600) on first use.

    Parameters
    ----------
    key_path : str or Path
        PEM file, normally ``Workdir.keys_dir / CHECKPOINT_KEY_NAME``. The
        public key is written next to it with the suffix ``.pub``.

    Returns
    -------
    Ed25519PrivateKey

    Raises
    ------
    ConfigurationError
        The file exists but is not an unencrypted Ed25519 PEM private key.
    """
    path = Path(key_path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Written completely under a temporary name, then linked into place, so that a
        # process killed half-way never leaves an empty or partial key behind.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return load_or_create_signing_key(path)  # another process created it first
        finally:
            temporary.unlink(missing_ok=True)
        os.chmod(path, 0o600)
        public = path.with_name(path.name + ".pub")
        public_tmp = public.with_name(f".{public.name}.{os.getpid()}.tmp")
        public_tmp.write_bytes(public_pem)
        os.replace(public_tmp, public)
        return key
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(
            f"Expected an unencrypted PEM Ed25519 private key in {path}; could not read it "
            f"({type(error).__name__})."
        ) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigurationError(
            f"Expected an Ed25519 private key in {path}; found {type(loaded).__name__}."
        )
    return loaded


def load_public_key(
    key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str | Path,
) -> Ed25519PublicKey:
    """Return an Ed25519 public key from a key object, PEM bytes, base64 text or a file.

    Parameters
    ----------
    key : Ed25519PublicKey, Ed25519PrivateKey, bytes, str or Path
        A key object; 32 raw bytes; PEM bytes; base64 of the raw key; or the
        path of a PEM file (public, or the private key file).
    """
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    data: bytes
    if isinstance(key, Path):
        data = key.read_bytes()
        if b"PRIVATE KEY" in data:
            return load_or_create_signing_key(key).public_key()
    elif isinstance(key, str):
        if "-----BEGIN" in key:
            data = key.encode("ascii")
        else:
            try:
                data = base64.b64decode(key, validate=True)
            except ValueError:
                path = Path(key)
                if len(key) < 4096 and path.is_file():
                    return load_public_key(path)
                raise ConfigurationError(
                    "Expected a public key as PEM, base64 or a key file; could not read it."
                ) from None
    else:
        data = key
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    loaded = serialization.load_pem_public_key(data)
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigurationError(f"Expected an Ed25519 public key; found {type(loaded).__name__}.")
    return loaded


def _raw_public(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def _store_checkpoint(
    session: Session, key: Ed25519PrivateKey, status: ChainStatus, *, actor: str, trigger: str
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "format": _CHECKPOINT_FORMAT,
        "entry_count": status.count,
        "head_seq": status.head_seq,
        "head_hash": status.head_hash,
        "created_at": _format_ts(utcnow()),
        "algorithm": "Ed25519",
        "public_key": _raw_public(key.public_key()),
    }
    signature = base64.b64encode(key.sign(canonical_json(payload))).decode("ascii")
    row = AuditCheckpoint(
        entry_count=status.count,
        head_hash=status.head_hash,
        public_key=payload["public_key"],
        signature=signature,
        payload=payload,
    )
    session.add(row)
    session.flush()
    append(
        session,
        actor=actor,
        action=CHECKPOINT_ACTION,
        record_type="audit_checkpoint",
        record_id=row.id,
        new={
            "entry_count": status.count,
            "head_hash": status.head_hash,
            "signature": signature,
            "trigger": trigger,
        },
    )
    session.info[_APPENDED] = []  # this checkpoint covers what the transaction appended
    return {**payload, "signature": signature}


def export_checkpoint(
    session: Session, key_path: str | Path, *, actor: str = "system"
) -> dict[str, Any]:
    """Verify the chain and return a signed statement of its head.

    The checkpoint is also stored in ``audit_checkpoints`` and its creation is
    an audit entry (``audit.checkpoint``, right after the head it signs); keep
    the returned dict (or its JSON) outside the database as well, so that
    removing the newest entries, checkpoints included, stays detectable.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        A write session.
    key_path : str or Path
        Ed25519 private key (created on first use, see :func:`load_or_create_signing_key`).
    actor : str, default "system"
        Who asked for the checkpoint (recorded in its audit entry).

    Returns
    -------
    dict
        ``format, entry_count, head_seq, head_hash, created_at, algorithm,
        public_key`` (base64 raw) and ``signature`` (base64 Ed25519 over the
        canonical JSON of all other fields).

    Raises
    ------
    AuditChainError
        The chain is already broken; no checkpoint is made.
    """
    status = verify_chain(session)
    key = _checkpoint_key(session, Path(key_path))
    return _store_checkpoint(session, key, status, actor=actor, trigger="requested")


def _checkpoint_key(session: Session, path: Path) -> Ed25519PrivateKey:
    stored = session.scalar(select(func.count()).select_from(AuditCheckpoint)) or 0
    if stored and not path.exists():
        raise ConfigurationError(
            f"The audit checkpoint key {path} is missing, but {stored} checkpoint(s) signed with "
            "it are stored. Restore the keys folder from backup; a new key is not created, "
            "because it could not vouch for the existing checkpoints."
        )
    return load_or_create_signing_key(path)


def needs_checkpoint(session: Session, *, every: int = CHECKPOINT_EVERY) -> bool:
    """Whether this transaction should end with a signed checkpoint.

    True when it appended an entry of :data:`ANCHORING_ACTIONS` (a lock,
    approval, signature, completed run or seal), or when ``every`` entries or
    more have been appended since the newest stored checkpoint.
    """
    appended = session.info.get(_APPENDED) or []
    if not appended:
        return False
    if any(action in ANCHORING_ACTIONS for _, action in appended):
        return True
    covered = session.scalar(select(func.max(AuditCheckpoint.entry_count))) or 0
    return max(seq for seq, _ in appended) - int(covered) >= every


def record_checkpoint(
    session: Session, key_path: str | Path, *, actor: str = "system", trigger: str = "automatic"
) -> dict[str, Any]:
    """Sign the chain head into a stored, audited checkpoint (incremental).

    Only the entries after the newest stored checkpoint are walked, after that
    checkpoint's own signature has been checked, so the cost does not grow
    with the length of the trail.

    Parameters
    ----------
    session : Session
        The write session of the transaction that is about to commit.
    key_path : str or Path
        The workbench's checkpoint key (created on first use only while no
        checkpoint is stored).
    actor : str, default "system"
    trigger : str
        Why the checkpoint was made (recorded in its audit entry).

    Raises
    ------
    AuditChainError
        The newest stored checkpoint does not verify, or the entries after it
        do not link.
    ConfigurationError
        The key is missing while checkpoints signed with it are stored.
    """
    key = _checkpoint_key(session, Path(key_path))
    last = session.scalars(
        select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
    ).first()
    if last is None or not last.entry_count:
        status = verify_chain(session)
    else:
        _check_checkpoint_row(session, last, key.public_key())
        status = verify_chain(session, after=(last.entry_count, last.head_hash))
    return _store_checkpoint(session, key, status, actor=actor, trigger=trigger)


def _check_checkpoint_row(
    session: Session, row: AuditCheckpoint, trusted: Ed25519PublicKey
) -> None:
    payload = dict(row.payload or {})
    try:
        if payload.get("public_key") != _raw_public(trusted) or row.public_key != payload.get(
            "public_key"
        ):
            raise InvalidSignature
        if payload.get("entry_count") != row.entry_count or payload.get("head_hash") != (
            row.head_hash
        ):
            raise InvalidSignature
        trusted.verify(base64.b64decode(row.signature), canonical_json(payload))
    except (InvalidSignature, ValueError):
        raise AuditChainError(
            f"Stored audit checkpoint {row.id} (covering {row.entry_count} entries) is not signed "
            "by the workbench's checkpoint key: it was forged or altered."
        ) from None
    if row.entry_count:
        at = session.get(AuditEntry, int(row.entry_count))
        if at is None or at.entry_hash != row.head_hash:
            raise AuditChainError(
                f"Audit trail differs from the signed checkpoint {row.id} of "
                f"{payload.get('created_at')}: entry {row.entry_count} "
                + ("is missing" if at is None else "does not have the hash it signed")
                + " (entries were removed, inserted or rewritten).",
                sequence=int(row.entry_count),
            )


def verify_stored_checkpoints(
    session: Session,
    public_key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str | Path | None,
    status: ChainStatus,
) -> ChainStatus:
    """Check every checkpoint stored in the database against an intact chain.

    Parameters
    ----------
    session : Session
    public_key : key, bytes, str, Path or None
        The workbench's checkpoint key (see :func:`load_public_key`); ``None``
        when there is none, which is an error only if checkpoints are stored.
    status : ChainStatus
        Result of :func:`verify_chain` on the same session.

    Returns
    -------
    ChainStatus
        ``status`` with ``checkpoints`` (how many verified) and ``covered``
        (entries covered by the newest one).

    Raises
    ------
    AuditChainError
        A checkpoint's signature does not verify; the chain no longer holds
        the head a checkpoint signed (inserted, removed or rewritten entries);
        a checkpoint recorded in the trail is missing from ``audit_checkpoints``;
        an entry of :data:`ANCHORING_ACTIONS` comes after the newest checkpoint
        (the workbench always signs one straight after such a step, so the
        entry was inserted outside it). A trail without any checkpoint (written
        by a release before checkpoints) is only chain-checked; its first
        anchoring step after an upgrade signs a checkpoint that covers it.
    """
    rows = list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)))
    recorded = list(
        session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == CHECKPOINT_ACTION)
            .order_by(AuditEntry.seq)
        )
    )
    if not rows and not recorded:
        return status  # a trail from before checkpoints were signed: nothing to compare with
    if public_key is None:
        raise AuditChainError(
            f"{len(rows)} signed checkpoint(s) are stored, but the checkpoint key "
            f"({CHECKPOINT_KEY_NAME}.pub) is missing from the keys folder, so they cannot be "
            "checked. Restore the keys folder."
        )
    trusted = load_public_key(public_key)
    covered = 0
    for row in rows:
        _check_checkpoint_row(session, row, trusted)
        if row.entry_count > status.count:
            raise AuditChainError(
                f"Audit trail truncated: the signed checkpoint {row.id} covers {row.entry_count} "
                f"entries, but only {status.count} remain; entry {status.count + 1} onwards was "
                "removed.",
                sequence=status.count + 1,
            )
        covered = max(covered, row.entry_count)
    signatures = {row.signature for row in rows}
    for entry in recorded:
        value = entry.new_value if isinstance(entry.new_value, dict) else {}
        if value.get("signature") not in signatures:
            raise AuditChainError(
                f"The checkpoint recorded at audit entry {entry.seq} is missing from "
                "audit_checkpoints (it was deleted).",
                sequence=entry.seq,
            )
    _require_covered(session, covered, status.count)
    return ChainStatus(
        count=status.count,
        head_seq=status.head_seq,
        head_hash=status.head_hash,
        verified_at=status.verified_at,
        checkpoints=len(rows),
        covered=covered,
    )


def _require_covered(session: Session, covered: int, count: int) -> None:
    """Refuse an entry of :data:`ANCHORING_ACTIONS` that no stored checkpoint covers.

    The workbench signs a checkpoint in the same transaction as each such
    entry, so one after the newest checkpoint was added behind its back (a
    correctly chained ``INSERT``). Only the ``count`` entries already verified
    are looked at: their checkpoints committed with them, while entries written
    since may not be visible together with theirs.
    """
    entry = session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.seq > covered,
            AuditEntry.seq <= count,
            AuditEntry.action.in_(sorted(ANCHORING_ACTIONS)),
        )
        .order_by(AuditEntry.seq)
        .limit(1)
    ).first()
    if entry is not None:
        raise AuditChainError(
            f"Audit entry {entry.seq} ({entry.action} on {entry.record_type} "
            f"{entry.record_id}) is not covered by a signed checkpoint, but the workbench "
            "signs one straight after every such step: the entry was inserted outside the "
            "workbench.",
            sequence=entry.seq,
        )


def verify_checkpoint(
    session: Session,
    checkpoint: Mapping[str, Any],
    public_key: Ed25519PublicKey | Ed25519PrivateKey | bytes | str | Path,
) -> ChainStatus:
    """Check a checkpoint's signature and that the chain still contains its head.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Any session on the database.
    checkpoint : Mapping
        As returned by :func:`export_checkpoint` (or loaded from its JSON).
    public_key : key, bytes, str or Path
        The trusted public key (see :func:`load_public_key`).

    Returns
    -------
    ChainStatus
        The current, intact chain (which may have grown since the checkpoint).

    Raises
    ------
    AuditChainError
        The checkpoint's signature does not verify, the chain is broken, or
        entries the checkpoint covered are missing (truncated tail) or differ.
    """
    trusted = load_public_key(public_key)
    payload = {k: v for k, v in checkpoint.items() if k != "signature"}
    try:
        if payload.get("format") != _CHECKPOINT_FORMAT:
            raise InvalidSignature
        if payload.get("public_key") != _raw_public(trusted):
            raise InvalidSignature
        trusted.verify(base64.b64decode(str(checkpoint["signature"])), canonical_json(payload))
    except (InvalidSignature, KeyError, ValueError):
        raise AuditChainError(
            f"Expected a checkpoint signed by the given {_CHECKPOINT_FORMAT} key; the "
            "checkpoint's signature does not verify (it was altered or signed by another key)."
        ) from None
    status = verify_chain(session)
    covered = int(payload["entry_count"])
    if status.count < covered:
        raise AuditChainError(
            f"Audit trail truncated: the checkpoint of {payload['created_at']} covers "
            f"{covered} entries, but only {status.count} remain; entry {status.count + 1} "
            "onwards was removed.",
            sequence=status.count + 1,
        )
    if covered:
        at = session.get(AuditEntry, int(payload["head_seq"]))
        if at is None or at.entry_hash != payload["head_hash"]:
            raise AuditChainError(
                f"Audit trail differs from the checkpoint of {payload['created_at']}: entry "
                f"{payload['head_seq']} does not have the hash the checkpoint signed "
                "(the trail was rewritten).",
                sequence=int(payload["head_seq"]),
            )
    return status


# --------------------------------------------------------------------------- export


def _entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {**entry_fields(entry), "entry_hash": entry.entry_hash}


def export_audit(
    session: Session,
    *,
    record_type: str | None = None,
    record_id: str | int | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Return audit entries, oldest first, filtered by record, actor, action or time.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Any session on the database.
    record_type, record_id, actor, action : optional
        Exact matches.
    since, until : datetime, optional
        Aware datetimes; ``since <= ts < until``.

    Returns
    -------
    list of dict
        One dict per entry with the fields of :data:`entry_fields` plus
        ``entry_hash``; ``ts`` is ISO 8601 UTC.
    """
    query = select(AuditEntry).order_by(AuditEntry.seq)
    if record_type is not None:
        query = query.where(AuditEntry.record_type == record_type)
    if record_id is not None:
        query = query.where(AuditEntry.record_id == str(record_id))
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if since is not None:
        query = query.where(AuditEntry.ts >= since)
    if until is not None:
        query = query.where(AuditEntry.ts < until)
    return [_entry_dict(entry) for entry in session.scalars(query)]


#: What a blinded reviewer sees instead of a redacted value.
REDACTED = "[hidden until adjudication is finished]"

#: Fields that would tell a blinded reviewer which of A and B is the model.
_BLINDED_FIELDS: dict[str, tuple[str, ...]] = {
    # "verdict_reason" is empty for a pass and names the failed endpoint otherwise.
    "run.complete": ("verdict", "verdict_reason", "results_sha256"),
    "case.record": ("score", "mask_sha256", "marks_sha256", "lesions_sha256", "matches_sha256"),
    "discrepancy.adjudicate": ("decision", "comment"),
    # A report's results hash stands for the run's results (results.json is an
    # attachment, and its signatures sign that hash).
    "report.build": ("results_sha256", "attachments"),
    "signature.sign": ("content_sha256",),
}


def redact_for_blinded_reviewer(
    session: Session, entries: list[dict[str, Any]], username: str
) -> list[dict[str, Any]]:
    """Hide from a reviewer what would unblind the adjudication still open to them.

    While a run has a discrepancy that is not adjudicated, a clinical reviewer
    sees neither the run's verdict, the reason for it and its results hash
    (``run.complete``), nor any case's score, mask or mark hashes
    (``case.record``) of that run, nor the results hash and attachment hashes
    of its reports (``report.build``) and the content hash their signatures
    sign (``signature.sign``), nor the decision and comment other
    reviewers gave on a discrepancy still open. The values are shown again
    once every discrepancy of the run is adjudicated, in its row and in its
    audited decision (:func:`workbench.records.anchors.audited_discrepancy_status`).
    Redacted entries name the hidden fields under ``"redacted"``; their
    ``entry_hash`` covers the stored values, so check the chain with ``audit
    verify``, not on a redacted listing.

    Parameters
    ----------
    session : Session
    entries : list of dict
        As returned by :func:`export_audit`.
    username : str
        The reviewer who will see the entries.

    Returns
    -------
    list of dict
        New dicts; entries with nothing to hide are returned unchanged.
    """
    from workbench.records.models import Discrepancy, Report, Run

    # A discrepancy is closed only when its row and its audited decision both say so:
    # a status set to "adjudicated" in the database lifts no blinding.
    audited = audited_discrepancy_status(session)
    open_rows = [
        (run_uid, d_id)
        for run_uid, d_id, status in session.execute(
            select(Run.run_uid, Discrepancy.id, Discrepancy.status).join(
                Discrepancy, Discrepancy.run_id == Run.id
            )
        )
        if status != "adjudicated" or audited.get(str(d_id)) != "adjudicated"
    ]
    if not open_rows:
        return entries
    blinded_runs = {run_uid for run_uid, _ in open_rows}
    open_discrepancies = {str(d_id) for _, d_id in open_rows}
    blinded_reports = set(
        session.scalars(
            select(Report.report_uid)
            .join(Run, Report.run_id == Run.id)
            .where(Run.run_uid.in_(blinded_runs))
        )
    )
    out = []
    for entry in entries:
        action = str(entry.get("action"))
        record_id = str(entry.get("record_id") or "")
        hide = False
        if action == "run.complete":
            hide = record_id in blinded_runs
        elif action == "case.record":
            hide = record_id.split("/", 1)[0] in blinded_runs
        elif action == "report.build" or (
            action == "signature.sign" and entry.get("record_type") == "report"
        ):
            hide = record_id in blinded_reports
        elif action == "discrepancy.adjudicate":
            hide = record_id in open_discrepancies and entry.get("actor") != username
        value = entry.get("new_value")
        if not hide or not isinstance(value, dict):
            out.append(entry)
            continue
        fields = [f for f in _BLINDED_FIELDS[action] if f in value]
        out.append(
            {
                **entry,
                "new_value": {**value, **{f: REDACTED for f in fields}},
                "redacted": fields,
            }
        )
    return out


def count_entries(session: Session) -> int:
    """Number of entries in the audit trail."""
    return int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text_value = value if isinstance(value, str) else canonical_json(value).decode("utf-8")
    if text_value.startswith(_CSV_FORMULA_PREFIXES):
        return "'" + text_value  # keep spreadsheets from evaluating the cell as a formula
    return text_value


def write_audit_csv(entries: Iterable[Mapping[str, Any]], out: str | Path | IO[str]) -> None:
    """Write exported entries as CSV (one row per entry, JSON values as canonical JSON).

    Cells that start with ``= + - @`` (or a tab or carriage return) get a
    leading ``'`` so that spreadsheet programs do not run them as formulas.

    Parameters
    ----------
    entries : iterable of Mapping
        As returned by :func:`export_audit`.
    out : str, Path or text file
        Destination.
    """
    if isinstance(out, str | Path):
        with open(out, "w", newline="", encoding="utf-8") as handle:
            write_audit_csv(entries, handle)
        return
    writer = csv.writer(out)
    writer.writerow(_EXPORT_COLUMNS)
    for entry in entries:
        writer.writerow([_csv_cell(entry.get(column)) for column in _EXPORT_COLUMNS])


def write_audit_json(entries: Iterable[Mapping[str, Any]], out: str | Path | IO[str]) -> None:
    """Write exported entries as a JSON array (UTF-8, indented, keys sorted).

    Parameters
    ----------
    entries : iterable of Mapping
        As returned by :func:`export_audit`.
    out : str, Path or text file
        Destination.
    """
    data = json.dumps([dict(e) for e in entries], indent=2, sort_keys=True, ensure_ascii=False)
    if isinstance(out, str | Path):
        Path(out).write_text(data + "\n", encoding="utf-8")
    else:
        out.write(data + "\n")


def audit_csv_text(entries: Iterable[Mapping[str, Any]]) -> str:
    """Return :func:`write_audit_csv`'s output as a string (for downloads)."""
    buffer = io.StringIO()
    write_audit_csv(entries, buffer)
    return buffer.getvalue()


def audited_discrepancy_status(
    session: Session, ids: Iterable[int] | None = None
) -> dict[str, str]:
    """``{discrepancy id: status}`` from the newest ``discrepancy.adjudicate`` entry of each.

    A discrepancy that is not in the result has no audited decision: it is open
    whatever its row says.

    Parameters
    ----------
    session : Session
    ids : iterable of int, optional
        Only these discrepancies (default: all).
    """
    query = select(AuditEntry.record_id, AuditEntry.new_value).where(
        AuditEntry.record_type == "discrepancy",
        AuditEntry.action == "discrepancy.adjudicate",
    )
    if ids is not None:
        query = query.where(AuditEntry.record_id.in_([str(i) for i in ids]))
    out: dict[str, str] = {}
    for record_id, value in session.execute(query.order_by(AuditEntry.seq)):
        status = value.get("status") if isinstance(value, dict) else None
        if status:
            out[str(record_id)] = str(status)
    return out
