"""Top-level commands: version, synth, demo, app, validate."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from workbench import __version__
from workbench.cli._common import (
    DbOpt,
    PasswordOpt,
    UserOpt,
    WorkdirOpt,
    _Bar,
    _fail,
    _guarded,
    _login,
    _workbench,
    app,
)
from workbench.cli.rendering import render_demo, render_run


@app.command()
def version() -> None:
    """Print the workbench version."""
    typer.echo(__version__)


@app.command()
@_guarded
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the test set into.")],
    cases: Annotated[int, typer.Option("--cases", min=1, help="Number of cases.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (deterministic).")] = 0,
    defect: Annotated[
        list[str] | None,
        typer.Option("--defect", help="Inject a defect (repeatable), e.g. missing_slice."),
    ] = None,
) -> None:
    """Write a synthetic CT phantom test set (DICOM CT + SEG + labels)."""
    from workbench.dicom.synth import generate_test_set

    bar = _Bar("synthesize")
    summary = generate_test_set(out, n_cases=cases, seed=seed, defects=defect or (), progress=bar)
    bar.close()
    typer.echo(f"wrote {len(summary.case_ids)} cases ({summary.n_files} files) to {out}")


@app.command()
@_guarded
def demo(
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    cases: Annotated[int, typer.Option("--cases", min=12, help="Synthetic cases.")] = 60,
) -> None:
    """Run the whole flow headless on synthetic data and print the verdicts."""
    from workbench.services.demo import run_demo

    with _workbench(workdir, db) as wb:
        summary = run_demo(wb, n_cases=cases, echo=typer.echo, progress_factory=_Bar)
    typer.echo(render_demo(summary))
    if not summary.ok:
        raise typer.Exit(1)


@app.command(name="app")
def app_command(
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    port: Annotated[int, typer.Option("--port")] = 8501,
    address: Annotated[str, typer.Option("--address")] = "localhost",
) -> None:
    """Start the Streamlit app on this workdir's data (stopped by SIGTERM or SIGINT)."""
    import signal
    import subprocess

    from workbench.config import resolve_workdir

    paths = resolve_workdir(workdir, db)
    entry = Path(__file__).resolve().parents[1] / "app" / "main.py"
    env = {**os.environ, "WORKBENCH_HOME": str(paths.root), "WORKBENCH_DB_URL": paths.db_url}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(entry),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.maxUploadSize",
        "50",
        "--client.toolbarMode",
        "minimal",
    ]
    typer.echo(f"Validation Workbench app on http://{address}:{port} (workdir {paths.root})")
    server = subprocess.Popen(command, env=env)

    # A service manager stops the app with SIGTERM (Ctrl-C sends SIGINT): pass it on, so
    # that the server shuts down and releases its port instead of outliving this process.
    def forward(signum: int, _frame: Any) -> None:
        if server.poll() is None:
            server.send_signal(signum)

    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {signum: signal.signal(signum, forward) for signum in stop_signals}
    try:
        code = server.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    raise typer.Exit(code if code >= 0 else 128 - code)


@app.command()
@_guarded
def validate(
    protocol: Annotated[str, typer.Option("--protocol", help="Protocol id[@version].")],
    model: Annotated[str, typer.Option("--model", help="Model name@version.")],
    testset: Annotated[str, typer.Option("--testset", help="Locked test-set name.")],
    device: Annotated[str | None, typer.Option("--device", help="cuda or cpu.")] = None,
    case_timeout: Annotated[
        float | None,
        typer.Option(
            "--case-timeout", help="Seconds per case [env WORKBENCH_CASE_TIMEOUT_S, 900]."
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            envvar="WORKBENCH_EXECUTOR",
            help="Where inference runs: local or ray [env WORKBENCH_EXECUTOR].",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            envvar="WORKBENCH_RAY_ADDRESS",
            help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT [env WORKBENCH_RAY_ADDRESS].",
        ),
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Run a validation and print the pass/fail table."""
    from workbench.inference.executor import make_executor
    from workbench.services.runs import validate as run_validation

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        try:
            runner = make_executor(executor, address=ray_address)
        except ValueError as error:
            _fail(str(error), 2)
        bar = _Bar("inference")
        try:
            summary = run_validation(
                wb,
                actor,
                protocol=protocol,
                model=model,
                test_set=testset,
                device=device,
                progress=bar,
                on_step=lambda s: typer.echo(f"-> {s}", err=True),
                case_timeout_s=case_timeout,
                executor=runner,
            )
        finally:
            close = getattr(runner, "close", None)
            if callable(close):
                close()
        bar.close()
    typer.echo(render_run(summary))
    if summary.verdict != "pass":
        raise typer.Exit(3)
