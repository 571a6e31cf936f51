"""The ``workbench`` command line: the same services as the app, scriptable.

Every command takes ``--workdir DIR`` (default ``$WORKBENCH_HOME``, else
``./var``) and ``--db URL`` (default ``$WORKBENCH_DB_URL``, else SQLite in the
workdir). Commands that act as a user read ``--user``/``--password`` or
``WORKBENCH_USER``/``WORKBENCH_PASSWORD`` and never prompt when those are set.
Errors are printed as one clear line and the exit code is non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from workbench import __version__
from workbench.errors import WorkbenchError
from workbench.vocabulary import CaseStatus, Verdict

if TYPE_CHECKING:
    from workbench.services.demo import DemoSummary
    from workbench.services.runs import RunSummary
    from workbench.stats import Estimate

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


# ---------------------------------------------------------------------------- top level


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
    entry = Path(__file__).resolve().parent / "app" / "main.py"
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


def _estimate_text(estimate: Estimate | None, reason: str = "") -> str:
    if estimate is None:
        return "not estimable" + (f": {reason}" if reason else "")
    return f"{estimate.value:.3f} [{estimate.ci_low:.3f}, {estimate.ci_high:.3f}]"


def render_run(summary: RunSummary) -> str:
    """A plain-text pass/fail table of a run, with the reasons behind every case not analysed."""
    lines = [
        f"Run {summary.run_uid}: {summary.model} on {summary.test_set} under {summary.protocol}",
        f"  cases {summary.n_cases}: completed {summary.n_completed}, failed {summary.n_failed}, "
        f"excluded {summary.n_excluded}; discrepancies queued {summary.n_discrepancies}",
    ]
    results = summary.results
    if results is not None:
        for status in (CaseStatus.EXCLUDED, CaseStatus.FAILED):
            for reason, count in results.accounting.reasons(status):
                lines.append(f"    {status.value} {count}: {reason}")
    for endpoint in summary.endpoints:
        lines.append(
            f"  {endpoint.verdict.label:14} {endpoint.endpoint_id}: "
            f"{_estimate_text(endpoint.estimate, endpoint.reason)}  ({endpoint.criterion_text})"
        )
        if endpoint.verdict is not Verdict.PASS and endpoint.reason:
            lines.append(f"  {'':14}   why: {endpoint.reason}")
        for stratum in endpoint.strata:
            if stratum.verdict in (Verdict.FAIL, Verdict.NOT_EVALUABLE):
                lines.append(
                    f"  {'':14}   {stratum.verdict.label} in {stratum.factor}={stratum.stratum}: "
                    f"{_estimate_text(stratum.estimate, stratum.reason)} (n={stratum.n})"
                )
    if summary.status == "failed" and summary.error:
        lines.append(f"  RUN FAILED: {summary.error}")
    verdict = summary.verdict.label if summary.verdict is not None else "NONE"
    lines.append(f"  VERDICT: {verdict}")
    if summary.verdict_reason:
        lines.append(f"  because: {summary.verdict_reason}")
    return "\n".join(lines)


def render_demo(demo: DemoSummary) -> str:
    """Plain-text summary of ``workbench demo``: one table per run, then the report paths."""
    lines = [
        "",
        "=" * 78,
        f"Validation Workbench demo - workdir {demo.workdir}",
        f"Test set {demo.test_set} locked, manifest {demo.manifest_digest}",
        "=" * 78,
    ]
    for summary in demo.runs:
        lines.append(render_run(summary))
        lines.append("")
    lines.append("Reports:")
    for report in demo.reports:
        path = report.sealed_path or report.pdf_path
        lines.append(f"  {report.report_uid} [{report.status}] {report.run_uid}: {path}")
    lines.extend(f"Note: {note}" for note in demo.notes)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- test sets


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


def _dicomweb_server(url: str, credentials: Path | None, ca_bundle: Path | None) -> Any:
    from workbench.dicomweb import DicomWebServer, load_credentials

    return DicomWebServer(url, credentials=load_credentials(credentials), ca_bundle=ca_bundle)


@testset_app.command("import")
@_guarded
def testset_import(
    folder: Annotated[
        Path | None,
        typer.Argument(help="Folder with the DICOM files (with --dicomweb: the test-set name)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Unique test-set name.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 2,
    dicomweb: Annotated[
        str | None, typer.Option("--dicomweb", help="DICOMweb root URL of a PACS to import from.")
    ] = None,
    study: Annotated[
        list[str] | None, typer.Option("--study", help="Study Instance UID (repeatable).")
    ] = None,
    study_file: Annotated[
        Path | None, typer.Option("--study-file", help="File with one Study Instance UID a line.")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--query", help="QIDO-RS study query, e.g. 'ModalitiesInStudy=CT'."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N studies.")] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Folder whose reference/ is added (e.g. labels.csv)."),
    ] = None,
    dicomweb_credentials: DicomWebCredentialsOpt = None,
    ca_bundle: CaBundleOpt = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Index a folder, or retrieve studies from a PACS (--dicomweb), as a draft test set."""
    from workbench.services.testsets import import_test_set

    if dicomweb is not None:
        from workbench.services.pacs import import_from_dicomweb

        name = name or (str(folder) if folder is not None else None)
        if not name:
            _fail("give the test-set name: workbench testset import NAME --dicomweb URL ...")
        uids = list(study or [])
        if study_file is not None:
            uids += [u.strip() for u in study_file.read_text().splitlines() if u.strip()]
        server = _dicomweb_server(dicomweb, dicomweb_credentials, ca_bundle)
        with _workbench(workdir, db) as wb:
            actor, _ = _login(wb, user, password)
            bar = _Bar("retrieve")
            done = import_from_dicomweb(
                wb,
                actor,
                server,
                name=str(name),
                studies=uids,
                query=query,
                limit=limit,
                reference=reference,
                workers=workers,
                progress=bar,
            )
            bar.close()
        typer.echo(
            f"imported '{done.test_set.name}' from {done.source['server']}: "
            f"{done.n_instances} instances of {len(done.source['studies'])} studies "
            f"({done.n_fetched} retrieved, {done.n_skipped} already here), "
            f"status {done.test_set.status}"
        )
        return
    if folder is None or not name:
        _fail("give a folder and --name, or --dicomweb URL with --study/--query.")
    assert folder is not None and name is not None
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        bar = _Bar("index")
        info = import_test_set(wb, actor, folder, name=name, workers=workers, progress=bar)
        bar.close()
    typer.echo(
        f"imported '{info.name}': {info.n_files} files ({info.n_dicom} DICOM, "
        f"{info.n_unreadable} unreadable), status {info.status}"
    )
    for path, reason in info.unreadable:
        typer.echo(f"  unreadable {path}: {reason}")


@testset_app.command("check")
@_guarded
def testset_check(
    name: str,
    suite: Annotated[
        str | None,
        typer.Option("--suite", help="Data-quality suite (ct-test-set-v1, mixed-test-set-v1...)."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Protocol task: segmentation, classification or detection."),
    ] = None,
    details: Annotated[bool, typer.Option("--details", help="One line per finding.")] = False,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write the findings to FILE (.csv or .json).")
    ] = None,
    ocr: Annotated[
        bool, typer.Option("--ocr", help="Also search the pixels for burned-in text (slower).")
    ] = False,
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol", help="Protocol id[@version]: its suite, task and labels key apply."
        ),
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Run the data-quality suite and store the findings; print them grouped."""
    from workbench.services.testsets import check_quality

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        report = check_quality(wb, actor, name, suite=suite, task=task, ocr=ocr, protocol=protocol)
    if details:
        for f in report.findings:
            typer.echo(
                f"  {f.id} {f.severity:8} {f.check:22} {f.path or '(test set)'}  "
                f"{f.attribute or '-'}  expected: {f.expected or '-'}  found: {f.found or '-'}"
                f"  ({f.message})"
            )
    else:
        groups = report.grouped()
        if groups:
            typer.echo(f"  {'count':>6} {'files':>6}  {'severity':8} {'check':22} attribute")
        for g in groups:
            typer.echo(
                f"  {g.count:6d} {g.n_paths:6d}  {g.severity:8} {g.check:22} {g.attribute or '-'}"
            )
    counts = report.counts
    typer.echo(
        f"suite {report.suite}: {len(report.findings)} finding(s) in {report.n_files} files "
        f"({', '.join(f'{counts[s]} {s}' for s in counts)}); "
        + ("BLOCKING" if report.blocking else "no critical findings")
    )
    if export is not None:
        typer.echo(f"findings written to {report.export(export)}")
    if report.blocking:
        raise typer.Exit(2)


@testset_app.command("waive")
@_guarded
def testset_waive(
    name: str,
    finding: Annotated[str, typer.Argument(help="Finding id (testset check --details).")],
    justification: Annotated[
        str, typer.Option("--justification", help="Why the finding does not matter.")
    ],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Waive a finding with your e-signature (a critical one needs a second QA user)."""
    from workbench.services.testsets import waive_finding

    with _workbench(workdir, db) as wb:
        actor, secret = _login(wb, user, password)
        waiver = waive_finding(
            wb, actor, name, finding, justification=justification, password=secret
        )
    state = "waived" if waiver.complete else "needs a second QA signature"
    typer.echo(
        f"{waiver.finding_id} ({waiver.severity} {waiver.check} {waiver.path}): {state}; "
        f"signed by {', '.join(waiver.signed_by)}"
    )


@testset_app.command("lock")
@_guarded
def testset_lock(
    name: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Freeze the manifest under your e-signature (meaning: responsibility)."""
    from workbench.services.testsets import lock_test_set

    with _workbench(workdir, db) as wb:
        actor, secret = _login(wb, user, password)
        info = lock_test_set(wb, actor, name, password=secret)
    typer.echo(f"locked '{info.name}', manifest digest {info.manifest_digest}")


@testset_app.command("verify")
@_guarded
def testset_verify(
    name: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Re-hash every file against the locked manifest; exit 1 on any difference."""
    from workbench.services.testsets import verify_test_set

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        diff = verify_test_set(wb, actor, name)
    for label, paths in (
        ("added", diff.added),
        ("removed", diff.removed),
        ("changed", diff.changed),
    ):
        for path in paths:
            typer.echo(f"  {label:8} {path}")
    if diff.ok:
        typer.echo(f"'{name}' intact: every file matches the locked manifest")
    else:
        _fail(f"'{name}' does not match its locked manifest ({diff.summary()})")


@testset_app.command("list")
@_guarded
def testset_list(workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """One line per test set: name, status, manifest digest."""
    from workbench.services.testsets import list_test_sets

    with _workbench(workdir, db) as wb:
        for info in list_test_sets(wb):
            typer.echo(f"{info.name}\t{info.status}\t{info.manifest_digest or '-'}")


# ---------------------------------------------------------------------------- models


@model_app.command("register")
@_guarded
def model_register(
    path: Annotated[
        Path, typer.Argument(help="TorchScript file, ONNX file or MONAI bundle folder.")
    ],
    spec: Annotated[
        Path,
        typer.Option(
            "--spec", help="Model spec JSON (docs/model-spec.md; `workbench model schema`)."
        ),
    ],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Register a model: validate its spec, test-load it, copy, hash every file."""
    from workbench.inference.registry import ModelSpec
    from workbench.services.models import register_model

    model_spec = ModelSpec.from_json(spec.read_text(encoding="utf-8"), source=str(spec))
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = register_model(wb, actor, path, model_spec)
    typer.echo(f"registered {info.ref} digest {info.digest}")


@model_app.command("schema")
def model_schema() -> None:
    """Print the JSON Schema of the model spec (fields documented in docs/model-spec.md)."""
    from workbench.inference.registry import model_spec_schema

    typer.echo(json.dumps(model_spec_schema(), indent=2))


@model_app.command("list")
@_guarded
def model_list(workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Registered models: name@version, task, digest."""
    from workbench.services.models import list_models

    with _workbench(workdir, db) as wb:
        for info in list_models(wb):
            typer.echo(f"{info.ref}\t{info.task}\t{info.digest}")


@model_app.command("verify")
@_guarded
def model_verify(ref: str, workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Re-hash a registered model's files."""
    from workbench.services.models import verify_model

    with _workbench(workdir, db) as wb:
        info = verify_model(wb, ref)
    typer.echo(f"{info.ref} intact ({len(info.files)} file(s), digest {info.digest})")


# ---------------------------------------------------------------------------- protocols


@protocol_app.command("add")
@_guarded
def protocol_add(
    path: Path,
    reason: Annotated[str | None, typer.Option("--reason", help="Why this version.")] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Store a protocol YAML as a draft version (validated; errors name the line)."""
    from workbench.services.protocols import add_protocol_version

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        info = add_protocol_version(wb, actor, path, reason=reason)
    typer.echo(f"{info.ref} {info.status} sha256 {info.sha256}")


@protocol_app.command("approve")
@_guarded
def protocol_approve(
    ref: str,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Approve a draft protocol version with your e-signature."""
    from workbench.services.protocols import approve_protocol

    with _workbench(workdir, db) as wb:
        actor, secret = _login(wb, user, password)
        info = approve_protocol(wb, actor, ref, password=secret)
    typer.echo(f"{info.ref} approved by {info.approved_by}")


@protocol_app.command("list")
@_guarded
def protocol_list(workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Protocol versions with status and SHA-256."""
    from workbench.services.protocols import list_protocols

    with _workbench(workdir, db) as wb:
        for info in list_protocols(wb):
            typer.echo(f"{info.ref}\t{info.status}\t{info.sha256}\t{info.title}")


@protocol_app.command("diff")
@_guarded
def protocol_diff_command(old: str, new: str, workdir: WorkdirOpt = None, db: DbOpt = None) -> None:
    """Unified diff of two stored protocol versions."""
    from workbench.services.protocols import protocol_diff

    with _workbench(workdir, db) as wb:
        typer.echo(protocol_diff(wb, old, new) or "identical")


@protocol_app.command("check")
@_guarded
def protocol_check(
    protocol: Annotated[str, typer.Argument(help="Stored id@version, or a protocol YAML file.")],
    testset: Annotated[str, typer.Option("--testset", help="Test-set name.")],
    model: Annotated[str | None, typer.Option("--model", help="Registered name@version.")] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Pre-flight: every mismatch between protocol, test set and model, before any inference."""
    from workbench.services.preflight import check_protocol

    source: str | Path = protocol
    if protocol.endswith((".yaml", ".yml")) or Path(protocol).is_file():
        source = Path(protocol)
    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        report = check_protocol(wb, actor, protocol=source, test_set=testset, model=model)
    typer.echo("\n".join(report.lines()))
    if not report.ok:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- runs


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
    dicomweb: Annotated[str, typer.Option("--dicomweb", help="DICOMweb root URL of the PACS.")],
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
    """Store the run's SEGs, TID 1500 SRs and sealed report (Encapsulated PDF) via STOW-RS."""
    from workbench.services.pacs import export_run

    server = _dicomweb_server(dicomweb, dicomweb_credentials, ca_bundle)
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


# ---------------------------------------------------------------------------- adjudication


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


# ---------------------------------------------------------------------------- reports


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


# ---------------------------------------------------------------------------- audit


@audit_app.command("verify")
@_guarded
def audit_verify(
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Also check a saved signed checkpoint.")
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
) -> None:
    """Walk the audit chain; exit 0 when intact, else name the first broken entry."""
    from workbench.errors import AuditChainError
    from workbench.services.audit_trail import verify_audit_chain, verify_checkpoint_file

    with _workbench(workdir, db) as wb:
        try:
            status = verify_audit_chain(wb)
            if checkpoint is not None:
                verify_checkpoint_file(wb, checkpoint)
        except AuditChainError as error:
            where = f" (first bad entry: #{error.sequence})" if error.sequence is not None else ""
            _fail(f"audit chain BROKEN{where}: {error}")
            return
    typer.echo(
        f"audit chain intact: {status.count} entries, head #{status.head_seq} {status.head_hash}"
    )
    typer.echo(
        f"signed checkpoints: {status.checkpoints} verified; the newest covers {status.covered} "
        f"entries ({status.count - status.covered} newer entries are protected by the chain only)"
    )
    typer.echo("records match their audited hashes; append-only triggers in place")


@audit_app.command("checkpoint")
@_guarded
def audit_checkpoint(
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed checkpoint JSON.")],
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Sign the chain head and count with the workbench key (detects tail truncation)."""
    from workbench.services.audit_trail import write_checkpoint

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        checkpoint = write_checkpoint(wb, actor, out)
    typer.echo(
        f"checkpoint of {checkpoint.get('count', checkpoint.get('entry_count'))} entries "
        f"written to {out}"
    )


@audit_app.command("export")
@_guarded
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="Output file.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    record_type: Annotated[str | None, typer.Option("--record-type")] = None,
    record_id: Annotated[str | None, typer.Option("--record-id")] = None,
    by_user: Annotated[
        str | None, typer.Option("--by-user", help="Only entries by this user.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO date/time (UTC).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO date/time (UTC).")] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Export audit entries for inspectors (CSV or JSON), filtered by record, user and time."""
    from datetime import UTC, datetime

    from workbench.services.audit_trail import write_export

    def parse(value: str | None) -> datetime | None:
        if not value:
            return None
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    with _workbench(workdir, db) as wb:
        actor, _ = _login(wb, user, password)
        count = write_export(
            wb,
            actor,
            out,
            fmt=fmt,
            record_type=record_type,
            record_id=record_id,
            user=by_user,
            since=parse(since),
            until=parse(until),
        )
    typer.echo(f"{count} entries written to {out}")


# ---------------------------------------------------------------------------- users


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
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Change your own password."""
    from workbench.services.accounts import change_password

    username, secret = _credentials(user, password)
    with _workbench(workdir, db) as wb:
        change_password(wb, username, secret, new_password)
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
        reset_password(wb, actor, username, new_password=temporary_password, reason=reason)
    typer.echo(f"{username}: temporary password set; change required before signing")


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


def main() -> None:
    """Console-script entry point."""
    app()


_ = json


if __name__ == "__main__":
    main()
