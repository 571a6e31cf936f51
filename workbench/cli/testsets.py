"""``workbench testset``: import (folder, DICOMweb or DIMSE), check, waive, lock, verify, list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    testset_app,
)


@testset_app.command("import")
@_guarded
def testset_import(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="Folder with the DICOM files (with --dicomweb or --dimse: the test-set name)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Unique test-set name.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 2,
    dicomweb: Annotated[
        str | None, typer.Option("--dicomweb", help="DICOMweb root URL of a PACS to import from.")
    ] = None,
    dimse: Annotated[
        str | None,
        typer.Option(
            "--dimse",
            help="A PACS without DICOMweb, as AE@HOST:PORT: C-FIND and C-GET over DIMSE.",
        ),
    ] = None,
    calling_ae: CallingAeOpt = None,
    dimse_timeout: DimseTimeoutOpt = None,
    study: Annotated[
        list[str] | None, typer.Option("--study", help="Study Instance UID (repeatable).")
    ] = None,
    study_file: Annotated[
        Path | None, typer.Option("--study-file", help="File with one Study Instance UID a line.")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            "--query", help="Study query (QIDO-RS or C-FIND), e.g. 'ModalitiesInStudy=CT'."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N studies.")] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Folder whose reference/ is added (e.g. labels.csv)."),
    ] = None,
    deidentify: Annotated[
        bool,
        typer.Option(
            "--deidentify",
            help="With --dicomweb/--dimse: de-identify on intake (PS3.15 Basic Profile); only the "
            "de-identified files are kept.",
        ),
    ] = False,
    retain_dates_shifted: Annotated[
        bool,
        typer.Option(
            "--retain-dates-shifted",
            help="With --deidentify: keep dates shifted by a per-patient offset (113107).",
        ),
    ] = False,
    retain_device_identity: Annotated[
        bool,
        typer.Option(
            "--retain-device-identity",
            help="With --deidentify: keep station name, serial numbers (113109).",
        ),
    ] = False,
    retain_patient_characteristics: Annotated[
        bool,
        typer.Option(
            "--retain-patient-characteristics",
            help="With --deidentify: keep sex, age, size, weight (113108).",
        ),
    ] = False,
    retain_institution_identity: Annotated[
        bool,
        typer.Option(
            "--retain-institution-identity",
            help="With --deidentify: keep institution name and address (113112).",
        ),
    ] = False,
    clean_pixel_data: Annotated[
        bool,
        typer.Option(
            "--clean-pixel-data",
            help="With --deidentify: black out burned-in text found by OCR (113101).",
        ),
    ] = False,
    dicomweb_credentials: DicomWebCredentialsOpt = None,
    ca_bundle: CaBundleOpt = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Index a folder, or retrieve studies from a PACS (--dicomweb or --dimse), as a test set."""
    from workbench.services.testsets import import_test_set

    retained = {
        "--retain-dates-shifted": retain_dates_shifted,
        "--retain-device-identity": retain_device_identity,
        "--retain-patient-characteristics": retain_patient_characteristics,
        "--retain-institution-identity": retain_institution_identity,
        "--clean-pixel-data": clean_pixel_data,
    }
    if not deidentify and any(retained.values()):
        given = ", ".join(k for k, v in retained.items() if v)
        _fail(f"{given} only apply with --deidentify; add --deidentify or drop them.")
    if dicomweb is not None and dimse is not None:
        _fail("give either --dicomweb URL or --dimse AE@HOST:PORT, not both.")
    if (calling_ae is not None or dimse_timeout is not None) and dimse is None:
        _fail(
            "--calling-ae and --dimse-timeout apply to an import over DIMSE (--dimse AE@HOST:PORT)."
        )
    if deidentify and dicomweb is None and dimse is None:
        _fail("--deidentify applies to an import from a PACS (--dicomweb URL or --dimse).")
    if dicomweb is not None or dimse is not None:
        from workbench.dicom.deidentify import DeidentificationOptions
        from workbench.services.pacs import import_from_dicomweb, import_from_dimse

        options = (
            DeidentificationOptions(
                retain_dates_shifted=retain_dates_shifted,
                retain_device_identity=retain_device_identity,
                retain_patient_characteristics=retain_patient_characteristics,
                retain_institution_identity=retain_institution_identity,
                clean_pixel_data=clean_pixel_data,
            )
            if deidentify
            else None
        )
        name = name or (str(folder) if folder is not None else None)
        if not name:
            _fail("give the test-set name: workbench testset import NAME --dicomweb URL ...")
        uids = list(study or [])
        if study_file is not None:
            uids += [u.strip() for u in study_file.read_text().splitlines() if u.strip()]
        if dimse is not None:
            source: Any = _dimse_node(dimse, calling_ae, dimse_timeout)
            importer: Any = import_from_dimse
        else:
            assert dicomweb is not None
            source = _dicomweb_server(dicomweb, dicomweb_credentials, ca_bundle)
            importer = import_from_dicomweb
        with _workbench(workdir, db) as wb:
            actor, _ = _login(wb, user, password)
            bar = _Bar("retrieve")
            done = importer(
                wb,
                actor,
                source,
                name=str(name),
                studies=uids,
                query=query,
                limit=limit,
                reference=reference,
                workers=workers,
                deidentify=options,
                progress=bar,
            )
            bar.close()
        typer.echo(
            f"imported '{done.test_set.name}' from {done.source['server']}: "
            f"{done.n_instances} instances of {len(done.source['studies'])} studies "
            f"({done.n_fetched} retrieved, {done.n_skipped} already here), "
            f"status {done.test_set.status}"
        )
        described = done.source.get("deidentification")
        if described:
            codes = ", ".join(c["code_value"] for c in described["method_codes"])
            typer.echo(
                f"  de-identified with {described['library']} {described['library_version']} "
                f"(method codes {codes}); {described['n_files_redacted']} file(s) with "
                "burned-in text redacted; the raw retrieval was deleted"
            )
        return
    if folder is None or not name:
        _fail(
            "give a folder and --name, or --dicomweb URL (or --dimse AE@HOST:PORT) with "
            "--study/--query."
        )
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
            "--protocol",
            help="Protocol id@version (or id): its suite, task and labels key apply.",
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
            # several series may share a folder: name the series of a series finding
            series = f" series {f.series_instance_uid}" if f.series_instance_uid else ""
            typer.echo(
                f"  {f.id} {f.severity:8} {f.check:22} {f.path or '(test set)'}{series}  "
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
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol",
            help="Stored id@version (or id), or a protocol YAML file: run its pre-flight "
            "first and refuse the lock on a blocking problem.",
        ),
    ] = None,
    workdir: WorkdirOpt = None,
    db: DbOpt = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
) -> None:
    """Freeze the manifest under your e-signature (meaning: responsibility)."""
    from workbench.services.testsets import lock_test_set

    source: str | Path | None = protocol
    if protocol is not None and (protocol.endswith((".yaml", ".yml")) or Path(protocol).is_file()):
        source = Path(protocol)
    with _workbench(workdir, db) as wb:
        actor, secret = _login(wb, user, password)
        info = lock_test_set(wb, actor, name, password=secret, protocol=source)
    if info.preflight is not None:
        typer.echo("\n".join(info.preflight.lines()))
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
