"""Lesion marks of detection reader studies: one append-only row per mark.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 00:30:00

Each mark belongs to the rating row that saved its case (the highest mark
confidence, 0 for a case read without a mark), so the marks of a case's newest
rating are the reader's marks. Position in patient coordinates (LPS, mm), an
optional box, and the image (SOP Instance, frame, column, row) it was placed on.
The database refuses UPDATE and DELETE on the table, as for the ratings.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "reader_marks"


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


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rating_id", sa.Integer(), nullable=False),
        sa.Column("mark_number", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.Column("z", sa.Float(), nullable=False),
        sa.Column("x_min", sa.Float(), nullable=True),
        sa.Column("y_min", sa.Float(), nullable=True),
        sa.Column("z_min", sa.Float(), nullable=True),
        sa.Column("x_max", sa.Float(), nullable=True),
        sa.Column("y_max", sa.Float(), nullable=True),
        sa.Column("z_max", sa.Float(), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("frame", sa.Integer(), nullable=True),
        sa.Column("column", sa.Float(), nullable=True),
        sa.Column("row", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rating_id"],
            ["reader_ratings.id"],
            name=op.f("fk_reader_marks_rating_id_reader_ratings"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reader_marks")),
    )
    op.create_index(op.f("ix_reader_marks_rating_id"), _TABLE, ["rating_id"], unique=False)
    _guard(_TABLE)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_delete")
    op.drop_index(op.f("ix_reader_marks_rating_id"), table_name=_TABLE)
    op.drop_table(_TABLE)
