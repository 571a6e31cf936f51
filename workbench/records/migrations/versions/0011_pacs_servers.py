"""PACS servers configured by an administrator: one append-only row per version.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 20:10:00

A server's name, DICOMweb root URL, authentication kind, where its secret lives
(an environment variable's name or a 0600 credentials file's path, never the
secret), TLS verification and CA bundle. A change adds a version; the database
refuses UPDATE and DELETE on the table, as for the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "pacs_servers"


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
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("auth_kind", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=True),
        sa.Column("secret_env", sa.String(length=128), nullable=True),
        sa.Column("credentials_file", sa.Text(), nullable=True),
        sa.Column("verify_tls", sa.Boolean(), nullable=False),
        sa.Column("ca_bundle", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "auth_kind IN ('none', 'basic', 'bearer')",
            name=op.f("ck_pacs_servers_auth_kind_allowed"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'retired')", name=op.f("ck_pacs_servers_status_allowed")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pacs_servers")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_pacs_servers_name_version")),
    )
    _guard(_TABLE)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_delete")
    op.drop_table(_TABLE)
