"""PACS use cases over DICOMweb (PS3.18): import a test set, export a run's outputs.

:func:`import_from_dicomweb` finds studies (by UID or a QIDO-RS query), retrieves
every instance byte for byte in its stored transfer syntax into
``<workdir>/testsets/<name>.partial/`` (content-addressed, resumable), records the
source in ``dataset.json`` (server URL without credentials, query, retrieval
time, SOP Instance UIDs; covered by the lock manifest like every other file),
moves the complete folder to ``<workdir>/testsets/<name>/`` and indexes it with
:func:`workbench.services.testsets.import_test_set`, exactly like a folder import.
The retrieved files are indexed by worker processes while the next ones arrive
(:class:`~workbench.dicom.index.FolderIndexer`), with the SHA-256 computed over
the bytes received, so the import reads only the files it did not retrieve
itself; the records are those a folder import of the
same files makes. The test set exists only once every instance is there.

With ``deidentify=DeidentificationOptions(...)`` the retrieved files are
de-identified (:mod:`workbench.dicom.deidentify`, PS3.15 Basic Profile with the
declared options) into ``<name>.deidentified/`` and only those become the test
set; the raw retrieval is deleted once they are written. ``dataset.json`` and
the audit entry then record the options, the method codes and the library, and
only pseudonymous UIDs: no original UID, the query's keys but not its values.

:func:`export_run` stores a run's outputs back: per completed case the model's
SEG (with the run's own UIDs and description) and a TID 1500 Measurement Report
(PS3.16) of its findings; for a sealed report an Encapsulated PDF (PS3.3 A.45.1)
holding the sealed file byte for byte. UIDs derive from run id, case id and
object kind, so repeating an export adds nothing.

:func:`import_from_dimse` does the same for a PACS without DICOMweb, with
C-FIND and C-GET (:mod:`workbench.dicomweb.dimse`).

Both are audited: who, what, where (the public server URL) and the UIDs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.valuerep import DT
from sqlalchemy import select

from workbench import __version__
from workbench.dicom.deidentify import DeidentificationOptions, deidentify_files
from workbench.dicom.encapsulated_pdf import build_encapsulated_pdf
from workbench.dicom.index import FolderIndexer
from workbench.dicom.sr import (
    build_detection_report,
    build_measurement_report,
    contributing_equipment,
    segment_volumes,
)
from workbench.dicom.volume import sort_slices
from workbench.dicomweb.connection import DicomWebServer
from workbench.dicomweb.dimse import (
    DimseNode,
    retrieve_studies_dimse,
    search_studies_dimse,
    store_instances_dimse,
)
from workbench.dicomweb.retrieve import (
    InstanceRef,
    StudyRetrieval,
    parse_query,
    retrieve_studies,
    search_studies,
)
from workbench.dicomweb.store import store_instances
from workbench.errors import DicomWebError, DuplicateError, WorkflowError
from workbench.records import audit
from workbench.records.models import (
    CaseResult,
    CaseStatus,
    RegisteredModel,
    Report,
    ReportStatus,
    Run,
    TestSet,
)
from workbench.services.context import Actor, Workbench, current_user, get_one
from workbench.services.testsets import LABELS_PATH, TestSetInfo, import_test_set, load_index

__all__ = [
    "DEIDENTIFICATION_KEY",
    "ExportedObject",
    "PacsExport",
    "PacsImport",
    "export_run",
    "export_uid",
    "import_from_dicomweb",
    "import_from_dimse",
]

Progress = Callable[[int, int, str], None] | None

#: File describing a PACS import's source, at the test-set root (indexed and locked).
SOURCE_FILE = "dataset.json"
#: Key of ``dataset.json`` describing the de-identification on intake.
DEIDENTIFICATION_KEY = "deidentification"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True, slots=True)
class PacsImport:
    """Outcome of :func:`import_from_dicomweb` or :func:`import_from_dimse`.

    Parameters
    ----------
    test_set : TestSetInfo
        The new draft test set.
    source : dict
        What ``dataset.json`` records (without the per-instance list).
    n_instances, n_fetched, n_skipped : int
        Instances in the set, fetched now, and found already retrieved (resume).
    n_bytes_fetched : int
    """

    test_set: TestSetInfo
    source: dict[str, Any]
    n_instances: int
    n_fetched: int
    n_skipped: int
    n_bytes_fetched: int


@dataclass(frozen=True, slots=True)
class ExportedObject:
    """One object of an export: ``kind`` is ``seg``, ``sr`` or ``pdf``."""

    kind: str
    case_id: str | None
    study_uid: str
    series_uid: str
    sop_uid: str
    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class PacsExport:
    """Outcome of :func:`export_run`.

    Parameters
    ----------
    run_uid : str
    server : str
        Public URL (no credentials).
    objects : tuple of ExportedObject
    stored, already_present : tuple of str
        SOP Instance UIDs sent now, and those the server already held.
    report_uid : str or None
        The sealed report exported, if any.
    """

    run_uid: str
    server: str
    objects: tuple[ExportedObject, ...]
    stored: tuple[str, ...]
    already_present: tuple[str, ...]
    report_uid: str | None = None
    skipped_cases: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- import


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise WorkflowError(
            f"Expected a test-set name of letters, digits, '.', '_' or '-' (a folder is made "
            f"from it), found {name!r}."
        )


@dataclass(frozen=True, slots=True)
class _PacsSource:
    """Where an import comes from: how to search and retrieve, and how records name it."""

    kind: str
    public_url: str
    search: Callable[[dict[str, str], int | None], list[str]]
    retrieve: Callable[..., StudyRetrieval]
    transfer_syntax: str

    @classmethod
    def dicomweb(cls, server: DicomWebServer) -> _PacsSource:
        return cls(
            kind="dicomweb",
            public_url=server.public_url,
            search=lambda filters, limit: search_studies(server, filters, limit=limit),
            retrieve=lambda *args, **kwargs: retrieve_studies(server, *args, **kwargs),
            transfer_syntax="as stored (WADO-RS transfer-syntax=*)",
        )

    @classmethod
    def dimse(cls, node: DimseNode) -> _PacsSource:
        return cls(
            kind="dimse",
            public_url=node.public_url,
            search=lambda filters, limit: search_studies_dimse(node, filters, limit=limit),
            retrieve=lambda *args, **kwargs: retrieve_studies_dimse(node, *args, **kwargs),
            transfer_syntax=(
                "as stored (C-GET offering every transfer syntax in its own presentation "
                "context; calling AE title " + node.calling_ae + ")"
            ),
        )


def import_from_dicomweb(
    wb: Workbench,
    actor: Actor,
    server: DicomWebServer,
    *,
    name: str,
    studies: Sequence[str] = (),
    query: str | None = None,
    limit: int | None = None,
    reference: str | Path | None = None,
    workers: int = 2,
    deidentify: DeidentificationOptions | None = None,
    progress: Progress = None,
) -> PacsImport:
    """Retrieve studies from a DICOMweb server and import them as a draft test set.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``testset.import``.
    server : DicomWebServer
    name : str
        New test-set name (also its folder name under ``<workdir>/testsets``).
    studies : sequence of str
        Study Instance UIDs.
    query : str, optional
        QIDO-RS study query, e.g. ``"ModalitiesInStudy=CT&StudyDate=20240101-20241231"``.
    limit : int, optional
        At most this many studies from ``query``.
    reference : str or Path, optional
        Folder whose ``reference/`` (e.g. ``reference/labels.csv``) is copied into
        the test set: the reference standard kept outside the PACS.
    workers : int, default 2
        Parallel retrievals and indexing processes.
    deidentify : DeidentificationOptions, optional
        De-identify on intake (PS3.15 Basic Profile and these options); only the
        de-identified files enter the test set, the raw retrieval is deleted, and
        nothing recorded holds an original identifier.
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    PacsImport

    Raises
    ------
    DuplicateError
        The name is taken.
    DicomWebError
        Unreachable server, refused credentials, unknown study, partial results,
        an invalid or transcoded instance: one line naming the study or instance.
        Nothing is imported; running the same call again resumes.
    DicomReadError
        With ``deidentify``: a retrieved file could not be read or its pixels not
        redacted (named in the message); the raw retrieval is kept for a retry.
    """
    return _import_from_pacs(
        wb,
        actor,
        _PacsSource.dicomweb(server),
        name=name,
        studies=studies,
        query=query,
        limit=limit,
        reference=reference,
        workers=workers,
        deidentify=deidentify,
        progress=progress,
    )


def import_from_dimse(
    wb: Workbench,
    actor: Actor,
    node: DimseNode,
    *,
    name: str,
    studies: Sequence[str] = (),
    query: str | None = None,
    limit: int | None = None,
    reference: str | Path | None = None,
    workers: int = 2,
    deidentify: DeidentificationOptions | None = None,
    progress: Progress = None,
) -> PacsImport:
    """Retrieve studies from a PACS over DIMSE (C-FIND, C-GET) and import them as a test set.

    For a PACS without DICOMweb; everything else is as :func:`import_from_dicomweb`
    (content-addressed and resumable, indexed like a folder import, the source in
    ``dataset.json`` and the audit trail, optional de-identification). The PACS
    must know ``node.calling_ae`` and allow it C-FIND and C-GET. The data sets
    keep the transfer syntax the PACS stores them in (see
    :mod:`workbench.dicomweb.dimse`); the audit action is ``testset.import.dimse``.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``testset.import``.
    node : DimseNode
        The PACS (``AE@HOST:PORT``) and the workbench's calling AE title.
    name, studies, query, limit, reference, workers, deidentify, progress
        As :func:`import_from_dicomweb`; ``query`` is matched by a STUDY-level
        C-FIND (e.g. ``"ModalitiesInStudy=CT&StudyDate=20240101-20241231"``).

    Returns
    -------
    PacsImport

    Raises
    ------
    DuplicateError
        The name is taken.
    DicomWebError
        Unreachable node, refused association or AE title, unknown study,
        partial results, an invalid instance: one line naming the study or
        instance. Nothing is imported; running the same call again resumes.
    """
    return _import_from_pacs(
        wb,
        actor,
        _PacsSource.dimse(node),
        name=name,
        studies=studies,
        query=query,
        limit=limit,
        reference=reference,
        workers=workers,
        deidentify=deidentify,
        progress=progress,
    )


def _import_from_pacs(
    wb: Workbench,
    actor: Actor,
    server: _PacsSource,
    *,
    name: str,
    studies: Sequence[str],
    query: str | None,
    limit: int | None,
    reference: str | Path | None,
    workers: int,
    deidentify: DeidentificationOptions | None,
    progress: Progress,
) -> PacsImport:
    _check_name(name)
    if not studies and not query:
        raise WorkflowError("Expected Study Instance UIDs or a study query; found neither.")
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "testset.import")
        if session.scalars(select(TestSet).where(TestSet.name == name)).first() is not None:
            raise DuplicateError(
                f"A test set named '{name}' already exists. Choose another name; test sets "
                "are never replaced."
            )
    reference_dir = None
    if reference is not None:
        reference_dir = Path(reference).expanduser().resolve() / "reference"
        if not reference_dir.is_dir():
            raise FileNotFoundError(f"Expected a folder {reference_dir} with the reference files.")
    filters = parse_query(query) if query else None
    wanted = list(dict.fromkeys(str(s).strip() for s in studies if str(s).strip()))
    if filters is not None:
        for uid in server.search(filters, limit):
            if uid not in wanted:
                wanted.append(uid)
    if not wanted:
        raise DicomWebError(f"{server.public_url}: the query {query!r} matched no study.")

    final = wb.workdir.testsets_dir / name
    staging = wb.workdir.testsets_dir / f"{name}.partial"
    staging.parent.mkdir(parents=True, exist_ok=True)
    if deidentify is not None and _deidentified_source(final) is not None:
        # De-identified and moved in place, the import did not finish: import it now.
        shutil.rmtree(staging, ignore_errors=True)
        return _import_deidentified(wb, actor, final, name=name, workers=workers, progress=progress)
    if final.exists() and not staging.exists():
        # A complete retrieval whose import did not finish: verify and reuse its files.
        os.replace(final, staging)
    elif final.exists():
        raise WorkflowError(
            f"Both {final} and {staging} exist and no test set '{name}' is recorded; "
            "remove one of them."
        )
    # Without de-identification the retrieved files are the test set: they are indexed in
    # other processes as they arrive, and the import reads only what was not retrieved now.
    indexer = FolderIndexer(workers=workers) if deidentify is None else None
    try:
        return _retrieve_and_import(
            wb,
            actor,
            server,
            wanted,
            staging,
            final,
            name=name,
            query=query,
            limit=limit,
            reference_dir=reference_dir,
            workers=workers,
            deidentify=deidentify,
            indexer=indexer,
            progress=progress,
        )
    finally:
        if indexer is not None:
            indexer.close()


def _retrieve_and_import(
    wb: Workbench,
    actor: Actor,
    server: _PacsSource,
    wanted: list[str],
    staging: Path,
    final: Path,
    *,
    name: str,
    query: str | None,
    limit: int | None,
    reference_dir: Path | None,
    workers: int,
    deidentify: DeidentificationOptions | None,
    indexer: FolderIndexer | None,
    progress: Progress,
) -> PacsImport:
    """Retrieve ``wanted`` into ``staging``, then import it (de-identified when asked)."""
    retrieval = server.retrieve(
        wanted,
        staging,
        workers=workers,
        progress=progress,
        indexer=indexer,
    )
    refs: list[InstanceRef] = list(retrieval.instances)
    outcome = retrieval.outcome
    if reference_dir is not None:
        shutil.rmtree(staging / "reference", ignore_errors=True)
        shutil.copytree(reference_dir, staging / "reference", symlinks=False)
    retrieved_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    if deidentify is not None:
        _deidentify_retrieval(
            wb,
            staging,
            final,
            refs,
            outcome.files,
            deidentify,
            server=server.public_url,
            kind=server.kind,
            query=query,
            limit=limit,
            retrieved_at=retrieved_at,
            reference_dir=reference_dir,
            progress=progress,
        )
        imported = _import_deidentified(
            wb, actor, final, name=name, workers=workers, progress=progress
        )
        return PacsImport(
            test_set=imported.test_set,
            source=imported.source,
            n_instances=imported.n_instances,
            n_fetched=outcome.n_fetched,
            n_skipped=outcome.n_skipped,
            n_bytes_fetched=outcome.n_bytes_fetched,
        )
    source: dict[str, Any] = {
        "kind": server.kind,
        "server": server.public_url,
        "studies": wanted,
        "query": query,
        "limit": limit,
        "retrieved_at": retrieved_at,
        "transfer_syntax": server.transfer_syntax,
        "n_instances": len(outcome.files),
        "workbench_version": __version__,
    }
    description = {
        "source": {
            **source,
            "instances": [
                {
                    "study": ref.study_uid,
                    "series": ref.series_uid,
                    "sop_instance_uid": ref.sop_uid,
                    "path": outcome.files[ref.sop_uid],
                }
                for ref in refs
            ],
        }
    }
    (staging / SOURCE_FILE).write_text(
        json.dumps(description, indent=1, sort_keys=True), encoding="utf-8"
    )
    if indexer is not None:
        indexer.results()  # every file handed over is read before the folder moves
    os.replace(staging, final)
    info = import_test_set(
        wb, actor, final, name=name, workers=workers, progress=progress, indexer=indexer
    )
    source_sha = hashlib.sha256((final / SOURCE_FILE).read_bytes()).hexdigest()
    with wb.transaction() as session:
        current_user(session, actor, "testset.import")
        audit.append(
            session,
            actor=actor.username,
            action=f"testset.import.{server.kind}",
            record_type="test_set",
            record_id=name,
            new={
                **source,
                "source_file": {SOURCE_FILE: source_sha},
                "sop_instance_uids": [ref.sop_uid for ref in refs],
                "n_fetched": outcome.n_fetched,
                "n_resumed": outcome.n_skipped,
            },
        )
    return PacsImport(
        test_set=info,
        source=source,
        n_instances=len(outcome.files),
        n_fetched=outcome.n_fetched,
        n_skipped=outcome.n_skipped,
        n_bytes_fetched=outcome.n_bytes_fetched,
    )


def _deidentified_source(folder: Path) -> dict[str, Any] | None:
    """The ``source`` of a folder's ``dataset.json`` when it records a de-identification."""
    path = folder / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        source = json.loads(path.read_text(encoding="utf-8")).get("source") or {}
    except (ValueError, AttributeError):
        return None
    return source if isinstance(source, dict) and DEIDENTIFICATION_KEY in source else None


def _query_keys(query: str | None) -> list[str]:
    """Attribute names of a QIDO-RS query, without the values (they may identify a patient)."""
    if not query:
        return []
    return sorted({part.split("=", 1)[0].strip() for part in query.split("&") if part.strip()})


def _deidentify_retrieval(
    wb: Workbench,
    staging: Path,
    final: Path,
    refs: Sequence[InstanceRef],
    files: dict[str, str],
    options: DeidentificationOptions,
    *,
    server: str,
    kind: str,
    query: str | None,
    limit: int | None,
    retrieved_at: str,
    reference_dir: Path | None,
    progress: Progress,
) -> None:
    """De-identify the raw retrieval into ``final``; the raw files are deleted afterwards."""
    out = wb.workdir.testsets_dir / f"{final.name}.deidentified"
    shutil.rmtree(out, ignore_errors=True)
    order = [ref.sop_uid for ref in refs if ref.sop_uid in files]
    summary = deidentify_files(
        [staging / files[sop] for sop in order], out, options, progress=progress
    )
    if reference_dir is not None:
        shutil.copytree(reference_dir, out / "reference", symlinks=False)
    source: dict[str, Any] = {
        "kind": kind,
        "server": server,
        "studies": sorted({f.study_instance_uid for f in summary.files}),
        "query_keys": _query_keys(query),
        "limit": limit,
        "retrieved_at": retrieved_at,
        "n_instances": len(summary.files),
        "workbench_version": __version__,
        DEIDENTIFICATION_KEY: summary.describe(),
        "instances": [
            {
                "study": f.study_instance_uid,
                "sop_instance_uid": f.sop_instance_uid,
                "path": f.path,
                "redacted_regions": f.redacted_regions,
            }
            for f in summary.files
        ],
    }
    (out / SOURCE_FILE).write_text(
        json.dumps({"source": source}, indent=1, sort_keys=True), encoding="utf-8"
    )
    os.replace(out, final)
    shutil.rmtree(staging)  # the raw, identifiable files never stay in the workdir


def _import_deidentified(
    wb: Workbench,
    actor: Actor,
    final: Path,
    *,
    name: str,
    workers: int,
    progress: Progress,
) -> PacsImport:
    """Index a de-identified folder and audit the import with its de-identification."""
    source = _deidentified_source(final)
    assert source is not None
    instances = source.get("instances") or []
    info = import_test_set(wb, actor, final, name=name, workers=workers, progress=progress)
    source_sha = hashlib.sha256((final / SOURCE_FILE).read_bytes()).hexdigest()
    summary = {k: v for k, v in source.items() if k != "instances"}
    with wb.transaction() as session:
        current_user(session, actor, "testset.import")
        audit.append(
            session,
            actor=actor.username,
            action=f"testset.import.{summary.get('kind', 'dicomweb')}",
            record_type="test_set",
            record_id=name,
            new={
                **summary,
                "source_file": {SOURCE_FILE: source_sha},
                "sop_instance_uids": [str(i.get("sop_instance_uid")) for i in instances],
            },
        )
    return PacsImport(
        test_set=info,
        source=summary,
        n_instances=len(instances),
        n_fetched=0,
        n_skipped=0,
        n_bytes_fetched=0,
    )


# --------------------------------------------------------------------------- export


def export_uid(run_uid: str, case_id: str | None, kind: str) -> str:
    """A UUID-derived UID (PS3.5 B.2) from run id, case id and object kind.

    The same inputs give the same UID on every export, so a PACS that already
    holds the instance is not sent a duplicate.
    """
    key = f"{run_uid}/{case_id or '-'}/{kind}"
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, key).int}"


@dataclass(frozen=True, slots=True)
class _CaseSource:
    series_uid: str
    paths: tuple[Path, ...]


def _case_series(root: Path, files: pd.DataFrame) -> dict[str, _CaseSource]:
    """Case id -> its image series, by the rule of the validation run (labels, patient, UID)."""
    labels_path = root / LABELS_PATH
    by_series: dict[str, str] = {}
    if labels_path.is_file():
        labels = pd.read_csv(labels_path, dtype={"case_id": str})
        if {"series_instance_uid", "case_id"} <= set(labels.columns):
            by_series = {
                str(s): str(c)
                for s, c in zip(labels["series_instance_uid"], labels["case_id"], strict=True)
            }
    images = files[files["modality"].fillna("") != "SEG"]
    out: dict[str, _CaseSource] = {}
    for series_uid, group in images.groupby("series_instance_uid", sort=True):
        case_id = by_series.get(str(series_uid)) or str(group["patient_id"].iloc[0] or series_uid)
        out[case_id] = _CaseSource(
            series_uid=str(series_uid),
            paths=tuple(root / str(p) for p in sorted(group["path"])),
        )
    return out


def _source_headers(paths: Sequence[Path]) -> list[Dataset]:
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    order, _, _ = sort_slices(datasets, [str(p) for p in paths])
    return [datasets[i] for i in order]


def _export_seg(
    stored_path: Path, *, run_uid: str, case_id: str, model: str, when: dt.datetime
) -> Dataset:
    """The stored SEG with the run's own UIDs, description and contributing equipment."""
    seg = pydicom.dcmread(stored_path)
    sop = export_uid(run_uid, case_id, "seg")
    seg.SOPInstanceUID = sop
    seg.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    seg.SeriesInstanceUID = export_uid(run_uid, case_id, "seg-series")
    seg.SeriesDescription = f"{model} run {run_uid}"[:64]
    equipment = contributing_equipment(f"Segmentation by model {model} in validation run {run_uid}")
    items = [i for i in seg.get("ContributingEquipmentSequence", [])]
    if not any(str(i.get("ContributionDescription", "")).endswith(f"run {run_uid}") for i in items):
        equipment.ContributionDateTime = DT(when.strftime("%Y%m%d%H%M%S"))
        items.append(equipment)
    seg.ContributingEquipmentSequence = items
    return seg


def _write(ds: Dataset, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    ds.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _detection_sr(
    wb: Workbench,
    run_uid: str,
    case_id: str,
    marks_sha256: str,
    headers: Sequence[Dataset],
    *,
    when: dt.datetime,
    model_name: str,
    model_version: str,
    device_uid: str,
) -> Dataset:
    """The TID 1500 SR of a detection run's marks on one case (``marks.json``, re-hashed)."""
    from workbench.inference.detection import Mark

    path = wb.workdir.runs_dir / run_uid / "seg" / "cases" / case_id / "marks.json"
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != marks_sha256:
        raise WorkflowError(
            f"{path} does not match the SHA-256 recorded with case {case_id}; the marks are "
            "not exported."
        )
    marks = [Mark(**item) for item in json.loads(data.decode("utf-8"))]
    sr: Dataset = build_detection_report(
        headers,
        marks,
        model_name=model_name,
        model_version=model_version,
        run_uid=run_uid,
        device_uid=device_uid,
        series_instance_uid=export_uid(run_uid, case_id, "detection-sr-series"),
        sop_instance_uid=export_uid(run_uid, case_id, "detection-sr"),
        content_datetime=when,
    )
    return sr


def export_run(
    wb: Workbench,
    actor: Actor,
    run_uid: str,
    server: DicomWebServer | DimseNode,
    *,
    include_report: bool = True,
    progress: Progress = None,
) -> PacsExport:
    """Store a run's SEGs, TID 1500 SRs and its sealed report (Encapsulated PDF) on a PACS.

    Over DICOMweb (STOW-RS, after a QIDO-RS check of what is there; audited as
    ``run.export.dicomweb``) or, given a :class:`DimseNode`, over DIMSE (C-STORE,
    after an IMAGE-level C-FIND; ``run.export.dimse``). The UIDs derive from the
    run, the case and the object kind, so a repeated export sends nothing twice.

    A detection run adds, per case with marks, the TID 1500 SR of its marks
    (kind ``detection_sr``: one volumetric ROI per mark with its score).

    The objects are also kept under ``<workdir>/runs/<run>/export/``.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``run.start`` (QA).
    run_uid : str
        A completed run.
    server : DicomWebServer or DimseNode
    include_report : bool, default True
        Also export the newest sealed report of the run, when there is one.
    progress : callable, optional

    Returns
    -------
    PacsExport

    Raises
    ------
    WorkflowError
        The run is not completed or has no case output to export.
    DicomWebError
        The server is unreachable or refuses an instance.
    """
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "run.start")
        run = get_one(session, Run, "run", run_uid=run_uid)
        if run.status != "completed":
            raise WorkflowError(f"Run {run_uid} is {run.status}; only completed runs are exported.")
        model = session.get(RegisteredModel, run.model_id)
        test_set = session.get(TestSet, run.test_set_id)
        assert model is not None and test_set is not None
        model_name, model_version, model_digest = model.name, model.version, model.digest
        score_name = str(((model.spec or {}).get("input") or {}).get("score_output") or "score")
        root = Path(test_set.root_path)
        files = load_index(session, test_set).files
        marks_sha = {}
        cases = []
        for c in session.scalars(
            select(CaseResult)
            .where(CaseResult.run_id == run.id)
            .where(CaseResult.status == CaseStatus.COMPLETED.value)
            .order_by(CaseResult.case_id)
        ):
            cases.append((c.case_id, c.mask_path, c.score))
            metrics = c.metrics or {}
            if metrics.get("marks_sha256") and metrics.get("n_marks"):
                marks_sha[c.case_id] = str(metrics["marks_sha256"])  # detection runs
        when = run.finished_at or run.started_at or dt.datetime(2000, 1, 1)
        report = (
            session.scalars(
                select(Report)
                .where(Report.run_id == run.id)
                .where(Report.status == ReportStatus.SEALED.value)
                .order_by(Report.id.desc())
            ).first()
            if include_report
            else None
        )
        report_info = (
            (report.report_uid, report.sealed_path, report.sealed_sha256) if report else None
        )
        test_set_name = test_set.name
    model_label = f"{model_name} {model_version}"
    out_dir = wb.workdir.runs_dir / run_uid / "export"
    sources = _case_series(root, files)
    device_uid = f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'model/{model_digest}').int}"
    datasets: list[tuple[str, str | None, Dataset]] = []
    skipped: list[str] = []
    for case_id, mask_path, score in cases:
        source = sources.get(case_id)
        # A detection model's case has marks only (no SEG, no score).
        if source is None or (not mask_path and score is None and case_id not in marks_sha):
            skipped.append(case_id)
            continue
        headers = _source_headers(source.paths)
        seg = None
        if mask_path:
            seg = _export_seg(
                Path(mask_path), run_uid=run_uid, case_id=case_id, model=model_label, when=when
            )
            datasets.append(("seg", case_id, seg))
        if seg is not None or score is not None:
            sr = build_measurement_report(
                headers,
                seg=seg,
                volumes=segment_volumes(seg) if seg is not None else [],
                score=score,
                score_name=score_name,
                model_name=model_name,
                model_version=model_version,
                run_uid=run_uid,
                device_uid=device_uid,
                series_instance_uid=export_uid(run_uid, case_id, "sr-series"),
                sop_instance_uid=export_uid(run_uid, case_id, "sr"),
                content_datetime=when,
            )
            datasets.append(("sr", case_id, sr))
        if case_id in marks_sha:
            datasets.append(
                (
                    "detection_sr",
                    case_id,
                    _detection_sr(
                        wb,
                        run_uid,
                        case_id,
                        marks_sha[case_id],
                        headers,
                        when=when,
                        model_name=model_name,
                        model_version=model_version,
                        device_uid=device_uid,
                    ),
                )
            )
    report_uid = None
    if report_info is not None:
        report_uid, sealed_path, sealed_sha = report_info
        pdf = Path(sealed_path or "").read_bytes()
        if hashlib.sha256(pdf).hexdigest() != sealed_sha:
            raise WorkflowError(
                f"Sealed report {report_uid} at {sealed_path} does not match its recorded "
                "SHA-256; run 'workbench report verify' on it."
            )
        datasets.append(
            (
                "pdf",
                None,
                build_encapsulated_pdf(
                    pdf,
                    document_title=f"Validation report {report_uid}",
                    patient_id=f"WB-{test_set_name}",
                    patient_name="Validation^Report",
                    study_instance_uid=export_uid(run_uid, None, "report-study"),
                    series_instance_uid=export_uid(run_uid, None, "report-series"),
                    sop_instance_uid=export_uid(run_uid, report_uid, "pdf"),
                    study_description=f"Validation run {run_uid}",
                    series_description=f"Sealed report {report_uid}",
                    contribution_description=(
                        f"Sealed validation report {report_uid} of run {run_uid}, "
                        f"model {model_label}"
                    ),
                    content_datetime=when,
                ),
            )
        )
    if not datasets:
        raise WorkflowError(
            f"Run {run_uid} has no completed case output or sealed report to export."
        )
    objects: list[ExportedObject] = []
    for kind, object_case, ds in datasets:
        name = f"{kind}-{object_case or report_uid}.dcm"
        digest = _write(ds, out_dir / name)
        objects.append(
            ExportedObject(
                kind=kind,
                case_id=object_case,
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                sop_uid=str(ds.SOPInstanceUID),
                path=str(out_dir / name),
                sha256=digest,
            )
        )
    to_send = [ds for _, _, ds in datasets]
    over_dimse = isinstance(server, DimseNode)
    outcome = (
        store_instances_dimse(server, to_send, progress=progress)
        if isinstance(server, DimseNode)
        else store_instances(server, to_send, progress=progress)
    )
    with wb.transaction() as session:
        current_user(session, actor, "run.start")
        audit.append(
            session,
            actor=actor.username,
            action="run.export.dimse" if over_dimse else "run.export.dicomweb",
            record_type="run",
            record_id=run_uid,
            new={
                "server": server.public_url,
                **({"calling_ae": server.calling_ae} if isinstance(server, DimseNode) else {}),
                "model": f"{model_name}@{model_version}",
                "report_uid": report_uid,
                "objects": [
                    {
                        "kind": o.kind,
                        "case_id": o.case_id,
                        "study": o.study_uid,
                        "series": o.series_uid,
                        "sop_instance_uid": o.sop_uid,
                        "sha256": o.sha256,
                    }
                    for o in objects
                ],
                "stored": list(outcome.stored),
                "already_present": list(outcome.already_present),
                "skipped_cases": skipped,
            },
        )
    return PacsExport(
        run_uid=run_uid,
        server=server.public_url,
        objects=tuple(objects),
        stored=outcome.stored,
        already_present=outcome.already_present,
        report_uid=report_uid,
        skipped_cases=tuple(skipped),
    )
