"""Persistence and 21 CFR Part 11 controls of the workbench.

Modules
-------
models
    SQLAlchemy 2 tables (Part 11 core and domain records).
db
    :func:`open_database` (SQLite file by default, PostgreSQL by URL; runs the
    Alembic migrations) and the :class:`Database` session factory.
audit
    Append-only, hash-chained audit trail; verification, signed checkpoints, export.
users
    Accounts, password policy, lockout, login sessions.
signatures
    Electronic signatures bound to record content.
permissions
    Role x action matrix and :func:`permissions.require`.
locking
    :func:`locking.ensure_modifiable` for locked, approved and signed records.
"""

from workbench.records import audit, locking, models, permissions, signatures, studies, users
from workbench.records.audit import ChainStatus, verify_chain
from workbench.records.db import Database, open_database, run_durably
from workbench.records.locking import ensure_modifiable
from workbench.records.permissions import Action, require
from workbench.records.signatures import SignatureVerification

__all__ = [
    "Action",
    "ChainStatus",
    "Database",
    "SignatureVerification",
    "audit",
    "ensure_modifiable",
    "locking",
    "models",
    "studies",
    "open_database",
    "permissions",
    "require",
    "run_durably",
    "signatures",
    "users",
    "verify_chain",
]
