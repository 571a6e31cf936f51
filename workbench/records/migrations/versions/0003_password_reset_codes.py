"""Password resets completed by the account owner with a one-time code.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 16:40:00

After an administrator resets a password, only the holder of the one-time
code issued with the reset can set the new password; the users table keeps the
code's SHA-256 (never the code), who reset the account and when.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default) works on SQLite and PostgreSQL alike.
    op.add_column("users", sa.Column("reset_code_sha256", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("reset_by", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("reset_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("reset_at")
        batch_op.drop_column("reset_by")
        batch_op.drop_column("reset_code_sha256")
