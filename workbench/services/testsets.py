"""Test-set use cases: import (index), data-quality check, lock (e-signed) and verify.

A test set moves ``draft -> locked``. Import indexes a folder and stores one row
per file with its SHA-256; the quality gate runs the data-quality suite and
stores its findings; locking freezes the manifest (every file's SHA-256 and the
manifest digest) under the e-signature of a ``qa`` user and is refused while
critical findings stand or, given a protocol, while its pre-flight finds a blocking
problem. A locked test set never changes: re-importing or re-checking it is
refused, and ``verify`` re-hashes every file against the frozen manifest.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from workbench.dicom.index import DicomIndex, FolderIndexer, index_folder
from workbench.dicom.manifest import (
    Manifest,
    ManifestDiff,
    build_manifest,
    canonical_json,
    verify_manifest,
)
from workbench.dicom.references import find_reference_files
from workbench.errors import (
    DuplicateError,
    QualityGateError,
    TestSetLockedError,
    WorkflowError,
)
from workbench.protocols.cases import series_labels
from workbench.quality import DEFAULT_SUITE, run_quality_checks
from workbench.quality import Finding as QualityFinding
from workbench.quality import QualityReport as QualityResult
from workbench.quality.findings import finding_id as _finding_id
from workbench.records import audit, signatures
from workbench.records.models import (
    AuditEntry,
    FileKind,
    QualityReport,
    Signature,
    SignatureMeaning,
    TestSet,
    TestSetFile,
    TestSetStatus,
    utcnow,
)
from workbench.services.context import Actor, Progress, Workbench, current_user, get_one
from workbench.services.testset_index import LABELS_PATH, load_index

if TYPE_CHECKING:
    from workbench.services.preflight import PreflightReport

__all__ = [
    "TestSetInfo",
    "import_test_set",
    "check_quality",
    "lock_test_set",
    "verify_test_set",
    "list_test_sets",
    "get_test_set",
    "load_index",
    "LABELS_PATH",
    "Waiver",
    "finding_id",
    "current_waivers",
    "list_waivers",
    "quality_gate",
    "waive_finding",
]

#: Record type of the e-signatures that waive a data-quality finding.
WAIVER_RECORD = "quality_waiver"
#: Shortest justification accepted for a waiver.
MIN_JUSTIFICATION = 20

#: Where a test set keeps its per-case reference labels, relative to its root.

#: Index columns stored in their own database columns; every other index column goes
#: into ``TestSetFile.header`` so that the index can be rebuilt exactly.
_DEDICATED_COLUMNS = frozenset(
    {
        "path",
        "size",
        "sha256",
        "sop_instance_uid",
        "series_instance_uid",
        "study_instance_uid",
        "modality",
        "sop_class_uid",
        "manufacturer",
        "manufacturer_model_name",
        "patient_sex",
        "patient_age",
    }
)


@dataclass(frozen=True, slots=True)
class TestSetInfo:
    """Summary of a stored test set.

    Parameters
    ----------
    name, status, root_path : str
    manifest_digest : str or None
        Set once locked.
    n_files, n_dicom, n_unreadable : int
    summary : dict
        Counts by modality, scanner, sex, age band; studies and series.
    locked_by, locked_at : str or None
    unreadable : tuple of (str, str)
        ``(path, reason)`` of every unreadable or non-DICOM file, by path.
    preflight : PreflightReport or None
        The pre-flight run by :func:`lock_test_set` when given a protocol.
    """

    __test__ = False

    name: str
    status: str
    root_path: str
    manifest_digest: str | None
    n_files: int
    n_dicom: int
    n_unreadable: int
    summary: dict[str, Any] = field(default_factory=dict)
    locked_by: str | None = None
    locked_at: str | None = None
    unreadable: tuple[tuple[str, str], ...] = ()
    preflight: PreflightReport | None = None


def _info(session: Session, test_set: TestSet) -> TestSetInfo:
    counts = dict(
        session.execute(
            select(TestSetFile.kind, func.count())
            .where(TestSetFile.test_set_id == test_set.id)
            .group_by(TestSetFile.kind)
        ).all()
    )
    return TestSetInfo(
        name=test_set.name,
        status=test_set.status,
        root_path=test_set.root_path,
        manifest_digest=test_set.manifest_digest,
        n_files=int(sum(counts.values())),
        n_dicom=int(counts.get(FileKind.DICOM.value, 0)),
        n_unreadable=int(counts.get(FileKind.UNREADABLE.value, 0)),
        summary=dict(test_set.summary or {}),
        locked_by=test_set.locked_by,
        locked_at=test_set.locked_at.isoformat() if test_set.locked_at else None,
        unreadable=tuple(
            (str(path), str(reason or ""))
            for path, reason in session.execute(
                select(TestSetFile.path, TestSetFile.reason)
                .where(
                    TestSetFile.test_set_id == test_set.id,
                    TestSetFile.kind == FileKind.UNREADABLE.value,
                )
                .order_by(TestSetFile.path)
            ).all()
        ),
    )


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _python_values(column: pd.Series) -> list[Any]:
    """A column's values as plain Python values, None where missing (NaN, <NA>)."""
    values = column.tolist()
    if column.dtype == object:
        return [_clean(v) for v in values] if column.isna().any() else values
    if column.hasnans:
        return [_clean(v) for v in values]
    return values


def _file_records(files: pd.DataFrame) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each DICOM file's columns and its header (the columns without dedicated fields).

    Values are plain Python values with None where missing, as stored.
    """
    columns = [str(name) for name in files.columns]
    values = [_python_values(files[name]) for name in columns]
    header_at = [i for i, name in enumerate(columns) if name not in _DEDICATED_COLUMNS]
    header_names = [columns[i] for i in header_at]
    for row in zip(*values, strict=True):
        yield (
            dict(zip(columns, row, strict=True)),
            dict(zip(header_names, (row[i] for i in header_at), strict=True)),
        )


def _summarize(index: DicomIndex) -> dict[str, Any]:
    files = index.files
    summary: dict[str, Any] = {
        "n_files": int(len(files) + len(index.unreadable) + len(index.other_files)),
        "n_dicom": int(len(files)),
        "n_unreadable": int(len(index.unreadable)),
        "n_other": int(len(index.other_files)),
    }
    if len(files):
        summary["n_studies"] = int(files["study_instance_uid"].nunique())
        summary["n_series"] = int(files["series_instance_uid"].nunique())
        summary["by_modality"] = {
            str(k): int(v) for k, v in files["modality"].fillna("?").value_counts().items()
        }
        images = files[files["modality"].fillna("") != "SEG"]
        per_series = images.drop_duplicates("series_instance_uid")
        scanner = (
            per_series["manufacturer"].fillna("?")
            + " "
            + per_series["manufacturer_model_name"].fillna("?")
        )
        summary["series_by_scanner"] = {str(k): int(v) for k, v in scanner.value_counts().items()}
        summary["series_by_sex"] = {
            str(k): int(v) for k, v in per_series["patient_sex"].fillna("?").value_counts().items()
        }
    return summary


def import_test_set(
    wb: Workbench,
    actor: Actor,
    folder: str | Path,
    *,
    name: str,
    workers: int = 2,
    progress: Progress = None,
    indexer: FolderIndexer | None = None,
) -> TestSetInfo:
    """Index a folder of DICOM files as a new draft test set.

    Every file is hashed and its header fields stored; unreadable or non-DICOM
    files are recorded with the reason, never fatal.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``testset.import``.
    folder : str or Path
        Root of the test set.
    name : str
        Unique test-set name.
    workers : int, default 2
        Processes used for reading and hashing.
    progress : callable, optional
        ``progress(done, total, message)``.
    indexer : FolderIndexer, optional
        Records of files indexed while they were written into ``folder`` (see
        :func:`workbench.dicom.index.index_folder`); the other files are read.

    Returns
    -------
    TestSetInfo

    Raises
    ------
    DuplicateError
        A test set with that name exists (a locked one can never be replaced).
    InvalidNameError
        ``name`` is not a safe name (:func:`workbench.naming.check_name`): no
        ``/``, ``..``, spaces, newlines, control or bidirectional characters.
    """
    from workbench.naming import check_name

    check_name(name, what="test-set name")
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"Test-set folder {root} does not exist or is not a folder.")
    with wb.transaction() as session:
        current_user(session, actor, "testset.import")
        existing = session.scalars(select(TestSet).where(TestSet.name == name)).first()
        if existing is not None:
            raise DuplicateError(
                f"A test set named '{name}' already exists ({existing.status}). "
                "Choose another name; test sets are never replaced."
            )
    # Indexing reads every file; it runs outside the write transaction.
    index = index_folder(root, workers=workers, progress=progress, indexer=indexer)
    summary = _summarize(index)
    with wb.transaction() as session:
        current_user(session, actor, "testset.import")
        if session.scalars(select(TestSet).where(TestSet.name == name)).first() is not None:
            raise DuplicateError(f"A test set named '{name}' was created meanwhile.")
        test_set = TestSet(
            name=name,
            root_path=str(root),
            status=TestSetStatus.DRAFT.value,
            created_by=actor.username,
            summary=summary,
        )
        session.add(test_set)
        session.flush()
        rows: list[dict[str, Any]] = []
        for record, header in _file_records(index.files):
            rows.append(
                {
                    "test_set_id": test_set.id,
                    "path": record["path"],
                    "size": int(record["size"]),
                    "sha256": record["sha256"],
                    "kind": FileKind.DICOM.value,
                    "sop_instance_uid": record["sop_instance_uid"],
                    "series_instance_uid": record["series_instance_uid"],
                    "study_instance_uid": record["study_instance_uid"],
                    "modality": record["modality"],
                    "sop_class_uid": record["sop_class_uid"],
                    "manufacturer": record["manufacturer"],
                    "manufacturer_model_name": record["manufacturer_model_name"],
                    "patient_sex": record["patient_sex"],
                    "patient_age": record["patient_age"],
                    "header": header,
                }
            )
        for record in index.unreadable.to_dict(orient="records"):
            rows.append(
                {
                    "test_set_id": test_set.id,
                    "path": record["path"],
                    "size": int(_clean(record.get("size")) or 0),
                    "sha256": _clean(record.get("sha256")) or "",
                    "kind": FileKind.UNREADABLE.value,
                    "reason": str(record.get("reason")),
                }
            )
        for record in index.other_files.to_dict(orient="records"):
            rows.append(
                {
                    "test_set_id": test_set.id,
                    "path": record["path"],
                    "size": int(record["size"]),
                    "sha256": record["sha256"],
                    "kind": FileKind.OTHER.value,
                }
            )
        if rows:
            # executemany needs the same keys in every row.
            keys = sorted({key for row in rows for key in row})
            session.execute(insert(TestSetFile), [{k: row.get(k) for k in keys} for row in rows])
        audit.append(
            session,
            actor=actor.username,
            action="testset.import",
            record_type="test_set",
            record_id=name,
            new={"root_path": str(root), "summary": summary},
        )
        return _info(session, test_set)


def _labels(root: Path) -> pd.DataFrame | None:
    path = root / LABELS_PATH
    return pd.read_csv(path, dtype={"case_id": str}) if path.is_file() else None


def check_quality(
    wb: Workbench,
    actor: Actor,
    name: str,
    *,
    training_manifest: dict[str, Any] | None = None,
    suite: str | None = None,
    task: str | None = None,
    ocr: bool = False,
    protocol: str | None = None,
) -> QualityResult:
    """Run the data-quality suite on a test set and store the findings.

    The stored record, its audit entry and everything that reads them (the app's
    test-set page, the lock refusal) carry the counts by severity of the findings
    returned here.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``testset.import``.
    name : str
        Test-set name.
    training_manifest : dict, optional
        Training-set manifest for the leakage check.
    suite : str
        Data-quality suite (:data:`workbench.quality.SUITES`); a protocol names it
        in ``data_quality_suite``.
    task : str, optional
        The protocol's task (``segmentation``, ``classification``, ``detection``):
        the reference standard every case needs; None needs SEG and labels.
    ocr : bool
        Also search the pixels for burned-in text (slower).
    protocol : str, optional
        A stored protocol ``id@version`` (or ``id``): its ``data_quality_suite``, task
        and labels join (``reference_standard.labels_key``) apply unless ``suite`` or
        ``task`` are given; labels rows are joined to image series exactly as the run
        joins them (:func:`workbench.protocols.cases.series_labels`).

    Returns
    -------
    workbench.quality.QualityReport
    """
    labels_key = "series_instance_uid"
    reference_source: str | None = None
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "testset.import")
        test_set = get_one(session, TestSet, "test set", name=name)
        index = load_index(session, test_set)
        root = Path(test_set.root_path)
        if protocol is not None:
            from workbench.services.protocols import lookup, parsed_protocol

            proto = parsed_protocol(lookup(session, protocol))
            suite = suite or proto.data_quality_suite
            task = task or proto.task.value
            labels_key = proto.reference_standard.labels_key.value
            seg_ref = proto.reference_standard.segmentation
            reference_source = seg_ref.source.value if seg_ref is not None else None
    suite = suite or DEFAULT_SUITE
    references = None
    if reference_source is not None:
        found = find_reference_files(index.files, root, reference_source)
        references = {uid: len(set(paths.values())) for uid, paths in found.items()}
    result = run_quality_checks(
        root,
        index,  # type: ignore[arg-type]  # frozen DicomIndex satisfies the read-only use
        labels=series_labels(index.files, _labels(root), labels_key),
        references=references,
        training_manifest=training_manifest,
        suite=suite,
        task=task,
        ocr=ocr,
    )
    with wb.transaction() as session:
        current_user(session, actor, "testset.import")
        test_set = get_one(session, TestSet, "test set", name=name)
        payload = result.to_dict()
        payload["task"] = task
        payload["ocr"] = ocr
        counts = result.counts
        record = QualityReport(
            test_set_id=test_set.id,
            created_by=actor.username,
            passed=not result.blocking,
            n_critical=int(counts.get("critical", 0)),
            n_major=int(counts.get("major", 0)),
            n_minor=int(counts.get("minor", 0)),
            findings=payload,
            suite_version=str(payload.get("suite_version", "1")),
        )
        session.add(record)
        session.flush()
        audit.append(
            session,
            actor=actor.username,
            action="testset.quality_check",
            record_type="test_set",
            record_id=name,
            new={
                "quality_report_id": record.id,
                "suite": result.suite,
                "task": task,
                "ocr": ocr,
                "passed": record.passed,
                "critical": record.n_critical,
                "major": record.n_major,
                "minor": record.n_minor,
                "info": int(counts.get("info", 0)),
            },
        )
    return result


def latest_quality(session: Session, test_set: TestSet) -> QualityReport | None:
    """The most recent stored data-quality report of a test set."""
    return session.scalars(
        select(QualityReport)
        .where(QualityReport.test_set_id == test_set.id)
        .order_by(QualityReport.id.desc())
        .limit(1)
    ).first()


def lock_test_set(
    wb: Workbench,
    actor: Actor,
    name: str,
    *,
    password: str,
    protocol: str | Path | None = None,
    progress: Progress = None,
) -> TestSetInfo:
    """Freeze a test set's manifest under the e-signature of a ``qa`` user.

    The files are re-hashed first: what is locked is what is on disk now and
    matches what was imported. The latest data-quality report must exist and
    have no critical findings. With ``protocol``, the pre-flight that ``validate``
    runs (:func:`workbench.services.preflight.check_protocol`) runs first: a
    blocking problem refuses the lock, every problem is listed at once, and the
    outcome is audited with the lock (``preflight`` in the ``testset.lock`` entry)
    or with the refusal (``testset.lock_refused``).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``testset.lock``.
    name : str
    password : str
        Re-authentication for the e-signature (meaning ``responsibility``).
    protocol : str or Path, optional
        A stored protocol ``id@version`` (or ``id``), or a protocol YAML file, to
        run the pre-flight against; None locks without it.
    progress : callable, optional

    Returns
    -------
    TestSetInfo
        With ``preflight`` set when a protocol was given.

    Raises
    ------
    TestSetLockedError
        Already locked.
    QualityGateError
        No quality check yet, or critical findings stand.
    WorkflowError
        Files changed since import, or the pre-flight found a blocking problem.
    """
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "testset.lock")
        test_set = get_one(session, TestSet, "test set", name=name)
        if test_set.status == TestSetStatus.LOCKED.value:
            raise TestSetLockedError(
                f"Test set '{name}' is already locked (manifest {test_set.manifest_digest})."
            )
        quality = latest_quality(session, test_set)
        if quality is None:
            raise QualityGateError(
                f"Test set '{name}' has no data-quality report; run "
                f"'workbench testset check {name}' before locking."
            )
        open_gate, unwaived = quality_gate(session, test_set)
        if not open_gate:
            waived = quality.n_critical - unwaived
            extra = f" ({waived} more waived)" if waived > 0 else ""
            raise QualityGateError(
                f"Test set '{name}' has {unwaived} critical data-quality finding(s){extra}; "
                "fix them and import the corrected folder as a new test set, or waive them "
                f"with two QA signatures ('workbench testset check {name} --details' lists "
                "them)."
            )
        index = load_index(session, test_set)
        root = Path(test_set.root_path)
    preflight = None
    if protocol is not None:
        preflight = _lock_preflight(wb, actor, name, protocol)
    manifest = build_manifest(root, index)
    diff = verify_manifest(root, manifest, progress=progress)
    if not diff.ok:
        raise WorkflowError(
            f"Files of test set '{name}' changed since import ({diff.summary()}); "
            "import the folder again as a new test set."
        )
    with wb.transaction() as session:
        user = current_user(session, actor, "testset.lock")
        test_set = get_one(session, TestSet, "test set", name=name)
        if test_set.status == TestSetStatus.LOCKED.value:
            raise TestSetLockedError(f"Test set '{name}' was locked meanwhile.")
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=SignatureMeaning.RESPONSIBILITY,
            record_type="test_set",
            record_id=name,
            content_sha256=manifest.digest,
        )
        old = {"status": test_set.status, "manifest_digest": test_set.manifest_digest}
        test_set.status = TestSetStatus.LOCKED.value
        test_set.manifest_json = manifest.to_json()
        test_set.manifest_digest = manifest.digest
        test_set.locked_at = utcnow()
        test_set.locked_by = user.username
        test_set.lock_signature_id = signature.id
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="testset.lock",
            record_type="test_set",
            record_id=name,
            old=old,
            new={
                "status": test_set.status,
                "manifest_digest": manifest.digest,
                "n_entries": len(manifest.entries),
                "signature_id": signature.id,
                **({"preflight": preflight.audit_record()} if preflight is not None else {}),
            },
        )
        info = _info(session, test_set)
    return replace(info, preflight=preflight)


def _lock_preflight(
    wb: Workbench, actor: Actor, name: str, protocol: str | Path
) -> PreflightReport:
    """The pre-flight of a lock; a blocking problem is audited and refuses the lock."""
    from workbench.services.preflight import check_protocol  # it imports this module

    report = check_protocol(wb, actor, protocol=protocol, test_set=name)
    if report.ok:
        return report
    with wb.transaction() as session:
        current_user(session, actor, "testset.lock")
        audit.append(
            session,
            actor=actor.username,
            action="testset.lock_refused",
            record_type="test_set",
            record_id=name,
            new={"preflight": report.audit_record()},
        )
    blocking = [p for p in report.problems if p.blocking]
    raise WorkflowError(
        f"Pre-flight of test set '{name}' against protocol {report.protocol} found "
        f"{len(blocking)} blocking problem(s); the lock is refused:\n"
        + "\n".join(report.lines()[1:-1])  # exclusions and problems, without the verdict
    )


def frozen_manifest(test_set: TestSet) -> Manifest:
    """The manifest frozen at lock time.

    Raises
    ------
    WorkflowError
        The test set is not locked.
    """
    if test_set.status != TestSetStatus.LOCKED.value or not test_set.manifest_json:
        raise WorkflowError(
            f"Test set '{test_set.name}' is not locked; lock it with "
            f"'workbench testset lock {test_set.name}' first."
        )
    from sqlalchemy.orm import object_session

    from workbench.records import anchors

    session = object_session(test_set)
    if session is not None:  # the manifest must be the one audited (and signed) at lock
        anchors.require_equal(anchors.check_test_set(session, test_set))
    return Manifest.from_json(test_set.manifest_json)


def verify_test_set(
    wb: Workbench, actor: Actor, name: str, *, progress: Progress = None
) -> ManifestDiff:
    """Re-hash every file of a locked test set against its frozen manifest.

    The outcome (intact, or the added, removed and changed paths) is written to
    the audit trail.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``testset.verify``.
    name : str
    progress : callable, optional

    Returns
    -------
    ManifestDiff
    """
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "testset.verify")
        test_set = get_one(session, TestSet, "test set", name=name)
        manifest = frozen_manifest(test_set)
        root = Path(test_set.root_path)
    diff = verify_manifest(root, manifest, progress=progress)
    with wb.transaction() as session:
        current_user(session, actor, "testset.verify")
        audit.append(
            session,
            actor=actor.username,
            action="testset.verify",
            record_type="test_set",
            record_id=name,
            new={
                "intact": diff.ok,
                "manifest_digest": manifest.digest,
                "added": list(diff.added)[:100],
                "removed": list(diff.removed)[:100],
                "changed": list(diff.changed)[:100],
            },
        )
    return diff


def list_test_sets(wb: Workbench) -> list[TestSetInfo]:
    """All test sets, oldest first."""
    with wb.transaction(readonly=True) as session:
        return [_info(session, t) for t in session.scalars(select(TestSet).order_by(TestSet.id))]


def get_test_set(wb: Workbench, name: str) -> TestSetInfo:
    """One test set by name."""
    with wb.transaction(readonly=True) as session:
        return _info(session, get_one(session, TestSet, "test set", name=name))


def ensure_not_locked(test_set: TestSet) -> None:
    """Raise :class:`TestSetLockedError` for a locked test set."""
    if test_set.status == TestSetStatus.LOCKED.value:
        raise TestSetLockedError(f"Test set '{test_set.name}' is locked and cannot change.")


def finding_id(finding: dict[str, Any] | QualityFinding) -> str:
    """Stable identifier of a finding (:func:`workbench.quality.findings.finding_id`)."""
    if isinstance(finding, QualityFinding):
        return finding.id
    return _finding_id(finding)


@dataclass(frozen=True, slots=True)
class Waiver:
    """A written, e-signed decision that a finding does not block the test set.

    Parameters
    ----------
    finding_id : str
        See :func:`finding_id`.
    check, severity, path, attribute : str
        Of the waived finding.
    justification : str
    signed_by : tuple of str
        Usernames of the QA users who signed it, in order.
    complete : bool
        One signature for a non-critical finding, two different QA users for a
        critical one.
    """

    finding_id: str
    check: str
    severity: str
    path: str
    attribute: str
    justification: str
    signed_by: tuple[str, ...]
    complete: bool


def _latest_findings(session: Session, test_set: TestSet) -> list[dict[str, Any]]:
    quality = latest_quality(session, test_set)
    return list((quality.findings or {}).get("findings", [])) if quality else []


def _waiver_content(finding: dict[str, Any], justification: str) -> str:
    body = {"finding_id": finding_id(finding), "justification": justification}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _waivers(session: Session, test_set: TestSet) -> dict[str, Waiver]:
    findings = {finding_id(f): f for f in _latest_findings(session, test_set)}
    prefix = f"{test_set.name}/"
    rows = session.scalars(
        select(Signature)
        .where(Signature.record_type == WAIVER_RECORD, Signature.record_id.like(prefix + "%"))
        .order_by(Signature.id)
    ).all()
    entries = session.scalars(
        select(AuditEntry).where(
            AuditEntry.action == "testset.waive_finding", AuditEntry.record_id == test_set.name
        )
    ).all()
    texts = {
        str((e.new_value or {}).get("content_sha256")): str(
            (e.new_value or {}).get("justification", "")
        )
        for e in entries
    }
    out: dict[str, Waiver] = {}
    for fid, finding in findings.items():
        signed = [r for r in rows if r.record_id == prefix + fid]
        if not signed:
            continue
        content = signed[0].content_sha256
        signers = tuple(dict.fromkeys(r.username for r in signed if r.content_sha256 == content))
        needed = 2 if finding.get("severity") == "critical" else 1
        out[fid] = Waiver(
            finding_id=fid,
            check=str(finding.get("check", "")),
            severity=str(finding.get("severity", "")),
            path=str(finding.get("path", "")),
            attribute=str(finding.get("attribute", "")),
            justification=texts.get(content, ""),
            signed_by=signers,
            complete=len(signers) >= needed,
        )
    return out


def quality_gate(session: Session, test_set: TestSet) -> tuple[bool, int]:
    """Whether the latest data-quality report lets the test set be locked and used.

    Returns
    -------
    (bool, int)
        Open or not, and the number of critical findings not waived (a critical
        finding is waived by two QA signatures). No report: ``(False, 0)``.
    """
    quality = latest_quality(session, test_set)
    if quality is None:
        return False, 0
    if quality.passed:
        return True, 0
    waivers = _waivers(session, test_set)
    unwaived = [
        f
        for f in _latest_findings(session, test_set)
        if f.get("severity") == "critical"
        and not (finding_id(f) in waivers and waivers[finding_id(f)].complete)
    ]
    return not unwaived, len(unwaived)


def current_waivers(session: Session, test_set: TestSet) -> list[Waiver]:
    """The waivers that apply to the latest data-quality report, by finding id.

    Read models (:func:`workbench.services.views.latest_quality`) show them beside
    :func:`quality_gate`, in the caller's transaction.
    """
    return sorted(_waivers(session, test_set).values(), key=lambda w: w.finding_id)


def list_waivers(wb: Workbench, actor: Actor, name: str) -> list[Waiver]:
    """The waivers that apply to the latest data-quality report of a test set."""
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, "testset.import")
        test_set = get_one(session, TestSet, "test set", name=name)
        return current_waivers(session, test_set)


def waive_finding(
    wb: Workbench,
    actor: Actor,
    name: str,
    finding: str,
    *,
    justification: str,
    password: str,
) -> Waiver:
    """Waive one finding of the latest data-quality report, e-signed and audited.

    A non-critical finding is waived by one QA signature. A critical one needs a
    second QA user to sign the same justification (21 CFR 11.50 signature with
    meaning ``approved``); until then it still blocks the lock.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        A QA user (needs ``testset.lock``).
    name : str
        Test-set name (draft).
    finding : str
        :func:`finding_id` of the finding (``testset check --export`` lists them).
    justification : str
        Why the finding does not affect the validation; at least
        :data:`MIN_JUSTIFICATION` characters; a second signer must give the same text.
    password : str
        Re-authentication for the e-signature.

    Returns
    -------
    Waiver

    Raises
    ------
    WorkflowError
        Unknown finding, short justification, a second signature by the same
        user or on another justification, or a locked test set.
    """
    text = " ".join(justification.split())
    if len(text) < MIN_JUSTIFICATION:
        raise WorkflowError(
            f"A waiver needs a written justification of at least {MIN_JUSTIFICATION} "
            f"characters; found {len(text)}."
        )
    with wb.transaction() as session:
        user = current_user(session, actor, "testset.lock")
        test_set = get_one(session, TestSet, "test set", name=name)
        ensure_not_locked(test_set)
        findings = {finding_id(f): f for f in _latest_findings(session, test_set)}
        if finding not in findings:
            raise WorkflowError(
                f"No finding {finding!r} in the latest data-quality report of '{name}'; "
                "expected an id from 'workbench testset check --export'."
            )
        target = findings[finding]
        content = _waiver_content(target, text)
        existing = _waivers(session, test_set).get(finding)
        if existing is not None:
            if user.username in existing.signed_by:
                raise WorkflowError(
                    f"{user.username} has already signed the waiver of {finding}; a critical "
                    "finding needs a second, different QA user."
                )
            if existing.justification != text:
                raise WorkflowError(
                    f"The waiver of {finding} was signed with another justification; the "
                    "second signer must sign the same text."
                )
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=SignatureMeaning.APPROVED,
            record_type=WAIVER_RECORD,
            record_id=f"{name}/{finding}",
            content_sha256=content,
        )
        audit.append(
            session,
            actor=user.username,
            action="testset.waive_finding",
            record_type="test_set",
            record_id=name,
            new={
                "finding_id": finding,
                "check": target.get("check"),
                "severity": target.get("severity"),
                "path": target.get("path"),
                "attribute": target.get("attribute"),
                "justification": text,
                "content_sha256": content,
                "signature_id": signature.id,
            },
        )
        session.flush()
        return _waivers(session, test_set)[finding]
