"""``workbench report``: build, sign, seal, verify, list."""

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
    report_app,
)


@report_app.command("build")
@_guarded
def report_build(
    run_uid: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Build the draft PDF report of a completed run."""
    from workbench.services.reports import build_report

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = build_report(wb, actor, run_uid)
    typer.echo(f"{info.report_uid} draft: {info.pdf_path}")


@report_app.command("sign")
@_guarded
def report_sign(
    report_uid: str,
    meaning: Annotated[str, typer.Option("--meaning", help="authored|reviewed|approved")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """E-sign a report (re-authentication; the meaning is printed in the report)."""
    from workbench.services.reports import sign_report

    with _workbench(workdir, db) as wb:
        actor, secret = _login(wb, user, password)
        info = sign_report(wb, actor, report_uid, meaning=meaning, password=secret)
    typer.echo(f"{info.report_uid}: signed '{meaning}' by {actor.full_name}; status {info.status}")


@report_app.command("seal")
@_guarded
def report_seal(
    report_uid: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Render the final PDF with its signatures and apply the PAdES seal."""
    from workbench.services.reports import seal_report

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = seal_report(wb, actor, report_uid)
    typer.echo(f"{info.report_uid} sealed: {info.sealed_path} sha256 {info.sealed_sha256}")


@report_app.command("verify")
@_guarded
def report_verify(
    pdf: Path,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
) -> None:
    """Check a PDF's seal and that it matches its database record and e-signatures."""
    from workbench.services.reports import verify_report_file

    with _workbench(workdir, db) as wb:
        outcome = verify_report_file(wb, pdf)
    for line in outcome.lines():
        typer.echo(line)
    if not outcome.valid:
        _fail(f"{pdf} FAILED verification: {outcome.reason}")
    typer.echo(f"{pdf}: VALID")


@report_app.command("list")
@_guarded
def report_list(workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Reports with status and file."""
    from workbench.services.reports import list_reports

    with _workbench(workdir, db) as wb:
        for r in list_reports(wb):
            typer.echo(f"{r.report_uid}\t{r.run_uid}\t{r.status}\t{r.sealed_path or r.pdf_path}")
