"""Read models of the app: what a page shows, checked against who is looking.

Every function here takes the :class:`~workbench.services.context.Actor`, re-reads
the account and checks the permission matrix inside its own transaction (see
:func:`~workbench.services.context.current_user`), and returns frozen dataclasses.
Nothing is computed here that the domain packages or the other services compute;
these functions gather what is stored so that the app never opens a database
session itself.

Who sees what
-------------
Every reader of validation records (QA, clinical reviewers, auditors) needs
``run.view``. A clinical reviewer whose run still has discrepancies to adjudicate,
under a protocol that keeps aggregate results from reviewers until adjudication is
finished, gets neither the verdict nor the results nor the case images of that run
(:func:`workbench.services.runs.results_hidden_reason`); the blinded cases they
adjudicate come only from :func:`workbench.services.adjudication.open_case`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import PermissionDeniedError
from workbench.protocols import Protocol
from workbench.quality.findings import QualityReport
from workbench.records.models import (
    CaseResult,
    ProtocolVersion,
    Run,
    TestSet,
    TestSetFile,
)
from workbench.services import models as model_service
from workbench.services import protocols as protocol_service
from workbench.services import reports as report_service
from workbench.services import runs, testsets
from workbench.services.context import Actor, Workbench, current_user, get_one
from workbench.vocabulary import CaseStatus

__all__ = [
    "RunDetail",
    "RunListing",
    "QualitySummary",
    "SeriesDemographics",
    "CaseImages",
    "list_runs",
    "run_detail",
    "results_refusal",
    "latest_quality",
    "series_demographics",
    "file_sha256s",
    "case_images",
    "account_must_change_password",
    "list_test_sets",
    "list_models",
    "list_protocols",
    "list_reports",
    "protocol_diff",
]

#: The permission every reader of validation records holds.
_VIEW = "run.view"

#: Rows per ``IN (...)`` clause, well below the bound-parameter limits of SQLite and PostgreSQL.
_CHUNK = 500


def _check(wb: Workbench, actor: Actor, action: str) -> None:
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, action)


# -- runs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunDetail:
    """A run with the protocol it ran under, as the signed-in user may see it.

    Parameters
    ----------
    summary : RunSummary
        Verdict and results are ``None`` when hidden from the user (see ``hidden_reason``).
    protocol_ref : str
        ``id@version``.
    protocol_yaml : str
        The approved protocol text the run applied.
    protocol : Protocol
        The same text, parsed.
    task : str
        ``segmentation`` or ``classification``.
    hidden_reason : str or None
        Why the user may not see the run's aggregate results yet; ``None`` when they may.
    started_by, started_at, finished_at, device : str or None
        Times are ISO 8601 (UTC).
    environment : dict
        The software and hardware the run recorded (empty when hidden).
    """

    summary: runs.RunSummary
    protocol_ref: str
    protocol_yaml: str
    protocol: Protocol
    task: str
    hidden_reason: str | None
    started_by: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    device: str | None = None
    environment: Mapping[str, Any] = field(default_factory=dict)

    @property
    def run_uid(self) -> str:
        """The run's uid."""
        return self.summary.run_uid

    @property
    def acceptance_thresholds(self) -> dict[str, float]:
        """Endpoint id -> the threshold of its acceptance criterion (for figures)."""
        return {e.id: e.criterion.threshold for e in self.protocol.endpoints}

    @property
    def strata_order(self) -> tuple[str, ...]:
        """The protocol's stratum factors, in protocol order."""
        return tuple(f.factor for f in self.protocol.strata)


def _protocol_of(session: Session, run: Run) -> tuple[ProtocolVersion, Protocol]:
    pv = session.get(ProtocolVersion, run.protocol_version_id)
    assert pv is not None
    return pv, protocol_service.parsed_protocol(pv)


def run_detail(wb: Workbench, actor: Actor, run_uid: str) -> RunDetail:
    """One run with its protocol, device and times (``run.view``).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``run.view``.
    run_uid : str

    Returns
    -------
    RunDetail
        The verdict, the results and the environment are left out while the
        results are hidden from the user (``hidden_reason``).

    Raises
    ------
    PermissionDeniedError
        The role may not view runs.
    NotFoundError
        No run with this uid.
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, _VIEW)
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        pv, protocol = _protocol_of(session, run)
        # Read before the summary: results only ever become visible (discrepancies are
        # adjudicated, never reopened), so the summary read next is never more hidden.
        hidden = runs.results_hidden_reason(session, user, run)
        protocol_ref, protocol_yaml = f"{pv.protocol_id}@{pv.version}", pv.yaml_text
        started_by, device = run.started_by, run.device
        started_at = run.started_at.isoformat() if run.started_at else None
        finished_at = run.finished_at.isoformat() if run.finished_at else None
        environment = {} if hidden else dict(run.environment or {})
    return RunDetail(
        summary=runs.get_run(wb, actor, run_uid),
        protocol_ref=protocol_ref,
        protocol_yaml=protocol_yaml,
        protocol=protocol,
        task=protocol.task.value,
        hidden_reason=hidden,
        started_by=started_by,
        started_at=started_at,
        finished_at=finished_at,
        device=device,
        environment=environment,
    )


@dataclass(frozen=True, slots=True)
class RunListing:
    """A run in a list, with whether its results are hidden from the signed-in user.

    Parameters
    ----------
    summary : RunSummary
        Verdict and results are ``None`` while hidden (and while the run has none).
    hidden_reason : str or None
        Why the user may not see the run's aggregate results yet; ``None`` when they may.
    """

    summary: runs.RunSummary
    hidden_reason: str | None

    @property
    def hidden(self) -> bool:
        """Whether the run's verdict and results are hidden from the user."""
        return self.hidden_reason is not None


def list_runs(wb: Workbench, actor: Actor) -> list[RunListing]:
    """Every run, newest first, each with its visibility for ``actor`` (``run.view``).

    Raises
    ------
    PermissionDeniedError
        The role may not view runs.
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, _VIEW)
        # Read before the summaries (see run_detail); a run that started in between has
        # no discrepancies yet, so nothing of it is hidden.
        hidden = {
            r.run_uid: runs.results_hidden_reason(session, user, r)
            for r in session.scalars(select(Run))
        }
    return [
        RunListing(summary=s, hidden_reason=hidden.get(s.run_uid))
        for s in runs.list_runs(wb, actor)
    ]


def results_refusal(wb: Workbench, actor: Actor, run_uid: str) -> str | None:
    """Why ``actor`` may not see the aggregate results of a run yet, or ``None`` (``run.view``).

    The rule lives in :func:`workbench.services.runs.results_hidden_reason`.

    Raises
    ------
    PermissionDeniedError
        The role may not view runs.
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, _VIEW)
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        return runs.results_hidden_reason(session, user, run)


# -- test sets ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QualitySummary:
    """The latest stored data-quality check of a test set.

    Parameters
    ----------
    created_at, created_by : str or None
        When (ISO 8601, UTC) and by whom the check ran.
    passed : bool
        No critical finding.
    n_critical, n_major, n_minor : int
    report : QualityReport
        The stored findings, typed.
    gate_open : bool
        Whether the data-quality gate lets the test set be locked and used
        (:func:`workbench.services.testsets.quality_gate`): no critical finding, or
        every critical finding waived with two QA signatures.
    n_unwaived_critical : int
        Critical findings that still block.
    waivers : tuple of Waiver
        The waivers that apply to this check, complete or awaiting a signature.
    task : str or None
        The task whose reference standard the check required (None: SEG and labels).
    ocr : bool
        Whether the pixels were searched for burned-in text.
    """

    created_at: str | None
    created_by: str | None
    passed: bool
    n_critical: int
    n_major: int
    n_minor: int
    report: QualityReport
    gate_open: bool = False
    n_unwaived_critical: int = 0
    waivers: tuple[testsets.Waiver, ...] = ()
    task: str | None = None
    ocr: bool = False


def latest_quality(wb: Workbench, actor: Actor, test_set_name: str) -> QualitySummary | None:
    """The latest data-quality check of a test set, or ``None`` before the first (``run.view``).

    Raises
    ------
    PermissionDeniedError
        The role may not view validation records.
    NotFoundError
        No test set of that name.
    """
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, _VIEW)
        test_set = get_one(session, TestSet, "test set", name=test_set_name)
        stored = testsets.latest_quality(session, test_set)
        if stored is None:
            return None
        payload = dict(stored.findings or {})
        gate_open, unwaived = testsets.quality_gate(session, test_set)
        return QualitySummary(
            created_at=stored.created_at.isoformat() if stored.created_at else None,
            created_by=stored.created_by,
            passed=bool(stored.passed),
            n_critical=int(stored.n_critical or 0),
            n_major=int(stored.n_major or 0),
            n_minor=int(stored.n_minor or 0),
            report=QualityReport.from_dict(payload),
            gate_open=gate_open,
            n_unwaived_critical=unwaived,
            waivers=tuple(testsets.current_waivers(session, test_set)),
            task=str(payload["task"]) if payload.get("task") else None,
            ocr=bool(payload.get("ocr", False)),
        )


@dataclass(frozen=True, slots=True)
class SeriesDemographics:
    """One image series of a test set: scanner, sex and age from its index.

    Parameters
    ----------
    series_instance_uid : str
    scanner : str
        Manufacturer and model name (``"?"`` where the header has none).
    patient_sex : str
        ``M``, ``F``, ``O`` or ``"?"``.
    patient_age : str
        The DICOM age string (``"061Y"``), ``""`` when absent.
    age_years : int or None
        The leading number of ``patient_age``.
    """

    series_instance_uid: str
    scanner: str
    patient_sex: str
    patient_age: str
    age_years: int | None


_AGE = re.compile(r"(\d+)")


def _text(value: Any, default: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return default
    text = str(value)
    return text if text else default


def series_demographics(
    wb: Workbench, actor: Actor, test_set_name: str
) -> tuple[SeriesDemographics, ...]:
    """One entry per image series (segmentations left out) of a test set (``run.view``).

    Raises
    ------
    PermissionDeniedError
        The role may not view validation records.
    NotFoundError
        No test set of that name.
    """
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, _VIEW)
        test_set = get_one(session, TestSet, "test set", name=test_set_name)
        files = testsets.load_index(session, test_set).files
    if not len(files):
        return ()
    images = files[files["modality"].fillna("") != "SEG"].drop_duplicates("series_instance_uid")
    out = []
    for row in images.itertuples(index=False):
        age = _text(row.patient_age, "")
        match = _AGE.match(age)
        out.append(
            SeriesDemographics(
                series_instance_uid=_text(row.series_instance_uid, ""),
                scanner=f"{_text(row.manufacturer, '?')} {_text(row.manufacturer_model_name, '?')}",
                patient_sex=_text(row.patient_sex, "?"),
                patient_age=age,
                age_years=int(match.group(1)) if match else None,
            )
        )
    return tuple(out)


def file_sha256s(wb: Workbench, actor: Actor, paths: Iterable[str]) -> dict[str, str]:
    """The recorded SHA-256 of test-set files and model outputs, by absolute path (``run.view``).

    Test-set files come from the locked index, model masks from the case results.
    Paths without a record are left out (the caller hashes them itself).

    Raises
    ------
    PermissionDeniedError
        The role may not view validation records.
    """
    wanted = {str(Path(p)) for p in paths}
    found: dict[str, str] = {}
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, _VIEW)
        for test_set in session.scalars(select(TestSet)):
            root = Path(test_set.root_path)
            relative = []
            for path in wanted:
                try:
                    relative.append(Path(path).relative_to(root).as_posix())
                except ValueError:
                    continue
            for start in range(0, len(relative), _CHUNK):
                for rel, sha in session.execute(
                    select(TestSetFile.path, TestSetFile.sha256).where(
                        TestSetFile.test_set_id == test_set.id,
                        TestSetFile.path.in_(relative[start : start + _CHUNK]),
                    )
                ):
                    found[str(root / rel)] = sha
        rest = sorted(p for p in wanted if p not in found)
        for start in range(0, len(rest), _CHUNK):
            for mask_path, mask_sha in session.execute(
                select(CaseResult.mask_path, CaseResult.mask_sha256).where(
                    CaseResult.mask_path.in_(rest[start : start + _CHUNK])
                )
            ):
                if mask_sha:
                    found[str(mask_path)] = mask_sha
    return found


# -- one case of a run --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseImages:
    """The images of one case of a run, unblinded (for users who may see the run's results).

    Parameters
    ----------
    run_uid, case_id : str
    status : CaseStatus
    reason : str
        Why the case failed or was excluded ('' when completed).
    series_instance_uid : str or None
        The case's image series.
    ct_paths : tuple of str
        The series' slices.
    model_mask : str or None
        The model's segmentation (segmentation runs).
    reference_segs : tuple of str
        The readers' SEG objects that make up the reference standard.
    reference_rule : str
        How the readers' masks are combined (``majority``...), ``labels`` for classification.
    metrics : dict
        The case's stored metrics (Dice, HD95...).
    """

    run_uid: str
    case_id: str
    status: CaseStatus
    reason: str
    series_instance_uid: str | None
    ct_paths: tuple[str, ...]
    model_mask: str | None
    reference_segs: tuple[str, ...]
    reference_rule: str
    metrics: Mapping[str, Any] = field(default_factory=dict)


def _series_uid(session: Session, run: Run, result: CaseResult, protocol: Protocol) -> str | None:
    """The case's series UID, as stored with the case when the run read the locked test set."""
    stored = (result.strata or {}).get("series_instance_uid")
    if stored:
        return str(stored)
    # Runs stored by release 0.1 kept no series UID with their cases: the run's case
    # frame joins it from the verified, locked labels.
    frame = runs.case_frame(session, run.id, protocol)
    if "series_instance_uid" not in frame or not len(frame):
        return None
    match = frame.loc[frame["case_id"] == result.case_id, "series_instance_uid"]
    value = match.iloc[0] if len(match) else None
    return None if value is None or value != value else str(value)


def case_images(wb: Workbench, actor: Actor, run_uid: str, case_id: str) -> CaseImages:
    """CT slices, model mask and reference SEGs of one case of a run (``run.view``).

    Raises
    ------
    PermissionDeniedError
        The role may not view runs, or the run's results are hidden from the user
        (see :func:`results_refusal`).
    NotFoundError
        No such run or no such case in it.
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, _VIEW)
        run: Run = get_one(session, Run, "run", run_uid=run_uid)
        refusal = runs.results_hidden_reason(session, user, run)
        if refusal:
            raise PermissionDeniedError(refusal)
        result: CaseResult = get_one(
            session, CaseResult, "case result", run_id=run.id, case_id=case_id
        )
        _pv, protocol = _protocol_of(session, run)
        test_set = session.get(TestSet, run.test_set_id)
        assert test_set is not None
        root = Path(test_set.root_path)
        series_uid = _series_uid(session, run, result, protocol)
        ct: list[str] = []
        segs: list[str] = []
        if series_uid is not None:
            for f in session.scalars(
                select(TestSetFile).where(TestSetFile.test_set_id == test_set.id)
            ):
                if f.modality == "SEG":
                    if (f.header or {}).get("referenced_series_uid") == series_uid:
                        segs.append(str(root / f.path))
                elif f.series_instance_uid == series_uid:
                    ct.append(str(root / f.path))
        seg_ref = protocol.reference_standard.segmentation
        if seg_ref is not None:
            segs = [p for p in segs if Path(p).stem in seg_ref.readers]
        return CaseImages(
            run_uid=run_uid,
            case_id=case_id,
            status=CaseStatus(result.status),
            reason=result.reason or "",
            series_instance_uid=series_uid,
            ct_paths=tuple(sorted(ct)),
            model_mask=result.mask_path,
            reference_segs=tuple(sorted(segs)),
            reference_rule=str(seg_ref.rule) if seg_ref else "labels",
            metrics=dict(result.metrics or {}),
        )


# -- accounts -----------------------------------------------------------------------------------


def account_must_change_password(wb: Workbench, actor: Actor) -> bool:
    """Whether the signed-in account must change its password before anything else.

    Needs no permission beyond a live, usable account: it is what decides which
    pages the account may open.

    Raises
    ------
    AuthenticationError
        The actor was not issued by a sign-in, or the account is gone, disabled or locked.
    """
    with wb.transaction(readonly=True) as session:
        return bool(current_user(session, actor).must_change_password)


# -- lists --------------------------------------------------------------------------------------


def list_test_sets(wb: Workbench, actor: Actor) -> list[testsets.TestSetInfo]:
    """Every test set, oldest first (``run.view``)."""
    _check(wb, actor, _VIEW)
    return testsets.list_test_sets(wb)


def list_models(wb: Workbench, actor: Actor) -> list[model_service.ModelInfo]:
    """Every registered model (``run.view``)."""
    _check(wb, actor, _VIEW)
    return model_service.list_models(wb)


def list_protocols(wb: Workbench, actor: Actor) -> list[protocol_service.ProtocolInfo]:
    """Every stored protocol version, oldest first (``run.view``)."""
    _check(wb, actor, _VIEW)
    return protocol_service.list_protocols(wb)


def list_reports(wb: Workbench, actor: Actor) -> list[report_service.ReportInfo]:
    """Every report with its signatures (``run.view``)."""
    _check(wb, actor, _VIEW)
    return report_service.list_reports(wb)


def protocol_diff(wb: Workbench, actor: Actor, old_ref: str, new_ref: str) -> str:
    """Unified diff between two stored protocol versions (``run.view``)."""
    _check(wb, actor, _VIEW)
    return protocol_service.protocol_diff(wb, old_ref, new_ref)
