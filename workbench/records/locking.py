"""Record locking helpers used by the services (21 CFR 11.10(a), (e)).

Locked test sets, approved or superseded protocol versions, signed or sealed
reports, signed adjudications, signatures and audit entries are never
modified. Services call :func:`ensure_modifiable` before changing a record's
content; workflow transitions of such records (e.g. sealing a signed report)
are the services' own steps and are audited.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import RecordLockedError
from workbench.records.models import (
    Adjudication,
    AuditCheckpoint,
    AuditEntry,
    ProtocolStatus,
    ProtocolVersion,
    Report,
    ReportStatus,
    Signature,
    TestSet,
    TestSetStatus,
)

__all__ = ["lock_reason", "is_locked", "ensure_modifiable"]


def lock_reason(record: Any) -> str | None:
    """Why ``record`` cannot be modified, or ``None`` when it can."""
    if isinstance(record, TestSet) and record.status == TestSetStatus.LOCKED:
        return (
            f"test set {record.name!r} is locked (manifest {str(record.manifest_digest)[:12]}...)"
        )
    if isinstance(record, ProtocolVersion) and record.status in (
        ProtocolStatus.APPROVED,
        ProtocolStatus.SUPERSEDED,
    ):
        return f"protocol {record.protocol_id} version {record.version} is {record.status}"
    if isinstance(record, Report) and record.status in (ReportStatus.SIGNED, ReportStatus.SEALED):
        return f"report {record.report_uid} is {record.status}"
    if isinstance(record, Adjudication) and record.signature_id is not None:
        return f"adjudication {record.id} is signed"
    if isinstance(record, Signature | AuditEntry | AuditCheckpoint):
        return f"{type(record).__name__} rows are append-only"
    return None


def is_locked(record: Any) -> bool:
    """Whether ``record`` is locked (see :func:`lock_reason`)."""
    return lock_reason(record) is not None


def ensure_modifiable(record: Any) -> None:
    """Raise unless ``record`` may still be changed.

    Raises
    ------
    RecordLockedError
        Naming the record and its state. A changed version must be created
        as a new record (new test set, new protocol version, new report).
    """
    reason = lock_reason(record)
    if reason is not None:
        raise RecordLockedError(
            f"Expected a modifiable record, but the {reason}; create a new version instead."
        )
