"""``workbench study report``: build, sign, seal, verify and list reader-study reports."""

from __future__ import annotations

from enum import StrEnum
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
)

__all__ = ["StudyReportAction", "study_report"]


class StudyReportAction(StrEnum):
    """What ``study report`` does with its target."""

    BUILD = "build"
    SIGN = "sign"
    SEAL = "seal"
    VERIFY = "verify"
    LIST = "list"


@_guarded
def study_report(
    action: Annotated[
        StudyReportAction,
        typer.Argument(help="build STUDY | sign REPORT | seal REPORT | verify FILE.pdf | list"),
    ],
    target: Annotated[
        str | None,
        typer.Argument(help="Study id@version (build, list), report id (sign, seal) or PDF."),
    ] = None,
    meaning: Annotated[
        str | None, typer.Option("--meaning", help="authored|approved (with sign)")
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Reader-study report: build the draft, e-sign, seal, verify a sealed PDF, or list."""
    from workbench.services import study_reports

    action = StudyReportAction(action)
    if target is None and action is not StudyReportAction.LIST:
        _fail(f"'study report {action.value}' needs its target (see --help).")
    with _workbench(workdir, db) as wb:
        if action is StudyReportAction.VERIFY:
            outcome = study_reports.verify_study_report_file(wb, Path(str(target)))
            for line in outcome.lines():
                typer.echo(line)
            if not outcome.valid:
                _fail(f"{target} FAILED verification: {outcome.reason}")
            typer.echo(f"{target}: VALID")
            return
        actor, secret = _login(wb, user, password)
        if action is StudyReportAction.LIST:
            for r in study_reports.list_study_reports(wb, actor, target):
                typer.echo(f"{r.report_uid}\t{r.study}\t{r.status}\t{r.sealed_path or r.pdf_path}")
            return
        assert target is not None
        if action is StudyReportAction.BUILD:
            info = study_reports.build_study_report_pdf(wb, actor, target)
            typer.echo(f"{info.report_uid} draft: {info.pdf_path}")
        elif action is StudyReportAction.SIGN:
            if meaning is None:
                _fail("'study report sign' needs --meaning authored|approved.")
            info = study_reports.sign_study_report(
                wb, actor, target, meaning=str(meaning), password=secret
            )
            typer.echo(
                f"{info.report_uid}: signed '{meaning}' by {actor.full_name}; status {info.status}"
            )
        else:
            info = study_reports.seal_study_report(wb, actor, target)
            typer.echo(f"{info.report_uid} sealed: {info.sealed_path} sha256 {info.sealed_sha256}")
