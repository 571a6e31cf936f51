"""``workbench protocol``: add, approve, list, diff, check (pre-flight)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.cli._common import (
    DbOpt,
    PasswordOpt,
    UserOpt,
    WorkdirOpt,
    _guarded,
    _login,
    _workbench,
    protocol_app,
)


@protocol_app.command("add")
@_guarded
def protocol_add(
    path: Path,
    reason: Annotated[str | None, typer.Option("--reason", help="Why this version.")] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Store a protocol YAML as a draft version (validated; errors name the line)."""
    from workbench.services.protocols import add_protocol_version

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = add_protocol_version(wb, actor, path, reason=reason)
    typer.echo(f"{info.ref} {info.status} sha256 {info.sha256}")


@protocol_app.command("approve")
@_guarded
def protocol_approve(
    ref: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Approve a draft protocol version with your e-signature."""
    from workbench.services.protocols import approve_protocol

    with _workbench(workdir, db) as wb:
        actor, secret = _login(wb, user, password)
        info = approve_protocol(wb, actor, ref, password=secret)
    typer.echo(f"{info.ref} approved by {info.approved_by}")


@protocol_app.command("list")
@_guarded
def protocol_list(workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Protocol versions with status and SHA-256."""
    from workbench.services.protocols import list_protocols

    with _workbench(workdir, db) as wb:
        for info in list_protocols(wb):
            typer.echo(f"{info.ref}\t{info.status}\t{info.sha256}\t{info.title}")


@protocol_app.command("diff")
@_guarded
def protocol_diff_command(old: str, new: str, workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Unified diff of two stored protocol versions."""
    from workbench.services.protocols import protocol_diff

    with _workbench(workdir, db) as wb:
        typer.echo(protocol_diff(wb, old, new) or "identical")


@protocol_app.command("check")
@_guarded
def protocol_check(
    protocol: Annotated[str, typer.Argument(help="Stored id@version, or a protocol YAML file.")],
    testset: Annotated[str, typer.Option("--testset", help="Test-set name.")],
    model: Annotated[str | None, typer.Option("--model", help="Registered name@version.")] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Pre-flight: every mismatch between protocol, test set and model, before any inference."""
    from workbench.services.preflight import check_protocol

    source: str | Path = protocol
    if protocol.endswith((".yaml", ".yml")) or Path(protocol).is_file():
        source = Path(protocol)
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        report = check_protocol(wb, actor, protocol=source, test_set=testset, model=model)
    typer.echo("\n".join(report.lines()))
    if not report.ok:
        raise typer.Exit(1)
