"""``workbench user``: accounts (administrators)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from workbench.cli._common import (
    DbOpt,
    PasswordOpt,
    UserOpt,
    WorkdirOpt,
    _credentials,
    _fail,
    _guarded,
    _login,
    _workbench,
    user_app,
)


@user_app.command("bootstrap")
@_guarded
def user_bootstrap(
    username: Annotated[str, typer.Option("--username")],
    full_name: Annotated[str, typer.Option("--full-name")],
    password: PasswordOpt = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
) -> None:
    """Create the first administrator of an empty installation."""
    from workbench.services.accounts import bootstrap_admin

    secret = password or os.environ.get("WORKBENCH_PASSWORD")
    if not secret:
        _fail("give the administrator's password with --password or WORKBENCH_PASSWORD.")
    with _workbench(workdir, db) as wb:
        info = bootstrap_admin(wb, username=username, full_name=full_name, password=str(secret))
    typer.echo(f"created administrator {info.username}")


@user_app.command("create")
@_guarded
def user_create(
    username: Annotated[str, typer.Option("--username")],
    full_name: Annotated[str, typer.Option("--full-name")],
    role: Annotated[str, typer.Option("--role", help="qa|reviewer|auditor|admin")],
    initial_password: Annotated[str, typer.Option("--initial-password")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Create an account; its owner must change the initial password."""
    from workbench.services.accounts import create_user

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = create_user(
            wb, actor, username=username, full_name=full_name, role=role, password=initial_password
        )
    typer.echo(f"created {info.username} ({info.role}); password change required at first use")


@user_app.command("change-password")
@_guarded
def user_change_password(
    new_password: Annotated[str, typer.Option("--new-password")],
    reset_code: Annotated[
        str | None,
        typer.Option("--reset-code", help="The one-time code an administrator's reset gave you."),
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Change your own password (after an administrator's reset, with its one-time code)."""
    from workbench.services.accounts import change_password

    username, secret = _credentials(user, password)
    with _workbench(workdir, db) as wb:
        change_password(wb, username, secret, new_password, reset_code=reset_code)
    typer.echo("password changed")


@user_app.command("disable")
@_guarded
def user_disable(
    username: str,
    reason: Annotated[str, typer.Option("--reason")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Disable an account (never deleted)."""
    from workbench.services.accounts import disable_user

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        disable_user(wb, actor, username, reason=reason)
    typer.echo(f"{username} disabled")


@user_app.command("unlock")
@_guarded
def user_unlock(
    username: str,
    reason: Annotated[str, typer.Option("--reason")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Unlock an account locked after failed sign-ins."""
    from workbench.services.accounts import unlock_user

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        unlock_user(wb, actor, username, reason=reason)
    typer.echo(f"{username} unlocked")


@user_app.command("reset-password")
@_guarded
def user_reset_password(
    username: str,
    temporary_password: Annotated[str, typer.Option("--temporary-password")],
    reason: Annotated[str, typer.Option("--reason")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Set a temporary password; the owner must change it before signing."""
    from workbench.services.accounts import reset_password

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = reset_password(wb, actor, username, new_password=temporary_password, reason=reason)
    typer.echo(f"{username}: temporary password set; change required before signing")
    code = info.one_time_code
    if code:
        typer.echo(f"one-time code for {username} (give it to them in person; shown once): {code}")


@user_app.command("list")
@_guarded
def user_list(
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Accounts with role and state."""
    from workbench.services.accounts import list_users

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        for u in list_users(wb, actor):
            state = "disabled" if u.disabled else ("locked" if u.locked else "active")
            typer.echo(f"{u.username}\t{u.role}\t{state}\t{u.full_name}")
