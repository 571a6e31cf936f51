"""Records of reader studies: designs, reading sessions and ratings.

A design is stored like a protocol version (exact text and SHA-256, approved
with an e-signature, immutable afterwards). Each reader has one reading session
per arm, with the case order drawn from a recorded seed. Ratings are
append-only: changing a rating before the arm is signed adds a new row (the
newest counts), and the database refuses UPDATE and DELETE on the table, so
every value a reader ever gave stays on record.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from workbench.records.models import Base, _check_in, utcnow

__all__ = [
    "ReaderRating",
    "ReaderStudy",
    "ReaderStudyStatus",
    "ReadingSession",
    "ReadingSessionStatus",
]


class ReaderStudyStatus(StrEnum):
    """Life cycle of a reader-study design."""

    DRAFT = "draft"
    APPROVED = "approved"


class ReadingSessionStatus(StrEnum):
    """Life cycle of one reader's reading of one arm."""

    OPEN = "open"
    PAUSED = "paused"
    SIGNED = "signed"


class ReaderStudy(Base):
    """A pre-registered reader-study design (one version)."""

    __tablename__ = "reader_studies"
    __table_args__ = (
        UniqueConstraint("study_id", "version"),
        _check_in("status", ReaderStudyStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    title: Mapped[str] = mapped_column(Text)
    yaml_text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=ReaderStudyStatus.DRAFT.value)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_at: Mapped[datetime | None]
    approval_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"))


class ReadingSession(Base):
    """One reader's reading of one arm: the case order they saw, pauses, the closing signature."""

    __tablename__ = "reading_sessions"
    __table_args__ = (
        UniqueConstraint("study_pk", "reader", "arm"),
        _check_in("status", ReadingSessionStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("reader_studies.id"))
    reader: Mapped[str] = mapped_column(String(64))
    arm: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int]
    case_order: Mapped[list[Any]] = mapped_column(JSON())
    status: Mapped[str] = mapped_column(String(16), default=ReadingSessionStatus.OPEN.value)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    signed_at: Mapped[datetime | None]
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id"))


class ReaderRating(Base):
    """One rating of one case in a reading session (append-only)."""

    __tablename__ = "reader_ratings"
    __table_args__ = (Index("ix_reader_ratings_session_case", "session_id", "case_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("reading_sessions.id"))
    case_id: Mapped[str] = mapped_column(String(128))
    rating: Mapped[float]
    shown_at: Mapped[datetime | None]
    rated_at: Mapped[datetime] = mapped_column(default=utcnow)
    seconds: Mapped[float | None]
