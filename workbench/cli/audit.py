"""``workbench audit``: verify, checkpoint, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    tsa_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--tsa-root",
            help="CA certificate of the time-stamping authority: also check the checkpoint's "
            "RFC 3161 token (CHECKPOINT.tsr).",
        ),
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
) -> None:
    """Walk the audit chain; exit 0 when intact, else name the first broken entry."""
    from workbench.errors import AuditChainError
    from workbench.services.audit_trail import verify_audit_chain, verify_checkpoint_file

    stamped = None
    with _workbench(workdir, db) as wb:
        try:
            status = verify_audit_chain(wb)
            if checkpoint is not None:
                verify_checkpoint_file(wb, checkpoint)
                if tsa_root:
                    stamped = _verify_token(checkpoint, tsa_root)
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
    if stamped is not None:
        typer.echo(f"checkpoint time-stamped by the TSA at {stamped.isoformat()} (RFC 3161)")


def _token_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".tsr")


def _verify_token(checkpoint: Path, roots: list[Path]) -> Any:
    import json

    from workbench.errors import AuditChainError
    from workbench.records.timestamping import verify_timestamp

    token = _token_path(checkpoint)
    if not token.is_file():
        raise AuditChainError(f"No time-stamp token {token.name} beside {checkpoint.name}.")
    data = json.loads(checkpoint.read_text(encoding="utf-8"))
    return verify_timestamp(token.read_bytes(), data, roots)


@audit_app.command("checkpoint")
@_guarded
def audit_checkpoint(
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed checkpoint JSON.")],
    tsa: Annotated[
        str | None,
        typer.Option(
            "--tsa",
            help="RFC 3161 time-stamping authority URL [env WORKBENCH_TSA_URL]: also write "
            "OUT.tsr, a token over the checkpoint from a key the installation does not hold.",
        ),
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Sign the chain head and count with the workbench key (detects tail truncation)."""
    import os

    from workbench.services.audit_trail import write_checkpoint

    url = tsa or os.environ.get("WORKBENCH_TSA_URL")
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        checkpoint = write_checkpoint(wb, actor, out)
    typer.echo(
        f"checkpoint of {checkpoint.get('count', checkpoint.get('entry_count'))} entries "
        f"written to {out}"
    )
    if url:
        import json

        from workbench.records.timestamping import timestamp_checkpoint

        saved = json.loads(out.read_text(encoding="utf-8"))
        _token_path(out).write_bytes(timestamp_checkpoint(saved, url))
        typer.echo(f"RFC 3161 time-stamp token from {url} written to {_token_path(out)}")


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
