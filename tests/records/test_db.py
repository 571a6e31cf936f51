"""open_database, sessions, migrations and the append-only guards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError, StatementError

from workbench.errors import ConfigurationError
from workbench.records import audit
from workbench.records.db import open_database
from workbench.records.models import AuditEntry, TestSet


def test_schema_created_and_at_head(db):
    tables = set(inspect(db.engine).get_table_names())
    assert {"users", "audit_log", "signatures", "test_sets", "runs", "reports"} <= tables
    from alembic.script import ScriptDirectory

    from workbench.records.db import alembic_config

    [head] = ScriptDirectory.from_config(alembic_config()).get_heads()  # one line of history
    assert int(head) >= 3  # 0003 keeps password-reset codes
    with db.session() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    columns = {c["name"] for c in inspect(db.engine).get_columns("users")}
    assert {"reset_code_sha256", "reset_by", "reset_at"} <= columns


def test_reopen_is_idempotent(db_url):
    open_database(db_url).dispose()
    again = open_database(db_url)
    with again.session() as s:
        assert s.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    again.dispose()


def test_sqlite_pragmas(sqlite_db):
    with sqlite_db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    assert sqlite_db.dialect == "sqlite"


def test_in_memory_sqlite():
    db = open_database("sqlite://")
    with db.session() as s:
        audit.append(s, actor="system", action="test.create", record_type="t", record_id=1)
    with db.session() as s:
        assert audit.verify_chain(s).count == 1


def test_unsupported_url():
    with pytest.raises(ConfigurationError, match="sqlite or postgresql"):
        open_database("mysql://x@localhost/db", migrate=False)
    with pytest.raises(ConfigurationError, match="Expected a SQLAlchemy database URL"):
        open_database("not a url", migrate=False)


def test_session_commits_and_rolls_back(db):
    with db.session() as s:
        s.add(TestSet(name="a", root_path="/x", created_by="qa1"))
    with pytest.raises(RuntimeError):
        with db.session() as s:
            s.add(TestSet(name="b", root_path="/y", created_by="qa1"))
            s.flush()
            raise RuntimeError("boom")
    with db.session(readonly=True) as s:
        assert s.scalars(select(TestSet.name)).all() == ["a"]


def test_timestamps_are_utc_aware(db):
    cest = timezone(timedelta(hours=2))
    when = datetime(2026, 5, 1, 14, 0, 0, 123456, tzinfo=cest)
    with db.session() as s:
        s.add(TestSet(name="t", root_path="/x", created_by="qa1", created_at=when))
    with db.session() as s:
        loaded = s.scalars(select(TestSet)).one().created_at
    assert loaded.tzinfo is not None and loaded.utcoffset() == timedelta(0)
    assert loaded == when and loaded.hour == 12 and loaded.microsecond == 123456


def test_naive_datetime_refused(db):
    with pytest.raises(StatementError, match="timezone-aware"):
        with db.session() as s:
            s.add(
                TestSet(name="t", root_path="/x", created_by="q", created_at=datetime(2026, 1, 1))
            )
            s.flush()


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"]
)
def test_database_refuses_changes_to_audit_log(db, statement):
    with db.session() as s:
        audit.append(s, actor="system", action="test.create", record_type="t", record_id=1)
    with pytest.raises(DBAPIError, match="append-only"):
        with db.session() as s:
            s.execute(text(statement))
    with db.session() as s:
        entry = s.scalars(select(AuditEntry)).one()
        assert entry.actor == "system"
        assert audit.verify_chain(s).count == 1


@pytest.mark.postgres
def test_postgres_refuses_truncate(db):
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL only")
    with pytest.raises(DBAPIError, match="append-only"):
        with db.session() as s:
            s.execute(text("TRUNCATE audit_log"))


def test_now_is_utc():
    from workbench.records.models import utcnow

    assert utcnow().tzinfo is UTC
