"""``workbench study``: reader-study designs, reading progress and the analysis."""

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
    app,
)

study_app = typer.Typer(
    help="Reader studies: pre-registered designs, reading progress, the MRMC analysis.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")


@study_app.command("add")
@_guarded
def study_add(
    design: Annotated[Path, typer.Argument(help="Reader-study design YAML (kind: reader_study).")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Store a reader-study design as a draft."""
    from workbench.services.studies import add_study

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = add_study(wb, actor, design)
    typer.echo(f"{info.ref}: {info.status}, SHA-256 {info.sha256}")


@study_app.command("approve")
@_guarded
def study_approve(
    ref: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Approve a design with your e-signature (another QA user than its author)."""
    from workbench.services.studies import approve_study

    with _workbench(workdir, db) as wb:
        actor, secret = _login(wb, user, password)
        info = approve_study(wb, actor, ref, password=secret)
    typer.echo(f"{info.ref}: {info.status} by {info.approved_by}")


@study_app.command("progress")
@_guarded
def study_progress(
    ref: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Reading progress per reader and arm (a reader sees their own)."""
    from workbench.services.studies import reading_progress

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        for p in reading_progress(wb, actor, ref):
            typer.echo(f"{p.reader}\t{p.arm}\t{p.status}\t{p.n_rated}/{p.n_cases}")


@study_app.command("analyze")
@_guarded
def study_analyze(
    ref: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Obuchowski-Rockette analysis of a study whose readings are all signed."""
    from workbench.services.studies import analyze_study

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        result = analyze_study(wb, actor, ref)
    d = result.difference
    typer.echo(f"{result.study}: {result.n_cases} cases, readers {', '.join(result.readers)}")
    for arm, estimate in result.arm_auc.items():
        typer.echo(
            f"  AUC {arm}: {estimate.value:.4f} [{estimate.ci_low:.4f}, {estimate.ci_high:.4f}]"
        )
    typer.echo(
        f"  difference {result.arms[1]} - {result.arms[0]}: {d.value:.4f} "
        f"[{d.ci_low:.4f}, {d.ci_high:.4f}], F = {result.rrrc.statistic:.3f}, "
        f"ddf = {result.rrrc.df_den:.2f}, p = {result.p_value:.4g} (random readers and cases)"
    )
    for label, fixed in (
        ("fixed readers", result.rrrc.fixed_readers),
        ("fixed cases", result.rrrc.fixed_cases),
    ):
        if fixed is not None:
            typer.echo(f"  {label}: statistic {fixed.statistic:.4f}, p = {fixed.p_value:.4g}")
    typer.echo(f"  {result.criterion_text}")
    typer.echo(
        f"  VERDICT: {result.verdict.label}" + (f" ({result.reason})" if result.reason else "")
    )
    if result.verdict.value != "pass":
        raise typer.Exit(3)
