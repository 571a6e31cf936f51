"""PACS servers reached over DIMSE: a protocol and the workbench's calling AE title.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 12:40:00

``protocol`` is ``dicomweb`` (every version recorded before this revision) or
``dimse``; for a DIMSE node ``url`` holds ``AE@HOST:PORT`` and ``calling_ae`` the
AE title the workbench presents. The columns are added with a constant default,
so no existing row is rewritten and the append-only triggers stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "pacs_servers"


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN (valid in SQLite and PostgreSQL): a batch
    # operation would copy the table on SQLite and drop its append-only triggers.
    op.execute(
        f"ALTER TABLE {_TABLE} ADD COLUMN protocol VARCHAR(16) DEFAULT 'dicomweb' NOT NULL "
        "CONSTRAINT ck_pacs_servers_protocol_allowed CHECK (protocol IN ('dicomweb', 'dimse'))"
    )
    op.execute(f"ALTER TABLE {_TABLE} ADD COLUMN calling_ae VARCHAR(16)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        raise NotImplementedError(
            "Dropping columns of the append-only pacs_servers table on SQLite would copy "
            "the table and lose its triggers; restore a backup instead."
        )
    op.drop_column(_TABLE, "calling_ae")
    op.drop_column(_TABLE, "protocol")
