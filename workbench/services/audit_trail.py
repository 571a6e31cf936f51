"""Audit-trail use cases for auditors: verify the chain, checkpoints and exports."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.records import audit
from workbench.records.audit import ChainStatus
from workbench.services.context import Actor, Workbench, current_user

__all__ = [
    "verify_audit_chain",
    "write_checkpoint",
    "verify_checkpoint_file",
    "export_entries",
    "write_export",
]


def _key_path(wb: Workbench) -> Path:
    return wb.workdir.keys_dir / audit.CHECKPOINT_KEY_NAME


def verify_audit_chain(wb: Workbench) -> ChainStatus:
    """Walk the whole chain; raise ``AuditChainError`` naming the first bad entry.

    Verification reads only; it needs no account, so that it can run on a copy
    of the database handed to an inspector.
    """
    with wb.transaction(readonly=True) as session:
        return audit.verify_chain(session)


def write_checkpoint(wb: Workbench, actor: Actor, out: str | Path | None = None) -> dict[str, Any]:
    """Sign the chain head with the workbench key and optionally write it to ``out``."""
    with wb.transaction() as session:
        current_user(session, actor, "audit.verify")
        checkpoint = audit.export_checkpoint(session, _key_path(wb))
    if out is not None:
        Path(out).write_text(json.dumps(checkpoint, indent=2, sort_keys=True), encoding="utf-8")
    return checkpoint


def verify_checkpoint_file(wb: Workbench, path: str | Path) -> ChainStatus:
    """Check a saved checkpoint: signature valid and its head still in the chain.

    Raises
    ------
    AuditChainError
        Entries after the checkpoint were removed or the chain was altered.
    """
    checkpoint = json.loads(Path(path).read_text(encoding="utf-8"))
    with wb.transaction(readonly=True) as session:
        return audit.verify_checkpoint(session, checkpoint, _key_path(wb))


def export_entries(
    wb: Workbench,
    actor: Actor,
    *,
    record_type: str | None = None,
    record_id: str | None = None,
    user: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Audit entries filtered by record, user and time (``audit.view``)."""
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "audit.view")
        return audit.export_audit(
            session,
            record_type=record_type,
            record_id=record_id,
            actor=user,
            since=since,
            until=until,
        )


def write_export(
    wb: Workbench, actor: Actor, out: str | Path, *, fmt: str = "csv", **filters: Any
) -> int:
    """Write filtered entries as CSV (formula-neutralized) or JSON; returns the count.

    The export itself is recorded in the audit trail (``audit.export``).
    """
    with wb.transaction() as session:
        current_user(session, actor, "audit.export")
    entries = export_entries(wb, actor, **filters)
    if fmt == "csv":
        audit.write_audit_csv(entries, out)
    elif fmt == "json":
        audit.write_audit_json(entries, out)
    else:
        raise ValueError(f"Expected export format 'csv' or 'json'; found {fmt!r}.")
    with wb.transaction() as session:
        audit.append(
            session,
            actor=actor.username,
            action="audit.export",
            record_type="audit_log",
            record_id=None,
            new={
                "format": fmt,
                "count": len(entries),
                "filters": {k: str(v) for k, v in filters.items() if v},
            },
        )
    return len(entries)
