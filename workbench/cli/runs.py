"""``workbench run``: list, show, export (DICOMweb or DIMSE)."""

from __future__ import annotations

from typing import Annotated

import typer

from workbench.cli._common import (
    CaBundleOpt,
    CallingAeOpt,
    DbOpt,
    DicomWebCredentialsOpt,
    DimseTimeoutOpt,
    PasswordOpt,
    UserOpt,
    WorkdirOpt,
    _Bar,
    _dicomweb_server,
    _dimse_node,
    _fail,
    _guarded,
    _login,
    _workbench,
    run_app,
)
from workbench.cli.rendering import render_run


@run_app.command("list")
@_guarded
def run_list(
    workdir: WorkdirOpt = None, db: DbOpt = None, user: UserOpt = None, password: PasswordOpt = None
) -> None:
    """Runs, newest first."""
    from workbench.services.runs import list_runs

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        for s in list_runs(wb, actor):
            typer.echo(
                "\t".join(
                    [
                        s.run_uid,
                        s.status,
                        s.verdict.value if s.verdict is not None else "-",
                        s.model,
                        s.protocol,
                        s.test_set,
                    ]
                )
            )


@run_app.command("show")
@_guarded
def run_show(
    run_uid: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """The pass/fail table of one run."""
    from workbench.services.runs import get_run

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        typer.echo(render_run(get_run(wb, actor, run_uid)))


@run_app.command("export")
@_guarded
def run_export(
    run_uid: str,
    dicomweb: Annotated[
        str | None, typer.Option("--dicomweb", help="DICOMweb root URL of the PACS.")
    ] = None,
    dimse: Annotated[
        str | None,
        typer.Option(
            "--dimse", help="A PACS without DICOMweb, as AE@HOST:PORT: C-STORE over DIMSE."
        ),
    ] = None,
    calling_ae: CallingAeOpt = None,
    dimse_timeout: DimseTimeoutOpt = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Also the sealed report (PDF).")
    ] = True,
    dicomweb_credentials: DicomWebCredentialsOpt = None,
    ca_bundle: CaBundleOpt = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Store the run's SEGs, TID 1500 SRs and sealed report (Encapsulated PDF) on a PACS.

    Over DICOMweb (STOW-RS) with --dicomweb, or over DIMSE (C-STORE) with --dimse.
    """
    from workbench.services.pacs import export_run

    if (dicomweb is None) == (dimse is None):
        _fail("give either --dicomweb URL or --dimse AE@HOST:PORT.")
    if (calling_ae is not None or dimse_timeout is not None) and dimse is None:
        _fail("--calling-ae and --dimse-timeout apply to an export over DIMSE (--dimse).")
    server = (
        _dimse_node(dimse, calling_ae, dimse_timeout)
        if dimse is not None
        else _dicomweb_server(str(dicomweb), dicomweb_credentials, ca_bundle)
    )
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        bar = _Bar("store")
        done = export_run(wb, actor, run_uid, server, include_report=report, progress=bar)
        bar.close()
    for obj in done.objects:
        typer.echo(f"  {obj.kind:4} {obj.case_id or done.report_uid}\t{obj.sop_uid}")
    typer.echo(
        f"exported run {done.run_uid} to {done.server}: {len(done.objects)} objects "
        f"({len(done.stored)} stored, {len(done.already_present)} already there)"
    )
