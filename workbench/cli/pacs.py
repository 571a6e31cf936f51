"""``workbench pacs``: the PACS servers offered to QA staff (administrators).

A server is a DICOMweb service (``--url``) or, for a PACS without DICOMweb, a
DIMSE node (``--dimse AE@HOST:PORT``, with ``--calling-ae``): QA staff import
from and export to both.

The same services as the app's "PACS servers" section
(:mod:`workbench.services.pacs_servers`): every change adds a version and an
audit entry; secrets are never given here, only the name of the environment
variable or the path of the 0600 credentials file that holds them.
"""

from __future__ import annotations

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
    app,
)

pacs_app = typer.Typer(
    help="PACS servers (DICOMweb or DIMSE) offered to QA staff: add, change, test, retire.",
    no_args_is_help=True,
)
app.add_typer(pacs_app, name="pacs")

UrlOpt = Annotated[str | None, typer.Option("--url", help="DICOMweb root URL.")]
DimseOpt = Annotated[
    str | None,
    typer.Option(
        "--dimse",
        help="A PACS without DICOMweb: its DICOM node as AE@HOST:PORT (C-FIND, C-GET, C-STORE).",
    ),
]
CallingAeOpt = Annotated[
    str | None,
    typer.Option(
        "--calling-ae",
        help="With --dimse: the workbench's AE title, known to the PACS (default WORKBENCH).",
    ),
]
AuthOpt = Annotated[
    str | None, typer.Option("--auth", help="Authentication: none, basic or bearer.")
]
UsernameOpt = Annotated[
    str | None,
    typer.Option("--username", help="HTTP basic user name (with --secret-env)."),
]
SecretEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--secret-env",
        help="NAME of the environment variable holding the password or token (never the value).",
    ),
]
CredentialsFileOpt = Annotated[
    str | None,
    typer.Option("--credentials-file", help="Absolute path of a 0600 JSON credentials file."),
]
CaBundleOpt = Annotated[
    str | None, typer.Option("--ca-bundle", help="Absolute path of a PEM file of trusted CAs.")
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")]


def _line(info: Any) -> str:
    if info.is_dimse:
        return (
            f"{info.name}\tv{info.version}\t{info.status.value}\t{info.address}\t"
            f"dimse\tcalling_ae={info.config.calling_ae}"
        )
    return (
        f"{info.name}\tv{info.version}\t{info.status.value}\t{info.address}\t"
        f"{info.config.auth_kind}\t{info.secret_source}\t"
        f"tls={'verify' if info.config.verify_tls else 'off'}"
        + (f"\tca={info.config.ca_bundle}" if info.config.ca_bundle else "")
    )


def _address(url: str | None, dimse: str | None) -> dict[str, Any]:
    """The protocol and address fields given by ``--url`` or ``--dimse`` (not both)."""
    if url is not None and dimse is not None:
        _fail("give --url (DICOMweb) or --dimse (DIMSE node), not both")
    if dimse is not None:
        return {"url": dimse, "protocol": "dimse"}
    if url is not None:
        return {"url": url, "protocol": "dicomweb", "calling_ae": None}
    return {}


@pacs_app.command("list")
@_guarded
def pacs_list(
    include_retired: Annotated[bool, typer.Option("--all", help="Also retired servers.")] = False,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """One line per server: name, version, status, address, authentication, secret source, TLS."""
    from workbench.services.pacs_servers import list_servers

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        for info in list_servers(wb, actor, include_retired=include_retired):
            typer.echo(_line(info))


@pacs_app.command("add")
@_guarded
def pacs_add(
    name: Annotated[str, typer.Argument(help="Server name (never reused).")],
    url: UrlOpt = None,
    dimse: DimseOpt = None,
    calling_ae: CallingAeOpt = None,
    auth: Annotated[str, typer.Option("--auth", help="none, basic or bearer.")] = "none",
    username: UsernameOpt = None,
    secret_env: SecretEnvOpt = None,
    credentials_file: CredentialsFileOpt = None,
    verify_tls: Annotated[
        bool, typer.Option("--verify-tls/--no-verify-tls", help="Verify TLS certificates.")
    ] = True,
    ca_bundle: CaBundleOpt = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Configure a new server (version 1): a DICOMweb --url or a DIMSE node --dimse."""
    from workbench.services.pacs_servers import PacsServerConfig, add_server

    address = _address(url, dimse)
    if not address:
        _fail("give --url (DICOMweb) or --dimse AE@HOST:PORT (DIMSE node)")
    if dimse is None and calling_ae is not None:
        _fail("--calling-ae goes with --dimse (a DICOMweb server has no AE title)")
    config = PacsServerConfig(
        **{**address, "calling_ae": calling_ae},
        auth_kind=auth,
        username=username,
        secret_env=secret_env,
        credentials_file=credentials_file,
        verify_tls=verify_tls,
        ca_bundle=ca_bundle,
    )
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = add_server(wb, actor, name, config)
    typer.echo(f"added {_line(info)}")


@pacs_app.command("update")
@_guarded
def pacs_update(
    name: Annotated[str, typer.Argument(help="Server name.")],
    reason: ReasonOpt,
    url: UrlOpt = None,
    dimse: DimseOpt = None,
    calling_ae: CallingAeOpt = None,
    auth: AuthOpt = None,
    username: UsernameOpt = None,
    secret_env: SecretEnvOpt = None,
    credentials_file: CredentialsFileOpt = None,
    verify_tls: Annotated[
        bool | None,
        typer.Option("--verify-tls/--no-verify-tls", help="Verify TLS certificates."),
    ] = None,
    ca_bundle: CaBundleOpt = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Change a server: the options given replace those fields ('' clears one); a new version."""
    from workbench.services.pacs_servers import replace_config, server_history, update_server

    given = {
        "calling_ae": calling_ae,
        **_address(url, dimse),
        "auth_kind": auth,
        "username": username,
        "secret_env": secret_env,
        "credentials_file": credentials_file,
        "verify_tls": verify_tls,
        "ca_bundle": ca_bundle,
    }
    if url is not None and calling_ae is not None:
        _fail("--calling-ae goes with --dimse (a DICOMweb server has no AE title)")
    changes = {key: value for key, value in given.items() if value is not None}
    if url is not None:
        changes["calling_ae"] = None  # a DICOMweb server has no calling AE title
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        newest = server_history(wb, actor, name)[-1]
        info = update_server(wb, actor, name, replace_config(newest, **changes), reason=reason)
    typer.echo(f"updated {_line(info)}")


@pacs_app.command("retire")
@_guarded
def pacs_retire(
    name: Annotated[str, typer.Argument(help="Server name.")],
    reason: ReasonOpt,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Stop offering a server; its versions stay on record."""
    from workbench.services.pacs_servers import retire_server

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = retire_server(wb, actor, name, reason=reason)
    typer.echo(f"retired {info.name} (version {info.version})")


@pacs_app.command("history")
@_guarded
def pacs_history(
    name: Annotated[str, typer.Argument(help="Server name.")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Every version of a server, oldest first, with who, when and why."""
    from workbench.services.pacs_servers import server_history

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        for info in server_history(wb, actor, name):
            typer.echo(
                f"{_line(info)}\t{info.created_by}\t{info.created_at.isoformat()}\t"
                f"{info.reason or ''}"
            )


@pacs_app.command("test")
@_guarded
def pacs_test(
    name: Annotated[str, typer.Argument(help="Server name.")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """One QIDO-RS study query with limit 1 (a DIMSE node: C-ECHO and C-FIND); exit 1 on failure."""
    from workbench.services.pacs_servers import check_connection

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        check = check_connection(wb, actor, name)
    if not check.ok:
        typer.secho(f"error: {check.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(check.message)
