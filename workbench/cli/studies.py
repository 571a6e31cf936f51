"""``workbench study``: reader-study designs, sample-size planning, reading progress, analysis."""

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
            f"  {result.figure_of_merit} {arm}: {estimate.value:.4f} "
            f"[{estimate.ci_low:.4f}, {estimate.ci_high:.4f}]"
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


def _reader_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected numbers of readers separated by commas (e.g. 4,6,8,10); found {text!r}."
        ) from None
    if not counts:
        raise typer.BadParameter("expected at least one number of readers (e.g. 4,6,8,10).")
    return counts


_HYPOTHESIS_TEXT = {
    "difference": "two-sided test of equal AUCs",
    "superiority": "superiority (lower CI limit > 0)",
    "non_inferiority": "non-inferiority (lower CI limit > -{margin:g})",
}
_ANALYSIS_TEXT = {
    "RRRC": "random readers and cases (OR, Hillis ddf)",
    "FRRC": "fixed readers, random cases",
    "RRFC": "random readers, fixed cases",
}


@study_app.command("plan")
@_guarded
def study_plan(
    effect_size: Annotated[
        float,
        typer.Option("--effect-size", help="Anticipated AUC difference (second arm minus first)."),
    ],
    pilot: Annotated[
        str | None,
        typer.Option("--pilot", help="Pilot reader study id@version (all readings signed)."),
    ] = None,
    components: Annotated[
        Path | None,
        typer.Option(
            "--components", help="YAML/JSON file of the pilot's OR (or DBM) variance components."
        ),
    ] = None,
    power: Annotated[float, typer.Option("--power", help="Target power.")] = 0.8,
    readers: Annotated[
        str, typer.Option("--readers", help="Candidate numbers of readers, e.g. 4,6,8,10.")
    ] = "4,6,8,10",
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level.")] = 0.05,
    analysis: Annotated[
        str, typer.Option("--analysis", help="RRRC (default), FRRC or RRFC.")
    ] = "RRRC",
    hypothesis: Annotated[
        str,
        typer.Option(
            "--hypothesis", help="difference (two-sided, default), superiority, non_inferiority."
        ),
    ] = "difference",
    margin: Annotated[float, typer.Option("--margin", help="Non-inferiority margin (AUC).")] = 0.0,
    max_cases: Annotated[
        int, typer.Option("--max-cases", help="Largest number of cases searched.")
    ] = 2000,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Cases needed per number of readers for a target power, from a pilot's variance."""
    from workbench.services.study_planning import plan_study

    counts = _reader_counts(readers)
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        plan = plan_study(
            wb,
            actor,
            pilot=pilot,
            components=components,
            effect_size=effect_size,
            power=power,
            alpha=alpha,
            readers=counts,
            analysis=analysis,
            hypothesis=hypothesis,
            margin=margin,
            max_cases=max_cases,
        )
    table, vc = plan.table, plan.table.components
    test = _HYPOTHESIS_TEXT[table.hypothesis].format(margin=table.margin)
    typer.echo(
        f"Cases for {table.target_power:.0%} power: AUC difference {table.effect_size:g}, "
        f"alpha {table.alpha:g}, {test}, {_ANALYSIS_TEXT[table.analysis]}"
    )
    observed = (
        "" if vc.observed_effect is None else f", observed difference {vc.observed_effect:.4f}"
    )
    pilot_readers = "" if vc.n_readers is None else f", {vc.n_readers} readers"
    source = f"; {vc.source}" if vc.source and vc.source != plan.pilot else ""
    typer.echo(f"Pilot: {plan.pilot} ({vc.n_cases} cases{pilot_readers}{observed}{source})")
    typer.echo(
        f"  var_tr {vc.var_tr:.6g}  var {vc.var:.6g}  cov1 {vc.cov1:.6g}  "
        f"cov2 {vc.cov2:.6g}  cov3 {vc.cov3:.6g}"
    )
    typer.echo("readers\tcases\tpower\tpower with unlimited cases")
    for row in table.rows:
        cases = "-" if row.n_cases is None else str(row.n_cases)
        achieved = "-" if row.power is None else f"{row.power:.3f}"
        note = f"\t{row.reason}" if row.reason else ""
        typer.echo(f"{row.n_readers}\t{cases}\t{achieved}\t{row.power_limit:.3f}{note}")


from workbench.cli.study_reports import study_report  # noqa: E402

study_app.command("report")(study_report)
