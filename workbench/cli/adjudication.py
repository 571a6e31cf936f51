"""``workbench adjudication``: queue, decide."""

from __future__ import annotations

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
    adjudication_app,
)


@adjudication_app.command("queue")
@_guarded
def adjudication_queue(
    run_uid: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Discrepancies of a run (blinded)."""
    from workbench.services.adjudication import queue

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        for item in queue(wb, actor, run_uid):
            typer.echo(
                f"{item.discrepancy_id}\t{item.case_id}\t{item.rule}\t{item.status}\treads={item.n_reads}"
            )


@adjudication_app.command("decide")
@_guarded
def adjudication_decide(
    discrepancy_id: int,
    decision: Annotated[
        str,
        typer.Option(
            "--decision", help="a_correct|b_correct|both_acceptable|neither|indeterminate"
        ),
    ],
    comment: Annotated[str, typer.Option("--comment")],
    consensus: Annotated[bool, typer.Option("--consensus")] = False,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Record a signed decision on a discrepancy."""
    from workbench.services.adjudication import adjudicate

    with _workbench(workdir, db) as wb:
        actor, secret = _login(wb, user, password)
        status = adjudicate(
            wb,
            actor,
            discrepancy_id,
            decision=decision,
            comment=comment,
            password=secret,
            consensus=consensus,
        )
    typer.echo(f"discrepancy {discrepancy_id}: {status}")
