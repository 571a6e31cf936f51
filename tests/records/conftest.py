"""Fixtures of the records tests: a fresh database on SQLite and, when
``WORKBENCH_TEST_PG_URL`` is set, on PostgreSQL (one database per test module,
its schema rebuilt for every test). Start a local server with
``tests/records/pg_setup.sh`` and export the URL it prints."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from sqlalchemy import create_engine, make_url, text

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")

from workbench.records import users  # noqa: E402
from workbench.records.db import Database, open_database  # noqa: E402

PG_URL = os.environ.get("WORKBENCH_TEST_PG_URL")
from records_helpers import PASSWORD  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _fast_argon2() -> Iterator[None]:
    users.set_password_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield
    users.set_password_hasher(None)


@pytest.fixture(scope="module")
def pg_module_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if not PG_URL:
        pytest.skip("WORKBENCH_TEST_PG_URL is not set (see tests/records/pg_setup.sh)")
    name = f"wb_test_{request.module.__name__.rsplit('.', 1)[-1]}_{uuid.uuid4().hex[:8]}".lower()
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_pg_schema(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'workbench.db'}"
    url = request.getfixturevalue("pg_module_url")
    _reset_pg_schema(url)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'workbench.db'}")
    yield database
    database.dispose()


def _make_user(db: Database, username: str, role: str, *, must_change: bool = False, **kw):
    with db.session() as s:
        return users.create_user(
            s,
            actor="system",
            username=username,
            full_name=kw.pop("full_name", username.title() + " Example"),
            role=role,
            password=kw.pop("password", PASSWORD),
            must_change_password=must_change,
            **kw,
        )


def _drop_guards(db: Database) -> None:
    """Remove the append-only triggers, as an attacker with database access could."""
    with db.engine.begin() as conn:
        for table in ("audit_log", "signatures", "audit_checkpoints"):
            if db.dialect == "sqlite":
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_update")
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_delete")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")


@pytest.fixture
def make_user():
    """``make_user(db, username, role, must_change=False, password=...)`` -> User."""
    return _make_user


@pytest.fixture
def drop_guards():
    """``drop_guards(db)`` removes the append-only triggers."""
    return _drop_guards
