"""Shared pieces of the command line: the Typer apps, options, sign-in and error handling."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from workbench.errors import WorkbenchError

app = typer.Typer(
    name="workbench",
    help="Validation Workbench: validate medical-imaging AI models on locked DICOM test sets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
testset_app = typer.Typer(
    help="Import, quality-check, lock and verify DICOM test sets.", no_args_is_help=True
)
model_app = typer.Typer(help="Register and inspect candidate models.", no_args_is_help=True)
protocol_app = typer.Typer(
    help="Validation protocol versions: add, approve, diff.", no_args_is_help=True
)
run_app = typer.Typer(help="Validation runs and their results.", no_args_is_help=True)
adjudication_app = typer.Typer(help="Blinded adjudication of discrepancies.", no_args_is_help=True)
report_app = typer.Typer(
    help="PDF validation reports: build, sign, seal, verify.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The hash-chained audit trail: verify, checkpoint, export.", no_args_is_help=True
)
user_app = typer.Typer(help="Accounts (administrators).", no_args_is_help=True)
app.add_typer(testset_app, name="testset")
app.add_typer(model_app, name="model")
app.add_typer(protocol_app, name="protocol")
app.add_typer(run_app, name="run")
app.add_typer(adjudication_app, name="adjudication")
app.add_typer(report_app, name="report")
app.add_typer(audit_app, name="audit")
app.add_typer(user_app, name="user")

WorkdirOpt = Annotated[
    Path | None,
    typer.Option("--workdir", help="Workbench data folder [env WORKBENCH_HOME, default ./var]."),
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Database URL [env WORKBENCH_DB_URL, default SQLite in workdir]."),
]
UserOpt = Annotated[str | None, typer.Option("--user", help="Username [env WORKBENCH_USER].")]
PasswordOpt = Annotated[
    str | None, typer.Option("--password", help="Password [env WORKBENCH_PASSWORD].")
]


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def _workbench(workdir: Path | None, db: str | None) -> Iterator[Any]:
    from workbench.services.context import Workbench

    wb = Workbench.open(workdir, db)
    try:
        yield wb
    finally:
        wb.close()


def _credentials(user: str | None, password: str | None) -> tuple[str, str]:
    user = user or os.environ.get("WORKBENCH_USER")
    password = password or os.environ.get("WORKBENCH_PASSWORD")
    if not user:
        if not sys.stdin.isatty():
            _fail("no user given: use --user or set WORKBENCH_USER.")
        user = typer.prompt("Username")
    if not password:
        if not sys.stdin.isatty():
            _fail("no password given: use --password or set WORKBENCH_PASSWORD.")
        password = typer.prompt("Password", hide_input=True)
    assert user is not None and password is not None
    return user, password


def _login(wb: Any, user: str | None, password: str | None) -> tuple[Any, str]:
    from workbench.services.accounts import login

    username, secret = _credentials(user, password)
    return login(wb, username, secret), secret


class _Bar:
    """A tqdm progress bar driven by ``progress(done, total, message)`` callbacks."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: Any = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit="item", file=sys.stderr)
        self.bar.total = total
        self.bar.n = done
        if message:
            self.bar.set_postfix_str(message[:40], refresh=False)
        self.bar.refresh()
        if total and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn workbench errors into one clear line on stderr and exit code 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except WorkbenchError as error:
            _fail(f"{type(error).__name__}: {error}")
        except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
            _fail(str(error))

    return wrapper


DicomWebCredentialsOpt = Annotated[
    Path | None,
    typer.Option(
        "--dicomweb-credentials",
        help="JSON file (mode 0600) with user/password or token "
        "[env WORKBENCH_DICOMWEB_USER/_PASSWORD or _TOKEN].",
    ),
]
CaBundleOpt = Annotated[
    Path | None, typer.Option("--ca-bundle", help="PEM file of trusted CAs for HTTPS.")
]


CallingAeOpt = Annotated[
    str | None,
    typer.Option("--calling-ae", help="With --dimse: the workbench's AE title [WORKBENCH]."),
]
DimseTimeoutOpt = Annotated[
    float | None,
    typer.Option("--dimse-timeout", min=1, help="With --dimse: seconds to wait for the PACS [60]."),
]


def _dimse_node(address: str, calling_ae: str | None, timeout: float | None) -> Any:
    """The DIMSE node of ``--dimse``, with ``--calling-ae`` and ``--dimse-timeout`` if given."""
    from workbench.dicomweb.dimse import DimseNode

    given: dict[str, Any] = {"calling_ae": calling_ae, "timeout": timeout}
    return DimseNode.parse(address, **{k: v for k, v in given.items() if v is not None})


def _dicomweb_server(url: str, credentials: Path | None, ca_bundle: Path | None) -> Any:
    from workbench.dicomweb import DicomWebServer, load_credentials

    return DicomWebServer(url, credentials=load_credentials(credentials), ca_bundle=ca_bundle)


def main() -> None:
    """Console-script entry point."""
    import workbench.cli  # noqa: F401 - importing the package registers every command

    app()
