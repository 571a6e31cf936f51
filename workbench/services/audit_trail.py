"""Audit-trail use cases for auditors: verify the chain, checkpoints and exports.

``verify_audit_chain`` is what ``workbench audit verify`` runs: the hash chain,
every signed checkpoint stored in the database (and a saved one when given),
the append-only guards, and every record against its audited anchor
(:mod:`workbench.records.anchors`).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from workbench.errors import AuditChainError
from workbench.records import anchors, audit
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


def _public_key(wb: Workbench) -> Path | None:
    public = wb.workdir.keys_dir / (audit.CHECKPOINT_KEY_NAME + ".pub")
    if public.is_file():
        return public
    private = _key_path(wb)
    return private if private.is_file() else None


def verify_audit_chain(wb: Workbench) -> ChainStatus:
    """Verify the trail and every record against it; raise ``AuditChainError`` on any fault.

    Checks, in order: the hash chain (first bad entry named); every signed
    checkpoint stored in the database (signature by the workbench key, its head
    still in the chain, none deleted, and none missing after an anchoring step:
    see :data:`workbench.records.audit.ANCHORING_ACTIONS`); the database
    triggers that refuse changes to the append-only tables; every model, test
    set, protocol, run, report, signature, account, case result, discrepancy
    and adjudication against the audit entries that anchor it (each difference
    named; :func:`workbench.records.anchors.check_all_records`).

    Verification reads only; it needs no account, so that it can run on a copy
    of the database handed to an inspector (with the workdir's ``keys`` folder,
    which holds the checkpoint key).

    Returns
    -------
    ChainStatus
        With ``checkpoints`` (verified) and ``covered`` (entries the newest
        signed checkpoint covers; newer entries are protected by the chain only).
    """
    with wb.transaction(readonly=True) as session:
        status = audit.verify_chain(session)
        status = audit.verify_stored_checkpoints(session, _public_key(wb), status)
        missing = anchors.check_append_only_guards(session)
        if missing:
            raise AuditChainError(
                "The database no longer refuses changes to the append-only tables: the "
                f"trigger(s) {', '.join(missing)} are missing (they were dropped). Entries "
                "and signatures may have been changed; compare with a saved checkpoint."
            )
        mismatches = anchors.check_all_records(session)
        if mismatches:
            shown = "; ".join(m.describe() for m in mismatches[:10])
            more = f" (and {len(mismatches) - 10} more)" if len(mismatches) > 10 else ""
            raise AuditChainError(
                f"{len(mismatches)} record(s) differ from their audited values: {shown}{more}."
            )
        return status


def write_checkpoint(wb: Workbench, actor: Actor, out: str | Path | None = None) -> dict[str, Any]:
    """Sign the chain head with the workbench key and optionally write it to ``out``."""
    with wb.transaction() as session:
        user = current_user(session, actor, "audit.verify")
        checkpoint = audit.export_checkpoint(session, _key_path(wb), actor=user.username)
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
    key = _public_key(wb)
    if key is None:
        raise AuditChainError(
            f"The checkpoint key ({audit.CHECKPOINT_KEY_NAME}.pub) is missing from "
            f"{wb.workdir.keys_dir}; a saved checkpoint cannot be checked without it. "
            "Restore the keys folder."
        )
    with wb.transaction(readonly=True) as session:
        return audit.verify_checkpoint(session, checkpoint, key)


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
    """Audit entries filtered by record, user and time (``audit.view``).

    A clinical reviewer does not see what would unblind an adjudication still
    open (run verdicts, case scores, other reviewers' decisions): see
    :func:`workbench.records.audit.redact_for_blinded_reviewer`.
    """
    with wb.transaction(readonly=True) as session:
        viewer = current_user(session, actor, "audit.view")
        entries = audit.export_audit(
            session,
            record_type=record_type,
            record_id=record_id,
            actor=user,
            since=since,
            until=until,
        )
        if viewer.role == "reviewer":
            entries = audit.redact_for_blinded_reviewer(session, entries, viewer.username)
        return entries


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
