"""Reader studies: designs, reading sessions, append-only ratings; the signature meaning 'read'.

Revision ID: 0010
Revises: 0003
Create Date: 2026-12-02 17:10:00

A reader signs the completion of each arm with the meaning ``read`` ("reader
study read"): the signatures table's controlled list of meanings gains it. On
SQLite the table is rebuilt for the new CHECK constraint, and its append-only
triggers are created again with the same names.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MEANINGS_OLD = "meaning IN ('authored', 'reviewed', 'approved', 'responsibility', 'adjudicated')"
_MEANINGS_NEW = (
    "meaning IN ('authored', 'reviewed', 'approved', 'responsibility', 'adjudicated', 'read')"
)
_APPEND_ONLY = ("signatures", "reader_ratings")


def _guard(table: str) -> None:
    """The database refuses UPDATE and DELETE on ``table`` (as for the audit log)."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation.lower()}")
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
            )
    elif dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION workbench_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION workbench_refuse_change()"
        )


def _meanings(condition: str) -> None:
    with op.batch_alter_table("signatures") as batch:
        batch.drop_constraint(op.f("ck_signatures_meaning_allowed"), type_="check")
        batch.create_check_constraint(op.f("ck_signatures_meaning_allowed"), condition)
    _guard("signatures")


def upgrade() -> None:
    _meanings(_MEANINGS_NEW)
    op.create_table(
        "reader_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("yaml_text", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approval_signature_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('draft', 'approved')", name=op.f("ck_reader_studies_status_allowed")
        ),
        sa.ForeignKeyConstraint(
            ["approval_signature_id"],
            ["signatures.id"],
            name=op.f("fk_reader_studies_approval_signature_id_signatures"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_studies")),
        sa.UniqueConstraint("study_id", "version", name=op.f("uq_reader_studies_study_id")),
    )
    op.create_table(
        "reading_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("reader", sa.String(length=64), nullable=False),
        sa.Column("arm", sa.String(length=32), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("case_order", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signature_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'paused', 'signed')",
            name=op.f("ck_reading_sessions_status_allowed"),
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["reader_studies.id"],
            name=op.f("fk_reading_sessions_study_pk_reader_studies"),
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signatures.id"],
            name=op.f("fk_reading_sessions_signature_id_signatures"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reading_sessions")),
        sa.UniqueConstraint("study_pk", "reader", "arm", name=op.f("uq_reading_sessions_study_pk")),
    )
    op.create_table(
        "reader_ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.String(length=128), nullable=False),
        sa.Column("rating", sa.Float(), nullable=False),
        sa.Column("shown_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["reading_sessions.id"],
            name=op.f("fk_reader_ratings_session_id_reading_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_ratings")),
    )
    op.create_index(
        "ix_reader_ratings_session_case", "reader_ratings", ["session_id", "case_id"], unique=False
    )
    _guard("reader_ratings")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS reader_ratings_no_update")
        op.execute("DROP TRIGGER IF EXISTS reader_ratings_no_delete")
    op.drop_index("ix_reader_ratings_session_case", table_name="reader_ratings")
    op.drop_table("reader_ratings")
    op.drop_table("reading_sessions")
    op.drop_table("reader_studies")
    _meanings(_MEANINGS_OLD)
