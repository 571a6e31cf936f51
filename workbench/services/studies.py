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

Every step writes an audit entry. Ratings enter the audit trail as the SHA-256
of the rating record, never the value, so no reader can learn another's
ratings from the trail.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.errors import (
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RecordLockedError,
    WorkflowError,
)
from workbench.records import audit, signatures
from workbench.records.models import (
    CaseResult,
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
    analyze_ratings,
    load_study_design,
)

__all__ = [
    "ReadingCase",
    "ReadingProgress",
    "StudyInfo",
    "add_study",
    "analyze_study",
    "approve_study",
    "arm_order",
    "list_studies",
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
    images = files[~files["modality"].fillna("").isin(["SEG", "RTSTRUCT", "SR", "KO", "PR"])]
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
        _cases(session, design)
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
        return ReadingProgress(
            study=ref,
            reader=user.username,
            arm=arm,
            status=reading.status,
            n_cases=len(reading.case_order),
            n_rated=len(_latest_ratings(session, reading)),
        )


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
        return ReadingProgress(
            study=ref,
            reader=user.username,
            arm=arm,
            status=reading.status,
            n_cases=len(reading.case_order),
            n_rated=len(_latest_ratings(session, reading)),
        )


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
        user = current_user(session, actor, "study.read")
        study = _lookup(session, ref)
        design = _design(study)
        reading = _reading(session, study.id, user.username, arm)
        if reading is None:
            raise WorkflowError(f"Open the reading of arm '{arm}' first (open_reading).")
        if reading.status == ReadingSessionStatus.SIGNED.value:
            raise RecordLockedError(
                f"The reading of arm '{arm}' is signed; its ratings can no longer change."
            )
        if reading.status != ReadingSessionStatus.OPEN.value:
            raise WorkflowError(f"The reading of arm '{arm}' is {reading.status}; resume it first.")
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
        return ReadingProgress(
            study=ref,
            reader=user.username,
            arm=arm,
            status=reading.status,
            n_cases=len(reading.case_order),
            n_rated=len(_latest_ratings(session, reading)),
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
        content = hashlib.sha256(
            json.dumps(
                [[c, latest[c].rating] for c in reading.case_order], separators=(",", ":")
            ).encode()
        ).hexdigest()
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


def analyze_study(wb: Workbench, actor: Actor, ref: str) -> StudyAnalysis:
    """Run the design's analysis once every reading is signed (``study.view``).

    Raises
    ------
    WorkflowError
        A reader has not signed an arm yet.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, "study.view")
        study = _lookup(session, ref)
        design = _design(study)
        cases = _cases(session, design)
        rows = []
        for reader in design.readers:
            for arm in (a.id for a in design.arms):
                reading = _reading(session, study.id, reader, arm)
                if reading is None or reading.status != ReadingSessionStatus.SIGNED.value:
                    raise WorkflowError(
                        f"{reader} has not signed arm '{arm}' yet; the study is analysed once "
                        "every reading is signed."
                    )
                for case_id, rating in _latest_ratings(session, reading).items():
                    rows.append(
                        {
                            "reader": reader,
                            "arm": arm,
                            "case_id": case_id,
                            "rating": rating.rating,
                            "seconds": rating.seconds,
                        }
                    )
        truth = pd.Series({c.case_id: c.truth for c in cases})
        result = analyze_ratings(design, pd.DataFrame(rows), truth)
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
