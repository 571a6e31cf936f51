"""Reader studies: pre-registered designs, blinded reading sessions, signed arms, the analysis.

Life cycle: ``add_study`` stores a design as a draft (exact text and SHA-256);
``approve_study`` e-signs it (another QA user than its author), after which it
is immutable. Each listed reader (a reviewer account) reads each arm in a
session: the case order is drawn from the design's seed, the reader and the arm
(recorded); the first arm of each reader is drawn too, so half the readers start
without the model. A reader sees only the images (and, in an aided arm, the
model's score and mask), never the reference standard or another reader's
ratings; may pause and resume; rates every case (a changed rating is a new row,
the newest counts); and closes the arm with an e-signature of meaning ``read``.
The second arm opens only after the design's washout period. When every session
is signed, ``analyze_study`` (QA and auditors) runs the Obuchowski-Rockette
analysis of the design's hypothesis.

In a detection study (a design with a ``detection`` section) readers mark
lesions instead: ``mark_case`` saves a case's marks (each a position on an image
of the case, converted to patient coordinates with the image's DICOM geometry,
or given in patient coordinates; an optional box; a confidence on the design's
scale), or records the case as read with no mark. Saving adds one rating row
(the highest confidence, 0 without a mark) and one append-only mark row per
mark; a case saved again gets new rows and the newest counts until the arm is
signed. The analysis matches the marks to the test set's reference lesions by
the design's rule and runs the Obuchowski-Rockette analysis of the wAFROC
figure of merit.

Every step writes an audit entry. Ratings and marks enter the audit trail as the
SHA-256 of the record, never the values, so no reader can learn another's
ratings or marks from the trail.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import (
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RecordLockedError,
    WorkflowError,
)
from workbench.records import audit, signatures
from workbench.records.models import (
    CaseResult,
    ReaderMark,
    RegisteredModel,
    Run,
    RunStatus,
    SignatureMeaning,
    TestSet,
    User,
    utcnow,
)
from workbench.records.studies import (
    ReaderRating,
    ReaderStudy,
    ReaderStudyStatus,
    ReadingSession,
    ReadingSessionStatus,
)
from workbench.services.context import Actor, Workbench, current_user, get_one
from workbench.services.testsets import LABELS_PATH, frozen_manifest, load_index
from workbench.studies import (
    ReaderStudyDesign,
    StudyAnalysis,
    StudyDesignKind,
    analyze_marks,
    analyze_ratings,
    load_study_design,
)

__all__ = [
    "Mark",
    "ReadingCase",
    "ReadingProgress",
    "StudyInfo",
    "add_study",
    "analyze_study",
    "approve_study",
    "arm_order",
    "list_studies",
    "mark_case",
    "study_design",
    "next_case",
    "open_reading",
    "pause_reading",
    "rate_case",
    "rate_cases",
    "reading_order",
    "reading_progress",
    "sign_arm",
]


#: Modalities that are not images a reader reads.
_NON_IMAGE = ("SEG", "RTSTRUCT", "SR", "KO", "PR", "RTPLAN", "RTDOSE", "DOC")


@dataclass(frozen=True, slots=True)
class StudyInfo:
    """A stored reader-study design."""

    study_id: str
    version: int
    title: str
    status: str
    sha256: str
    created_by: str
    approved_by: str | None

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.study_id}@{self.version}"


@dataclass(frozen=True, slots=True)
class ReadingProgress:
    """Where one reader stands in one arm."""

    study: str
    reader: str
    arm: str
    status: str
    n_cases: int
    n_rated: int
    opens_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReadingCase:
    """What a reader sees of the next case: images, and in an aided arm the model's output.

    ``position`` is 1-based in the reader's own case order; ``shown_at`` is passed
    back to :func:`rate_case` to record the reading time.
    """

    study: str
    arm: str
    case_id: str
    position: int
    n_cases: int
    image_paths: tuple[str, ...]
    model_score: float | None
    model_mask: str | None
    shown_at: datetime


@dataclass(frozen=True, slots=True)
class Mark:
    """One lesion mark a reader places on a case of a detection study.

    Either on an image of the case: ``sop_instance_uid`` (and ``frame``, 1-based, for a
    multi-frame image) with the pixel position ``column``, ``row`` (0-based, fractional
    allowed) and optionally a pixel ``box`` ``(col_min, row_min, col_max, row_max)``; or
    in patient coordinates: ``x``, ``y``, ``z`` (LPS, mm). ``confidence`` is on the
    design's rating scale.
    """

    confidence: float
    sop_instance_uid: str | None = None
    column: float | None = None
    row: float | None = None
    frame: int = 1
    box: tuple[float, float, float, float] | None = None
    x: float | None = None
    y: float | None = None
    z: float | None = None


def _info(study: ReaderStudy) -> StudyInfo:
    return StudyInfo(
        study_id=study.study_id,
        version=study.version,
        title=study.title,
        status=study.status,
        sha256=study.sha256,
        created_by=study.created_by,
        approved_by=study.approved_by,
    )


def _lookup(session: Session, ref: str) -> ReaderStudy:
    study_id, _, version = ref.partition("@")
    statement = select(ReaderStudy).where(ReaderStudy.study_id == study_id)
    if version:
        if not version.isdigit():
            raise NotFoundError(f"No reader study '{ref}': expected id@version with a number.")
        statement = statement.where(ReaderStudy.version == int(version))
    found = session.scalars(statement.order_by(ReaderStudy.version.desc())).first()
    if found is None:
        raise NotFoundError(f"No reader study '{ref}'.")
    return found


def _design(study: ReaderStudy) -> ReaderStudyDesign:
    if hashlib.sha256(study.yaml_text.encode("utf-8")).hexdigest() != study.sha256:
        raise WorkflowError(
            f"Reader study {study.study_id}@{study.version}: the stored text no longer matches "
            "its recorded SHA-256."
        )
    return load_study_design(study.yaml_text.encode("utf-8"))[0]


@dataclass(frozen=True, slots=True)
class _Case:
    case_id: str
    series_uid: str
    truth: int
    image_paths: tuple[str, ...]


def _cases(session: Session, design: ReaderStudyDesign) -> list[_Case]:
    """The study's cases: image series of the locked test set with a reference label."""
    ts: TestSet = get_one(session, TestSet, "test set", name=design.test_set.name)
    manifest = frozen_manifest(ts)
    root = Path(ts.root_path)
    expected = manifest.entries.get(LABELS_PATH)
    data = (root / LABELS_PATH).read_bytes() if (root / LABELS_PATH).is_file() else b""
    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise WorkflowError(
            f"Test set '{ts.name}': {LABELS_PATH} is missing or no longer matches its lock."
        )
    labels = pd.read_csv(io.BytesIO(data), dtype={"case_id": str})
    column = design.truth.labels_column
    if column not in labels or "series_instance_uid" not in labels:
        raise ProtocolError(
            f"{LABELS_PATH} needs columns 'series_instance_uid' and '{column}'; found "
            f"{list(labels.columns)}."
        )
    files = load_index(session, ts).files
    images = files[~files["modality"].fillna("").isin(_NON_IMAGE)]
    paths = {
        str(uid): tuple(str(root / p) for p in sorted(group["path"]))
        for uid, group in images.groupby("series_instance_uid")
    }
    cases = []
    for row in labels.to_dict(orient="records"):
        uid, truth = str(row["series_instance_uid"]), row.get(column)
        if uid in paths and truth is not None and not pd.isna(truth):
            cases.append(_Case(str(row["case_id"]), uid, int(truth), paths[uid]))
    cases.sort(key=lambda c: c.case_id)
    if design.cases_per_arm is not None and design.cases_per_arm < len(cases):
        rng = random.Random(f"{design.seed}:cases")  # noqa: S311 - a recorded design choice
        cases = sorted(rng.sample(cases, design.cases_per_arm), key=lambda c: c.case_id)
    if len(cases) < 2:
        raise WorkflowError(f"Reader study needs at least 2 labelled cases; found {len(cases)}.")
    return cases


def _model_outputs(session: Session, design: ReaderStudyDesign, arm: str) -> dict[str, CaseResult]:
    model_ref = next(a.model for a in design.arms if a.id == arm)
    if model_ref is None:
        return {}
    name, _, version = model_ref.partition("@")
    model: RegisteredModel = get_one(session, RegisteredModel, "model", name=name, version=version)
    ts: TestSet = get_one(session, TestSet, "test set", name=design.test_set.name)
    run = session.scalars(
        select(Run)
        .where(
            Run.model_id == model.id,
            Run.test_set_id == ts.id,
            Run.status == RunStatus.COMPLETED.value,
        )
        .order_by(Run.id.desc())
    ).first()
    if run is None:
        raise WorkflowError(
            f"Arm '{arm}' shows model {model_ref}, but it has no completed run on test set "
            f"'{ts.name}'; run a validation first."
        )
    return {
        c.case_id: c for c in session.scalars(select(CaseResult).where(CaseResult.run_id == run.id))
    }


def add_study(wb: Workbench, actor: Actor, source: str | Path | bytes) -> StudyInfo:
    """Store a reader-study design as a draft (``study.design``).

    Raises
    ------
    ProtocolError
        The design does not validate (every wrong field is named).
    WorkflowError
        The test set is not locked, a reader is not a reviewer account, or an arm's
        model is not registered.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "study.design")
        design, text, digest = load_study_design(source)
        frozen_manifest(get_one(session, TestSet, "test set", name=design.test_set.name))
        for reader in design.readers:
            account = session.scalars(select(User).where(User.username == reader)).first()
            if account is None or account.role != "reviewer":
                raise WorkflowError(
                    f"Reader '{reader}' must be an existing account with the reviewer role; "
                    f"found {'no account' if account is None else 'role ' + account.role}."
                )
        for arm in design.arms:
            if arm.model is not None:
                name, _, version = arm.model.partition("@")
                get_one(session, RegisteredModel, "model", name=name, version=version)
        existing = session.scalars(
            select(ReaderStudy).where(
                ReaderStudy.study_id == design.id, ReaderStudy.version == design.version
            )
        ).first()
        if existing is not None:
            if existing.sha256 == digest:
                return _info(existing)
            raise RecordLockedError(
                f"Reader study {design.id}@{design.version} exists with other content; give the "
                "changed design a new version."
            )
        study = ReaderStudy(
            study_id=design.id,
            version=design.version,
            title=design.title,
            yaml_text=text,
            sha256=digest,
            status=ReaderStudyStatus.DRAFT.value,
            created_by=user.username,
            created_at=utcnow(),
        )
        session.add(study)
        session.flush()
        audit.append(
            session,
            actor=user.username,
            action="study.create",
            record_type="reader_study",
            record_id=f"{design.id}@{design.version}",
            new={"sha256": digest, "readers": design.readers, "arms": [a.id for a in design.arms]},
        )
        return _info(study)


def approve_study(wb: Workbench, actor: Actor, ref: str, *, password: str) -> StudyInfo:
    """Approve a draft design with an e-signature (``study.design``; not its author)."""
    with wb.transaction() as session:
        user = current_user(session, actor, "study.design")
        study = _lookup(session, ref)
        if study.status != ReaderStudyStatus.DRAFT.value:
            raise RecordLockedError(
                f"Reader study {ref} is {study.status}; only a draft is approved."
            )
        if study.created_by == user.username:
            raise PermissionDeniedError(
                f"{user.username} created reader study {ref} and cannot also approve it "
                "(separation of duties)."
            )
        design = _design(study)
        if design.design is StudyDesignKind.SPLIT_PLOT:
            # Reading would give every reader every case, and the analysis is fully crossed.
            raise WorkflowError(
                f"Reader study {ref} cannot be approved: the split-plot design has no analysis "
                "in this version (Obuchowski-Rockette for split-plot is not implemented); use "
                "design: fully_crossed."
            )
        for arm in design.arms:
            _model_outputs(session, design, arm.id)  # an aided arm needs the model's run
        cases = _cases(session, design)
        if design.reads_marks:
            _reference_lesions(session, design, cases)  # the reference lesions must load
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=SignatureMeaning.APPROVED,
            record_type="reader_study",
            record_id=f"{study.study_id}@{study.version}",
            content_sha256=study.sha256,
        )
        study.status = ReaderStudyStatus.APPROVED.value
        study.approved_by = user.username
        study.approved_at = signature.signed_at
        study.approval_signature_id = signature.id
        audit.append(
            session,
            actor=user.username,
            action="study.approve",
            record_type="reader_study",
            record_id=f"{study.study_id}@{study.version}",
            new={"status": study.status, "signature_id": signature.id, "sha256": study.sha256},
        )
        return _info(study)


def _arm_order(design: ReaderStudyDesign, reader: str) -> list[str]:
    arms = [a.id for a in design.arms]
    random.Random(f"{design.seed}:{reader}:arms").shuffle(arms)  # noqa: S311 - recorded design
    return arms


def _session_for(
    session: Session, study: ReaderStudy, design: ReaderStudyDesign, user: User, arm: str
) -> ReadingSession:
    if study.status != ReaderStudyStatus.APPROVED.value:
        raise WorkflowError(f"Reader study {study.study_id}@{study.version} is not approved yet.")
    if user.username not in design.readers:
        raise PermissionDeniedError(
            f"{user.username} is not a reader of {study.study_id}@{study.version}."
        )
    if arm not in [a.id for a in design.arms]:
        raise NotFoundError(f"No arm '{arm}'; the arms are {[a.id for a in design.arms]}.")
    found = _reading(session, study.id, user.username, arm)
    if found is not None:
        return found
    first, second = _arm_order(design, user.username)
    if arm == second:
        earlier = _reading(session, study.id, user.username, first)
        if earlier is None or earlier.status != ReadingSessionStatus.SIGNED.value:
            raise WorkflowError(
                f"{user.username} reads arm '{first}' first; sign it before opening '{arm}'."
            )
        assert earlier.signed_at is not None
        opens = earlier.signed_at + timedelta(days=design.washout_days)
        if utcnow() < opens:
            raise WorkflowError(
                f"Arm '{arm}' opens after the washout of {design.washout_days:g} days, on "
                f"{opens.isoformat(timespec='minutes')} UTC."
            )
    cases = _cases(session, design)
    seed = int(hashlib.sha256(f"{design.seed}:{user.username}:{arm}".encode()).hexdigest()[:8], 16)
    order = [c.case_id for c in cases]
    random.Random(seed).shuffle(order)  # noqa: S311 - a recorded, reproducible case order
    reading = ReadingSession(
        study_pk=study.id,
        reader=user.username,
        arm=arm,
        seed=seed,
        case_order=order,
        status=ReadingSessionStatus.OPEN.value,
        started_at=utcnow(),
    )
    session.add(reading)
    session.flush()
    audit.append(
        session,
        actor=user.username,
        action="study.session.open",
        record_type="reading_session",
        record_id=f"{study.study_id}@{study.version}/{user.username}/{arm}",
        new={
            "seed": seed,
            "n_cases": len(order),
            "case_order_sha256": hashlib.sha256(json.dumps(order).encode()).hexdigest(),
        },
    )
    return reading


def _reading(session: Session, study_pk: int, reader: str, arm: str) -> ReadingSession | None:
    """One reader's session of one arm, if it was opened."""
    found: ReadingSession | None = session.scalars(
        select(ReadingSession).where(
            ReadingSession.study_pk == study_pk,
            ReadingSession.reader == reader,
            ReadingSession.arm == arm,
        )
    ).first()
    return found


def _latest_ratings(session: Session, reading: ReadingSession) -> dict[str, ReaderRating]:
    latest: dict[str, ReaderRating] = {}
    for rating in session.scalars(
        select(ReaderRating).where(ReaderRating.session_id == reading.id).order_by(ReaderRating.id)
    ):
        latest[rating.case_id] = rating
    return latest


def open_reading(wb: Workbench, actor: Actor, ref: str, arm: str) -> ReadingProgress:
    """Open (or resume) the actor's reading of one arm (``study.read``; a listed reader)."""
    with wb.transaction() as session:
        user = current_user(session, actor, "study.read")
        study = _lookup(session, ref)
        design = _design(study)
        reading = _session_for(session, study, design, user, arm)
        if reading.status == ReadingSessionStatus.PAUSED.value:
            reading.status = ReadingSessionStatus.OPEN.value
            audit.append(
                session,
                actor=user.username,
                action="study.session.resume",
                record_type="reading_session",
                record_id=f"{study.study_id}@{study.version}/{user.username}/{arm}",
                new={"status": reading.status},
            )
        return _progress(session, ref, user.username, arm, reading)


def pause_reading(wb: Workbench, actor: Actor, ref: str, arm: str) -> ReadingProgress:
    """Pause the actor's reading of an arm; :func:`open_reading` resumes it."""
    with wb.transaction() as session:
        user = current_user(session, actor, "study.read")
        study = _lookup(session, ref)
        reading = _session_for(session, study, _design(study), user, arm)
        if reading.status == ReadingSessionStatus.SIGNED.value:
            raise RecordLockedError(f"The reading of arm '{arm}' is signed and closed.")
        reading.status = ReadingSessionStatus.PAUSED.value
        audit.append(
            session,
            actor=user.username,
            action="study.session.pause",
            record_type="reading_session",
            record_id=f"{study.study_id}@{study.version}/{user.username}/{arm}",
            new={"status": reading.status},
        )
        return _progress(session, ref, user.username, arm, reading)


def next_case(wb: Workbench, actor: Actor, ref: str, arm: str) -> ReadingCase | None:
    """The next case the actor has not rated in this arm, or ``None`` when all are rated.

    The reader sees the images and, in an aided arm, the model's score and mask;
    never the reference standard nor another reader's ratings.
    """
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, "study.read")
        study = _lookup(session, ref)
        design = _design(study)
        reading = _reading(session, study.id, user.username, arm)
        if reading is None:
            raise WorkflowError(f"Open the reading of arm '{arm}' first (open_reading).")
        if reading.status != ReadingSessionStatus.OPEN.value:
            raise WorkflowError(f"The reading of arm '{arm}' is {reading.status}.")
        rated = _latest_ratings(session, reading)
        order = list(reading.case_order)
        pending = [c for c in order if c not in rated]
        if not pending:
            return None
        case_id = pending[0]
        case = next(c for c in _cases(session, design) if c.case_id == case_id)
        outputs = _model_outputs(session, design, arm)
        output = outputs.get(case_id)
        return ReadingCase(
            study=ref,
            arm=arm,
            case_id=case_id,
            position=order.index(case_id) + 1,
            n_cases=len(order),
            image_paths=case.image_paths,
            model_score=None if output is None else output.score,
            model_mask=None if output is None else output.mask_path,
            shown_at=utcnow(),
        )


def _open_reading(
    session: Session, actor: Actor, ref: str, arm: str, what: str
) -> tuple[User, ReaderStudy, ReaderStudyDesign, ReadingSession]:
    """The actor, study, design and open reading of ``arm`` that ``what`` are saved to."""
    user = current_user(session, actor, "study.read")
    study = _lookup(session, ref)
    design = _design(study)
    reading = _reading(session, study.id, user.username, arm)
    if reading is None:
        raise WorkflowError(f"Open the reading of arm '{arm}' first (open_reading).")
    if reading.status == ReadingSessionStatus.SIGNED.value:
        raise RecordLockedError(
            f"The reading of arm '{arm}' is signed; its {what} can no longer change."
        )
    if reading.status != ReadingSessionStatus.OPEN.value:
        raise WorkflowError(f"The reading of arm '{arm}' is {reading.status}; resume it first.")
    return user, study, design, reading


def _progress(
    session: Session, ref: str, reader: str, arm: str, reading: ReadingSession
) -> ReadingProgress:
    return ReadingProgress(
        study=ref,
        reader=reader,
        arm=arm,
        status=reading.status,
        n_cases=len(reading.case_order),
        n_rated=len(_latest_ratings(session, reading)),
    )


def rate_case(
    wb: Workbench,
    actor: Actor,
    ref: str,
    arm: str,
    case_id: str,
    rating: float,
    *,
    shown_at: datetime | None = None,
) -> ReadingProgress:
    """Record the actor's rating of a case: a new row; the newest counts until the arm is signed."""
    return rate_cases(wb, actor, ref, arm, {case_id: rating}, shown_at={case_id: shown_at})


def rate_cases(
    wb: Workbench,
    actor: Actor,
    ref: str,
    arm: str,
    ratings: Mapping[str, float],
    *,
    shown_at: Mapping[str, datetime | None] | None = None,
) -> ReadingProgress:
    """Record several of the actor's ratings in one transaction, each a row with its audit entry.

    Parameters
    ----------
    ratings : mapping of str to float
        ``case_id`` to rating on the design's scale.
    shown_at : mapping of str to datetime, optional
        When each case was shown (the reading time is rating time minus this).

    Raises
    ------
    RecordLockedError
        The arm is signed.
    WorkflowError
        The reading is not open.
    NotFoundError
        A case is not in this reading.
    ProtocolError
        A rating is off the design's scale.
    """
    with wb.transaction() as session:
        user, study, design, reading = _open_reading(session, actor, ref, arm, "ratings")
        if design.reads_marks:
            raise WorkflowError(
                f"Readers of {ref} mark lesions; save each case's marks with mark_case."
            )
        shown = shown_at or {}
        for case_id, rating in ratings.items():
            if case_id not in reading.case_order:
                raise NotFoundError(f"Case '{case_id}' is not in this reading.")
            value = design.rating_scale.check(float(rating))
            now = utcnow()
            start = shown.get(case_id)
            record = ReaderRating(
                session_id=reading.id,
                case_id=case_id,
                rating=value,
                shown_at=start,
                rated_at=now,
                seconds=None if start is None else max(0.0, (now - start).total_seconds()),
            )
            session.add(record)
            session.flush()
            digest = hashlib.sha256(
                json.dumps(
                    [record.id, reading.id, case_id, value, now.isoformat()], separators=(",", ":")
                ).encode()
            ).hexdigest()
            audit.append(
                session,
                actor=user.username,
                action="study.rate",
                record_type="reader_rating",
                record_id=f"{study.study_id}@{study.version}/{user.username}/{arm}/{case_id}",
                new={"rating_sha256": digest, "seconds": record.seconds},
            )
        return _progress(session, ref, user.username, arm, reading)


def _image_rows(session: Session, design: ReaderStudyDesign) -> tuple[Path, pd.DataFrame]:
    """The locked test set's folder and the DICOM index rows of its images."""
    ts: TestSet = get_one(session, TestSet, "test set", name=design.test_set.name)
    frozen_manifest(ts)
    files = load_index(session, ts).files
    modality = files["modality"].fillna("").astype(str)
    return Path(ts.root_path), files[~modality.isin(_NON_IMAGE)]


def _mark_position(
    mark: Mark, number: int, case_id: str, series_uid: str, images: pd.DataFrame, root: Path
) -> dict[str, Any]:
    """A mark's record: its position (and box) in patient coordinates, from the image geometry."""
    from workbench.dicom.lesions import ImageGeometry, frame_geometry

    where = f"Mark {number} of case '{case_id}'"
    record: dict[str, Any] = dict.fromkeys(
        ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max", "sop_instance_uid", "frame")
    )
    record |= {"column": None, "row": None}
    if mark.sop_instance_uid is None:
        point = [mark.x, mark.y, mark.z]
        if any(v is None or not np.isfinite(float(v)) for v in point) or mark.box is not None:
            raise ProtocolError(
                f"{where}: expected an image position (sop_instance_uid, column, row) or a "
                f"patient position x, y, z in mm (without a pixel box); found {mark}."
            )
        record |= {"x": float(point[0]), "y": float(point[1]), "z": float(point[2])}  # type: ignore[arg-type]
        return record
    rows = images[
        (images["sop_instance_uid"].astype(str) == mark.sop_instance_uid)
        & (images["series_instance_uid"].astype(str) == series_uid)
    ]
    if rows.empty:
        raise ProtocolError(
            f"{where}: SOP Instance {mark.sop_instance_uid} is not an image of this case."
        )
    image = rows.iloc[0].to_dict()
    geometry = ImageGeometry.from_index_row(image)
    if not 1 <= mark.frame <= geometry.frames:
        raise ProtocolError(
            f"{where}: expected a frame in 1..{geometry.frames}; found {mark.frame}."
        )
    geometry = frame_geometry(geometry, image, mark.frame, root)
    if mark.column is None or mark.row is None:
        raise ProtocolError(f"{where}: an image position needs column and row (pixels).")
    column, row = float(mark.column), float(mark.row)
    if not (0 <= column < geometry.columns and 0 <= row < geometry.rows):
        raise ProtocolError(
            f"{where}: pixel (column {column:g}, row {row:g}) lies outside the image of "
            f"{geometry.columns} x {geometry.rows} pixels."
        )
    centre = geometry.pixel_to_patient(np.array(column), np.array(row))
    record |= {
        "x": float(centre[0]),
        "y": float(centre[1]),
        "z": float(centre[2]),
        "sop_instance_uid": mark.sop_instance_uid,
        "frame": int(mark.frame),
        "column": column,
        "row": row,
    }
    if mark.box is not None:
        col_min, row_min, col_max, row_max = (float(v) for v in mark.box)
        inside = 0 <= col_min <= column <= col_max < geometry.columns and (
            0 <= row_min <= row <= row_max < geometry.rows
        )
        if not inside:
            raise ProtocolError(
                f"{where}: the box (columns {col_min:g}-{col_max:g}, rows {row_min:g}-"
                f"{row_max:g}) must hold the mark and lie inside the image of "
                f"{geometry.columns} x {geometry.rows} pixels."
            )
        corners = geometry.pixel_to_patient(
            np.array([col_min, col_max, col_min, col_max]),
            np.array([row_min, row_min, row_max, row_max]),
        )
        # a box drawn on one image spans that image's slice thickness
        normal = np.cross(geometry.row_direction, geometry.column_direction)
        try:
            thickness = float(image.get("slice_thickness") or 0.0)
        except (TypeError, ValueError):
            thickness = 0.0
        thickness = thickness if np.isfinite(thickness) else 0.0
        spread = np.vstack([corners + normal * thickness / 2.0, corners - normal * thickness / 2.0])
        low, high = spread.min(axis=0), spread.max(axis=0)
        record |= {
            "x_min": float(low[0]),
            "y_min": float(low[1]),
            "z_min": float(low[2]),
            "x_max": float(high[0]),
            "y_max": float(high[1]),
            "z_max": float(high[2]),
        }
    return record


def mark_case(
    wb: Workbench,
    actor: Actor,
    ref: str,
    arm: str,
    case_id: str,
    marks: Sequence[Mark],
    *,
    shown_at: datetime | None = None,
) -> ReadingProgress:
    """Save the actor's lesion marks of one case of a detection study (none: read, no mark).

    Adds one rating row (the highest confidence, 0 without a mark) and one append-only
    row per mark; saving the case again adds new rows and the newest counts until the
    arm is signed. The audit entry holds the SHA-256 of the saved marks, never them.

    Parameters
    ----------
    marks : sequence of Mark
        The case's marks; empty when the reader saw no lesion.
    shown_at : datetime, optional
        When the case was shown (the reading time is saving time minus this).

    Raises
    ------
    RecordLockedError
        The arm is signed.
    WorkflowError
        The reading is not open, or the study's readers rate cases instead.
    NotFoundError
        The case is not in this reading.
    ProtocolError
        A confidence is off the design's scale, or a position is not on an image of the
        case (the message names the mark).
    """
    with wb.transaction() as session:
        user, study, design, reading = _open_reading(session, actor, ref, arm, "marks")
        if not design.reads_marks:
            raise WorkflowError(f"Readers of {ref} rate cases; save ratings with rate_case.")
        if case_id not in reading.case_order:
            raise NotFoundError(f"Case '{case_id}' is not in this reading.")
        case = next(c for c in _cases(session, design) if c.case_id == case_id)
        root, images = _image_rows(session, design)
        records = []
        for number, mark in enumerate(marks, start=1):
            confidence = design.rating_scale.check_mark(float(mark.confidence))
            record = _mark_position(mark, number, case_id, case.series_uid, images, root)
            records.append(record | {"mark_number": number, "confidence": confidence})
        now = utcnow()
        rating = ReaderRating(
            session_id=reading.id,
            case_id=case_id,
            rating=max((r["confidence"] for r in records), default=0.0),
            shown_at=shown_at,
            rated_at=now,
            seconds=None if shown_at is None else max(0.0, (now - shown_at).total_seconds()),
        )
        session.add(rating)
        session.flush()
        for record in records:
            session.add(ReaderMark(rating_id=rating.id, **record))
        session.flush()
        digest = hashlib.sha256(
            json.dumps(
                [rating.id, reading.id, case_id, now.isoformat(), records],
                separators=(",", ":"),
                sort_keys=True,
            ).encode()
        ).hexdigest()
        audit.append(
            session,
            actor=user.username,
            action="study.mark",
            record_type="reader_rating",
            record_id=f"{study.study_id}@{study.version}/{user.username}/{arm}/{case_id}",
            new={"marks_sha256": digest, "seconds": rating.seconds},
        )
        return _progress(session, ref, user.username, arm, reading)


def _marks_of(session: Session, ratings: Sequence[ReaderRating]) -> dict[int, list[ReaderMark]]:
    """The marks saved with each rating row, in the order they were placed."""
    out: dict[int, list[ReaderMark]] = {r.id: [] for r in ratings}
    if not out:
        return out
    for mark in session.scalars(
        select(ReaderMark)
        .where(ReaderMark.rating_id.in_(list(out)))
        .order_by(ReaderMark.rating_id, ReaderMark.mark_number)
    ):
        out[mark.rating_id].append(mark)
    return out


_MARK_FIELDS = (
    "confidence",
    "x",
    "y",
    "z",
    "x_min",
    "y_min",
    "z_min",
    "x_max",
    "y_max",
    "z_max",
    "sop_instance_uid",
    "frame",
    "column",
    "row",
)


def reading_order(wb: Workbench, actor: Actor, ref: str, arm: str) -> tuple[str, ...]:
    """The case order of the actor's own reading of an arm (open it first)."""
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor, "study.read")
        study = _lookup(session, ref)
        reading = _reading(session, study.id, user.username, arm)
        if reading is None:
            raise WorkflowError(f"Open the reading of arm '{arm}' first (open_reading).")
        return tuple(str(c) for c in reading.case_order)


def sign_arm(wb: Workbench, actor: Actor, ref: str, arm: str, *, password: str) -> ReadingProgress:
    """Close the actor's reading of an arm with an e-signature of meaning ``read``."""
    with wb.transaction() as session:
        user = current_user(session, actor, "study.read")
        study = _lookup(session, ref)
        reading = _session_for(session, study, _design(study), user, arm)
        if reading.status == ReadingSessionStatus.SIGNED.value:
            raise RecordLockedError(f"The reading of arm '{arm}' is already signed.")
        latest = _latest_ratings(session, reading)
        missing = [c for c in reading.case_order if c not in latest]
        if missing:
            raise WorkflowError(
                f"{len(missing)} case(s) of arm '{arm}' are not rated yet (first: {missing[0]})."
            )
        signed: list[list[Any]] = [[c, latest[c].rating] for c in reading.case_order]
        if _design(study).reads_marks:
            saved = _marks_of(session, list(latest.values()))
            for item in signed:
                item.append(
                    [[getattr(m, f) for f in _MARK_FIELDS] for m in saved[latest[str(item[0])].id]]
                )
        content = hashlib.sha256(json.dumps(signed, separators=(",", ":")).encode()).hexdigest()
        signature = signatures.sign(
            session,
            username=user.username,
            password=password,
            meaning=SignatureMeaning.READ,
            record_type="reading_session",
            record_id=f"{study.study_id}@{study.version}/{user.username}/{arm}",
            content_sha256=content,
        )
        reading.status = ReadingSessionStatus.SIGNED.value
        reading.signed_at = signature.signed_at
        reading.signature_id = signature.id
        audit.append(
            session,
            actor=user.username,
            action="study.session.sign",
            record_type="reading_session",
            record_id=f"{study.study_id}@{study.version}/{user.username}/{arm}",
            new={"ratings_sha256": content, "signature_id": signature.id},
        )
        return ReadingProgress(
            study=ref,
            reader=user.username,
            arm=arm,
            status=reading.status,
            n_cases=len(reading.case_order),
            n_rated=len(latest),
        )


def reading_progress(wb: Workbench, actor: Actor, ref: str) -> list[ReadingProgress]:
    """Progress of every reader and arm (``study.view``), or the actor's own (``study.read``)."""
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor)
        study = _lookup(session, ref)
        design = _design(study)
        from workbench.records.permissions import allowed

        sees_all = allowed(user.role, "study.view")
        if not sees_all:
            current_user(session, actor, "study.read")
        out = []
        for reader in design.readers:
            if not sees_all and reader != user.username:
                continue
            for arm in _arm_order(design, reader):
                reading = _reading(session, study.id, reader, arm)
                out.append(
                    ReadingProgress(
                        study=ref,
                        reader=reader,
                        arm=arm,
                        status="not started" if reading is None else reading.status,
                        n_cases=0 if reading is None else len(reading.case_order),
                        n_rated=0 if reading is None else len(_latest_ratings(session, reading)),
                    )
                )
        return out


def _reference_lesions(
    session: Session, design: ReaderStudyDesign, cases: Sequence[_Case]
) -> pd.DataFrame:
    """The reference lesions of a detection study's cases (LPS mm), from the locked test set.

    Raises
    ------
    WorkflowError
        The lesion table is not part of the lock or lacks a named column, or a case
        lacks a reader's reference SEG.
    IntegrityError
        The lesion table changed since the lock.
    GeometryError
        A row (or SR content item) names an unknown UID or lies outside its image.
    """
    from workbench.dicom.lesions import (
        LESION_COLUMNS,
        lesions_from_mask,
        lesions_from_sr,
        lesions_from_table,
    )
    from workbench.dicom.reference import combine_reader_masks, read_structure_mask
    from workbench.dicom.volume import load_series
    from workbench.protocols.schema import DetectionSource

    assert design.detection is not None
    det = design.detection.reference
    ts: TestSet = get_one(session, TestSet, "test set", name=design.test_set.name)
    manifest = frozen_manifest(ts)
    root = Path(ts.root_path)
    files = load_index(session, ts).files
    modality = files["modality"].fillna("").astype(str)
    images = files[~modality.isin(_NON_IMAGE)]
    frames = []
    if det.source is DetectionSource.SEG_COMPONENTS:
        segs = files[modality == "SEG"]
        for case in cases:
            found = {
                Path(str(rel)).stem.lower(): root / str(rel)
                for rel in segs.loc[
                    segs["referenced_series_uid"].astype(str) == case.series_uid, "path"
                ]
            }
            missing = [r for r in det.readers if r.lower() not in found]
            if missing:
                raise WorkflowError(
                    f"Case '{case.case_id}' lacks the reference SEG of reader(s) {missing}; "
                    f"found {sorted(found)}."
                )
            volume = load_series(case.image_paths)
            masks = [
                read_structure_mask(found[r.lower()], volume, "seg", None) for r in det.readers
            ]
            mask = combine_reader_masks(masks, list(det.readers), str(det.rule))
            lesions = lesions_from_mask(mask, volume.affine, min_voxels=det.min_voxels)
            frames.append(lesions.assign(case_id=case.case_id))
    else:
        if det.source is DetectionSource.TABLE:
            rel = det.table_path
            expected = manifest.entries.get(rel)
            if expected is None:
                raise WorkflowError(
                    f"detection.reference.table: {rel} is not a file of the locked test set "
                    f"'{ts.name}'; add it to the test-set folder before locking."
                )
            data = (root / rel).read_bytes() if (root / rel).is_file() else b""
            if hashlib.sha256(data).hexdigest() != expected:
                raise IntegrityError(
                    f"{rel} in {root} no longer matches its locked SHA-256 ({expected[:12]}...)."
                )
            table = pd.read_csv(io.BytesIO(data))
            renames = {csv: ours for ours, csv in det.columns.items()}
            if det.weight_column:
                renames[det.weight_column] = "lesion_weight"
            absent = [c for c in renames if c not in table.columns]
            if absent:
                raise WorkflowError(
                    f"detection.reference: {rel} lacks column(s) {absent}; found "
                    f"{list(table.columns)}."
                )
            lesions = lesions_from_table(
                table.rename(columns=renames),
                images,
                default_diameter_mm=det.default_diameter_mm,
                root=root,
            )
        else:
            paths = [root / str(rel) for rel in files.loc[modality == "SR", "path"]]
            lesions = lesions_from_sr(
                paths, images, default_diameter_mm=det.default_diameter_mm, root=root
            )
        by_series = {c.series_uid: c.case_id for c in cases}
        series = lesions["series_instance_uid"].astype(str)
        frames.append(
            lesions[series.isin(by_series)].assign(
                case_id=series[series.isin(by_series)].map(by_series)
            )
        )
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    keep = ["case_id", *LESION_COLUMNS]
    out = out.reindex(columns=keep)
    out["case_id"] = out["case_id"].astype(str)
    out["lesion_id"] = out["lesion_id"].astype(str)
    return out.reset_index(drop=True)


def _checked_lesions(
    session: Session, design: ReaderStudyDesign, cases: Sequence[_Case]
) -> pd.DataFrame:
    """The reference lesions, once the labels column agrees with them on every case."""
    lesions = _reference_lesions(session, design, cases)
    with_lesions = set(lesions["case_id"])
    disagree = sorted(c.case_id for c in cases if bool(c.truth) != (c.case_id in with_lesions))
    if disagree:
        raise ProtocolError(
            f"truth.labels_column '{design.truth.labels_column}' must be 1 exactly for the cases "
            f"with reference lesions; it disagrees for {disagree[:10]}."
        )
    return lesions


def _study_analysis(
    session: Session, study: ReaderStudy, design: ReaderStudyDesign
) -> StudyAnalysis:
    """The design's analysis of every signed reading (ratings, or marks of a detection study).

    Raises
    ------
    WorkflowError
        A reader has not signed an arm yet.
    ProtocolError
        A detection study's labels column disagrees with its reference lesions.
    """
    ref = f"{study.study_id}@{study.version}"
    cases = _cases(session, design)
    rows: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    for reader in design.readers:
        for arm in (a.id for a in design.arms):
            reading = _reading(session, study.id, reader, arm)
            if reading is None or reading.status != ReadingSessionStatus.SIGNED.value:
                raise WorkflowError(
                    f"{reader} has not signed arm '{arm}' of {ref} yet; the study is analysed "
                    "once every reading is signed."
                )
            latest = _latest_ratings(session, reading)
            for case_id, rating in latest.items():
                rows.append(
                    {
                        "reader": reader,
                        "arm": arm,
                        "case_id": case_id,
                        "rating": rating.rating,
                        "seconds": rating.seconds,
                    }
                )
            if design.reads_marks:
                saved = _marks_of(session, list(latest.values()))
                for case_id, rating in latest.items():
                    for m in saved[rating.id]:
                        marks.append(
                            {
                                "reader": reader,
                                "arm": arm,
                                "case_id": case_id,
                                "mark_id": str(m.mark_number),
                                "score": m.confidence,
                                **{f: getattr(m, f) for f in _MARK_FIELDS[1:10]},
                            }
                        )
    if not design.reads_marks:
        truth = pd.Series({c.case_id: c.truth for c in cases})
        return analyze_ratings(design, pd.DataFrame(rows), truth)
    lesions = _checked_lesions(session, design, cases)
    columns = ["reader", "arm", "case_id", "mark_id", "score", *_MARK_FIELDS[1:10]]
    return analyze_marks(design, pd.DataFrame(rows), pd.DataFrame(marks, columns=columns), lesions)


def analyze_study(wb: Workbench, actor: Actor, ref: str) -> StudyAnalysis:
    """Run the design's analysis once every reading is signed (``study.view``).

    A rating study: Obuchowski-Rockette on the case ratings' AUCs. A detection study:
    each reader's marks matched to the reference lesions by the design's rule, and
    Obuchowski-Rockette on the wAFROC figures of merit (:func:`workbench.studies.analyze_marks`).

    Raises
    ------
    WorkflowError
        A reader has not signed an arm yet.
    ProtocolError
        A detection study's labels column disagrees with its reference lesions.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "study.view")
        study = _lookup(session, ref)
        design = _design(study)
        result = _study_analysis(session, study, design)
        audit.append(
            session,
            actor=user.username,
            action="study.analyze",
            record_type="reader_study",
            record_id=ref,
            new={
                "verdict": result.verdict.value,
                "difference": result.difference.value,
                "ci": [result.difference.ci_low, result.difference.ci_high],
                "p_value": result.p_value,
            },
        )
        return result


def list_studies(wb: Workbench, actor: Actor) -> list[StudyInfo]:
    """Every reader-study design (``study.view``), or those the actor reads (``study.read``)."""
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor)
        from workbench.records.permissions import allowed

        if allowed(user.role, "study.view"):
            current_user(session, actor, "study.view")
            wanted = None
        else:
            current_user(session, actor, "study.read")
            wanted = user.username
        out = []
        for study in session.scalars(
            select(ReaderStudy).order_by(ReaderStudy.study_id, ReaderStudy.version)
        ):
            if wanted is not None and (
                study.status != ReaderStudyStatus.APPROVED.value
                or wanted not in _design(study).readers
            ):
                continue
            out.append(_info(study))
        return out


def study_design(wb: Workbench, actor: Actor, ref: str) -> ReaderStudyDesign:
    """The validated design of a stored study (its readers and QA/auditors)."""
    with wb.transaction(readonly=True) as session:
        user = current_user(session, actor)
        from workbench.records.permissions import allowed

        if not allowed(user.role, "study.view"):
            current_user(session, actor, "study.read")
        design = _design(_lookup(session, ref))
        if not allowed(user.role, "study.view") and user.username not in design.readers:
            raise PermissionDeniedError(f"{user.username} is not a reader of {ref}.")
        return design


def arm_order(design: ReaderStudyDesign, reader: str) -> list[str]:
    """The order in which ``reader`` reads the arms (drawn from the design's seed)."""
    return _arm_order(design, reader)
