"""``workbench audit``: verify, checkpoint, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.cli._common import (
    DbOpt,
    PasswordOpt,
    UserOpt,
    WorkdirOpt,
    _fail,
    _guarded,
    _login,
    _workbench,
    audit_app,
)


@audit_app.command("verify")
@_guarded
def audit_verify(
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Also check a saved signed checkpoint.")
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
) -> None:
    """Walk the audit chain; exit 0 when intact, else name the first broken entry."""
    from workbench.errors import AuditChainError
    from workbench.services.audit_trail import verify_audit_chain, verify_checkpoint_file

    with _workbench(workdir, db) as wb:
        try:
            status = verify_audit_chain(wb)
            if checkpoint is not None:
                verify_checkpoint_file(wb, checkpoint)
        except AuditChainError as error:
            where = f" (first bad entry: #{error.sequence})" if error.sequence is not None else ""
            _fail(f"audit chain BROKEN{where}: {error}")
            return
    typer.echo(
        f"audit chain intact: {status.count} entries, head #{status.head_seq} {status.head_hash}"
    )
    typer.echo(
        f"signed checkpoints: {status.checkpoints} verified; the newest covers {status.covered} "
        f"entries ({status.count - status.covered} newer entries are protected by the chain only)"
    )
    typer.echo("records match their audited hashes; append-only triggers in place")


@audit_app.command("checkpoint")
@_guarded
def audit_checkpoint(
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed checkpoint JSON.")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Sign the chain head and count with the workbench key (detects tail truncation)."""
    from workbench.services.audit_trail import write_checkpoint

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        checkpoint = write_checkpoint(wb, actor, out)
    typer.echo(
        f"checkpoint of {checkpoint.get('count', checkpoint.get('entry_count'))} entries "
        f"written to {out}"
    )


@audit_app.command("export")
@_guarded
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="Output file.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    record_type: Annotated[str | None, typer.Option("--record-type")] = None,
    record_id: Annotated[str | None, typer.Option("--record-id")] = None,
    by_user: Annotated[
        str | None, typer.Option("--by-user", help="Only entries by this user.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO date/time (UTC).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO date/time (UTC).")] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Export audit entries for inspectors (CSV or JSON), filtered by record, user and time."""
    from datetime import UTC, datetime

    from workbench.services.audit_trail import write_export

    def parse(value: str | None) -> datetime | None:
        if not value:
            return None
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        count = write_export(
            wb,
            actor,
            out,
            fmt=fmt,
            record_type=record_type,
            record_id=record_id,
            user=by_user,
            since=parse(since),
            until=parse(until),
        )
    typer.echo(f"{count} entries written to {out}")
