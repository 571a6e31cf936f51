"""Runs may end NOT EVALUABLE: widen ``runs.verdict`` and allow ``not_evaluable``.

A run whose primary endpoint cannot be estimated used to be stored as ``fail``
without its reason. The protocol now states how a not-evaluable endpoint counts
(``not_evaluable_counts_as``); when it counts as itself, the run's verdict is
``not_evaluable`` and the reason is kept in the stored results.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 16:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "verdict IS NULL OR verdict IN ('pass', 'fail')"
_NEW = "verdict IS NULL OR verdict IN ('pass', 'fail', 'not_evaluable', 'not_assessed')"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_verdict_allowed"), type_="check")
        batch.alter_column("verdict", existing_type=sa.String(length=8), type_=sa.String(length=16))
        batch.create_check_constraint(op.f("ck_runs_verdict_allowed"), _NEW)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_verdict_allowed"), type_="check")
        batch.alter_column("verdict", existing_type=sa.String(length=16), type_=sa.String(length=8))
        batch.create_check_constraint(op.f("ck_runs_verdict_allowed"), _OLD)
