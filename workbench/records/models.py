"""SQLAlchemy 2 models of the records database.

Two groups of tables live here:

* the Part 11 core, which this package owns and fills itself: ``users``,
  ``password_history``, ``user_sessions``, ``audit_log``, ``audit_checkpoints``
  and ``signatures``;
* the domain records (test sets, models, protocols, runs, adjudications,
  reports), which :mod:`workbench.services` fills. This package knows nothing of
  their meaning; it only stores them and offers locking helpers
  (:mod:`workbench.records.locking`).

All timestamps are timezone-aware UTC (:class:`UTCDateTime`); on SQLite, which
has no time zone type, they are stored as naive UTC and made aware again on load.
Enumerated columns are plain strings checked by a ``CHECK`` constraint; the
allowed values are the :class:`enum.StrEnum` classes below, so services may pass
either the enum member or its string value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from workbench.vocabulary import CaseStatus, Verdict

__all__ = [
    "Base",
    "UTCDateTime",
    "utcnow",
    "Role",
    "SignatureMeaning",
    "TestSetStatus",
    "FileKind",
    "ProtocolStatus",
    "RunStatus",
    "Verdict",
    "CaseStatus",
    "DiscrepancyStatus",
    "AdjudicationDecision",
    "AdjudicationKind",
    "ReportStatus",
    "User",
    "PasswordHistory",
    "UserSession",
    "AuditEntry",
    "AuditCheckpoint",
    "Signature",
    "TestSet",
    "TestSetFile",
    "QualityReport",
    "RegisteredModel",
    "ProtocolVersion",
    "Run",
    "CaseResult",
    "Discrepancy",
    "Adjudication",
    "Report",
    "ReaderMark",
]


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime`` that only accepts aware datetimes and always returns UTC.

    Naive datetimes are refused on write, because their time zone is unknown.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive UTC on SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(
                f"Expected a timezone-aware datetime; found the naive datetime {value!r}. "
                "Use datetime.now(UTC)."
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored time as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Role(StrEnum):
    """Roles of user accounts (see :mod:`workbench.records.permissions`)."""

    QA = "qa"
    REVIEWER = "reviewer"
    AUDITOR = "auditor"
    ADMIN = "admin"


class SignatureMeaning(StrEnum):
    """Controlled list of signature meanings (21 CFR 11.50(a)(3))."""

    AUTHORED = "authored"
    REVIEWED = "reviewed"
    APPROVED = "approved"
    RESPONSIBILITY = "responsibility"
    ADJUDICATED = "adjudicated"
    READ = "read"
    """A reader completed the reading of one arm of a reader study."""


class TestSetStatus(StrEnum):
    """Life cycle of a test set."""

    __test__ = False  # not a pytest test class

    DRAFT = "draft"
    LOCKED = "locked"


class FileKind(StrEnum):
    """Kind of a file in a test set."""

    DICOM = "dicom"
    OTHER = "other"
    UNREADABLE = "unreadable"


class ProtocolStatus(StrEnum):
    """Life cycle of a protocol version."""

    DRAFT = "draft"
    APPROVED = "approved"
    SUPERSEDED = "superseded"


class RunStatus(StrEnum):
    """Life cycle of a validation run."""

    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class DiscrepancyStatus(StrEnum):
    """State of a discrepancy in the adjudication queue."""

    OPEN = "open"
    ADJUDICATED = "adjudicated"
    NEEDS_CONSENSUS = "needs_consensus"


class AdjudicationDecision(StrEnum):
    """A reviewer's decision on a blinded pair of outputs."""

    A_CORRECT = "a_correct"
    B_CORRECT = "b_correct"
    BOTH_ACCEPTABLE = "both_acceptable"
    NEITHER = "neither"
    INDETERMINATE = "indeterminate"


class AdjudicationKind(StrEnum):
    """Which read of a discrepancy an adjudication is."""

    PRIMARY = "primary"
    SECONDARY = "secondary"
    CONSENSUS = "consensus"


class ReportStatus(StrEnum):
    """Life cycle of a validation report."""

    DRAFT = "draft"
    SIGNED = "signed"
    SEALED = "sealed"


def _check_in(column: str, enum: type[StrEnum], *, nullable: bool = False) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum)
    condition = f"{column} IN ({values})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=f"{column}_allowed")


_NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every records table."""

    metadata = MetaData(naming_convention=_NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), Any: JSON()}


_USERNAME = String(64)
_SHA256 = String(64)
_RECORD_ID = String(128)


# --------------------------------------------------------------------------- Part 11 core


class User(Base):
    """A user account. Accounts are disabled, never deleted; usernames are never reused."""

    __tablename__ = "users"
    __table_args__ = (_check_in("role", Role),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(_USERNAME, unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    password_changed_at: Mapped[datetime]
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime | None]
    reset_code_sha256: Mapped[str | None] = mapped_column(_SHA256)
    reset_by: Mapped[str | None] = mapped_column(_USERNAME)
    reset_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r}, role={self.role!r})"


class PasswordHistory(Base):
    """Previous password hashes of a user, to refuse reuse of the last N passwords."""

    __tablename__ = "password_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserSession(Base):
    """A login session; only the SHA-256 of its bearer token is stored."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(_SHA256, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))

    user: Mapped[User] = relationship()


class AuditEntry(Base):
    """One entry of the append-only, hash-chained audit trail (21 CFR 11.10(e)).

    The database refuses ``UPDATE`` and ``DELETE`` on this table (triggers
    created by the migrations). ``entry_hash`` is the SHA-256 of the canonical
    JSON of every other field, ``prev_hash`` included; see
    :func:`workbench.records.audit.entry_hash`.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[datetime]
    actor: Mapped[str] = mapped_column(_USERNAME, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    record_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str | None] = mapped_column(_RECORD_ID)
    old_value: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))
    new_value: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(_SHA256)
    entry_hash: Mapped[str] = mapped_column(_SHA256, unique=True)

    __table_args__ = (Index("ix_audit_log_record", "record_type", "record_id"),)


class AuditCheckpoint(Base):
    """A signed statement of the audit chain's head at a moment in time."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    entry_count: Mapped[int]
    head_hash: Mapped[str] = mapped_column(_SHA256)
    public_key: Mapped[str] = mapped_column(String(128))
    signature: Mapped[str] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]]


class Signature(Base):
    """An electronic signature (21 CFR 11.50, 11.70, 11.200).

    ``signature_sha256`` binds the signer, the meaning, the time and the signed
    record (type, id and content SHA-256), so that the signature cannot be
    moved to another record. Rows are never updated or deleted.
    """

    __tablename__ = "signatures"
    __table_args__ = (
        _check_in("meaning", SignatureMeaning),
        Index("ix_signatures_record", "record_type", "record_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    printed_name: Mapped[str] = mapped_column(String(200))
    username: Mapped[str] = mapped_column(_USERNAME)
    role: Mapped[str] = mapped_column(String(16))
    meaning: Mapped[str] = mapped_column(String(32))
    signed_at: Mapped[datetime]
    record_type: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(_RECORD_ID)
    content_sha256: Mapped[str] = mapped_column(_SHA256)
    signature_sha256: Mapped[str] = mapped_column(_SHA256, unique=True)


# --------------------------------------------------------------------------- domain records


class TestSet(Base):
    """A DICOM test set; locked once its manifest is frozen and signed."""

    __test__ = False  # not a pytest test class
    __tablename__ = "test_sets"
    __table_args__ = (_check_in("status", TestSetStatus),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    root_path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=TestSetStatus.DRAFT.value)
    created_by: Mapped[str] = mapped_column(_USERNAME)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    manifest_json: Mapped[str | None] = mapped_column(Text)
    manifest_digest: Mapped[str | None] = mapped_column(_SHA256)
    locked_at: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(_USERNAME)
    lock_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"))
    summary: Mapped[dict[str, Any] | None]

    files: Mapped[list[TestSetFile]] = relationship(
        back_populates="test_set", cascade="all, delete-orphan"
    )


class TestSetFile(Base):
    """One file of a test set with its hash and the DICOM header fields used for strata."""

    __test__ = False
    __tablename__ = "test_set_files"
    __table_args__ = (
        _check_in("kind", FileKind),
        Index("ix_test_set_files_series", "test_set_id", "series_instance_uid"),
        UniqueConstraint("test_set_id", "path"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    test_set_id: Mapped[int] = mapped_column(ForeignKey("test_sets.id"))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(_SHA256)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    modality: Mapped[str | None] = mapped_column(String(16))
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    manufacturer: Mapped[str | None] = mapped_column(String(200))
    manufacturer_model_name: Mapped[str | None] = mapped_column(String(200))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    patient_age: Mapped[str | None] = mapped_column(String(16))
    header: Mapped[dict[str, Any] | None]

    test_set: Mapped[TestSet] = relationship(back_populates="files")


class QualityReport(Base):
    """Result of the data-quality checks on a test set."""

    __tablename__ = "quality_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    test_set_id: Mapped[int] = mapped_column(ForeignKey("test_sets.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(_USERNAME)
    passed: Mapped[bool]
    n_critical: Mapped[int] = mapped_column(default=0)
    n_major: Mapped[int] = mapped_column(default=0)
    n_minor: Mapped[int] = mapped_column(default=0)
    findings: Mapped[Any | None] = mapped_column(JSON)
    suite_version: Mapped[str | None] = mapped_column(String(64))


class RegisteredModel(Base):
    """A registered candidate model: its files' SHA-256s, spec and model card."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any] | None]
    files: Mapped[dict[str, Any] | None]
    digest: Mapped[str] = mapped_column(_SHA256)
    storage_path: Mapped[str] = mapped_column(Text)
    registered_by: Mapped[str] = mapped_column(_USERNAME)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    intended_use: Mapped[str | None] = mapped_column(Text)
    card: Mapped[dict[str, Any] | None]


class ProtocolVersion(Base):
    """One version of a validation protocol (YAML text and its SHA-256)."""

    __tablename__ = "protocol_versions"
    __table_args__ = (
        UniqueConstraint("protocol_id", "version"),
        _check_in("status", ProtocolStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    protocol_id: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    yaml_text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(_SHA256)
    status: Mapped[str] = mapped_column(String(16), default=ProtocolStatus.DRAFT.value)
    created_by: Mapped[str] = mapped_column(_USERNAME)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)
    approved_by: Mapped[str | None] = mapped_column(_USERNAME)
    approved_at: Mapped[datetime | None]
    approval_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"))


class Run(Base):
    """A validation run of one model on one locked test set under one protocol version."""

    __tablename__ = "runs"
    __table_args__ = (
        _check_in("status", RunStatus),
        _check_in("verdict", Verdict, nullable=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_uid: Mapped[str] = mapped_column(String(64), unique=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    test_set_id: Mapped[int] = mapped_column(ForeignKey("test_sets.id"))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.CREATED.value)
    started_by: Mapped[str] = mapped_column(_USERNAME)
    started_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    device: Mapped[str | None] = mapped_column(String(64))
    environment: Mapped[dict[str, Any] | None]
    results: Mapped[dict[str, Any] | None]
    results_sha256: Mapped[str | None] = mapped_column(_SHA256)
    verdict: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)

    case_results: Mapped[list[CaseResult]] = relationship(back_populates="run")
    discrepancies: Mapped[list[Discrepancy]] = relationship(back_populates="run")


class CaseResult(Base):
    """The outcome of one case in a run."""

    __tablename__ = "case_results"
    __table_args__ = (UniqueConstraint("run_id", "case_id"), _check_in("status", CaseStatus))

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    case_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    mask_path: Mapped[str | None] = mapped_column(Text)
    mask_sha256: Mapped[str | None] = mapped_column(_SHA256)
    metrics: Mapped[dict[str, Any] | None]
    strata: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="case_results")


class Discrepancy(Base):
    """A case queued for blinded adjudication."""

    __tablename__ = "discrepancies"
    __table_args__ = (_check_in("status", DiscrepancyStatus),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    case_id: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None]
    blinding: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(String(16), default=DiscrepancyStatus.OPEN.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[Run] = relationship(back_populates="discrepancies")
    adjudications: Mapped[list[Adjudication]] = relationship(back_populates="discrepancy")


class Adjudication(Base):
    """A reviewer's signed decision on a discrepancy."""

    __tablename__ = "adjudications"
    __table_args__ = (
        _check_in("decision", AdjudicationDecision),
        _check_in("kind", AdjudicationKind),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    discrepancy_id: Mapped[int] = mapped_column(ForeignKey("discrepancies.id"), index=True)
    reviewer: Mapped[str] = mapped_column(_USERNAME)
    decision: Mapped[str] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16), default=AdjudicationKind.PRIMARY.value)

    discrepancy: Mapped[Discrepancy] = relationship(back_populates="adjudications")


class Report(Base):
    """A PDF validation report and its signed / sealed forms."""

    __tablename__ = "reports"
    __table_args__ = (_check_in("status", ReportStatus),)

    id: Mapped[int] = mapped_column(primary_key=True)
    report_uid: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=ReportStatus.DRAFT.value)
    pdf_path: Mapped[str | None] = mapped_column(Text)
    pdf_sha256: Mapped[str | None] = mapped_column(_SHA256)
    sealed_path: Mapped[str | None] = mapped_column(Text)
    sealed_sha256: Mapped[str | None] = mapped_column(_SHA256)
    created_by: Mapped[str] = mapped_column(_USERNAME)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    content_sha256: Mapped[str | None] = mapped_column(_SHA256)


class ReaderMark(Base):
    """One lesion mark of a reader-study reader (append-only, like the ratings).

    Saving a case of a detection study adds one rating row (the highest mark
    confidence, 0 for a case read without a mark) and one row here per mark, tied
    to that rating: the marks of a case's newest rating are the reader's marks of
    the case. The position is in patient coordinates (LPS, mm); ``sop_instance_uid``,
    ``frame``, ``column`` and ``row`` keep where on which image it was placed, and
    the optional box is in LPS mm too.
    """

    __tablename__ = "reader_marks"

    id: Mapped[int] = mapped_column(primary_key=True)
    rating_id: Mapped[int] = mapped_column(ForeignKey("reader_ratings.id"), index=True)
    mark_number: Mapped[int]
    confidence: Mapped[float]
    x: Mapped[float]
    y: Mapped[float]
    z: Mapped[float]
    x_min: Mapped[float | None]
    y_min: Mapped[float | None]
    z_min: Mapped[float | None]
    x_max: Mapped[float | None]
    y_max: Mapped[float | None]
    z_max: Mapped[float | None]
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    frame: Mapped[int | None]
    column: Mapped[float | None]
    row: Mapped[float | None]
