"""Opening the records database: engine, sessions and migrations.

The embedded default is one SQLite file (WAL journal, foreign keys on, busy
timeout). PostgreSQL is used when the URL says so. :func:`open_database`
brings the schema to the newest Alembic revision on every open, programmatically
(no ``alembic.ini`` is needed on the user's path).

Transactions on SQLite
----------------------
Every write session on SQLite starts with ``BEGIN IMMEDIATE``: the write lock
is taken before the first read, so that the audit trail's head can be read and
extended without another writer slipping in between (see
:func:`workbench.records.audit.append`). ``Database.session(readonly=True)``
starts a plain deferred ``BEGIN`` for pages that only read. ``BEGIN IMMEDIATE``
waits up to the busy timeout for other writers and is then retried with
exponential backoff.

Durable security events
-----------------------
A failed login must be recorded even though the caller's transaction is rolled
back by the :class:`~workbench.errors.AuthenticationError` that follows it.
:func:`run_durably` runs a write in the current transaction and, should that
transaction roll back, runs it again in a fresh one when the
:meth:`Database.session` block ends.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from workbench.errors import ConfigurationError

__all__ = ["Database", "open_database", "run_durably", "MIGRATIONS_DIR"]

logger = logging.getLogger(__name__)

#: Folder of the Alembic environment shipped with the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_BEGIN_OPTION = "workbench_sqlite_begin"
_PENDING_KEY = "workbench_durable_pending"
_REPLAY_KEY = "workbench_durable_replay"
_BEGIN_RETRIES = 8

DurableWrite = Callable[[Session], None]
"""A write that :func:`run_durably` may replay in a fresh transaction."""


@dataclass(slots=True)
class Database:
    """An open records database.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The engine; on SQLite its connections emit ``BEGIN IMMEDIATE``.
    url : sqlalchemy.engine.URL
        The database URL (``str(url)`` hides the password).
    """

    engine: Engine
    url: URL
    _write_factory: sessionmaker[Session] = field(init=False, repr=False)
    _read_factory: sessionmaker[Session] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._write_factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        read_engine = self.engine
        if self.dialect == "sqlite":
            read_engine = self.engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
        self._read_factory = sessionmaker(bind=read_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """Name of the SQL dialect: ``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """Open a session that commits on success and rolls back on error.

        Parameters
        ----------
        readonly : bool, default False
            On SQLite, start a deferred transaction that does not take the
            write lock. Writing in such a session may fail with "database is
            locked"; use it for pages that only read.

        Yields
        ------
        sqlalchemy.orm.Session
            Objects stay usable after the block (``expire_on_commit=False``).

        Notes
        -----
        Writes registered with :func:`run_durably` (security events) are
        replayed in a fresh transaction when this session rolls back.
        """
        factory = self._read_factory if readonly else self._write_factory
        session = factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            replay: list[DurableWrite] = session.info.pop(_REPLAY_KEY, [])
            session.close()
            if replay:
                self._replay(replay)

    def _replay(self, writes: list[DurableWrite]) -> None:
        try:
            with self.session() as session:
                for write in writes:
                    write(session)
                session.info.pop(_PENDING_KEY, None)
        except Exception:
            # Never mask the caller's own exception; the failure is logged.
            logger.exception("Could not record %d security event(s) after a rollback", len(writes))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def run_durably(session: Session, write: DurableWrite) -> None:
    """Run ``write(session)`` now and again after a rollback of this transaction.

    Used for security events (failed logins, lockouts, denied actions) that
    must be kept even though the exception raised right after them rolls the
    caller's transaction back. ``write`` must be idempotent with respect to a
    rolled-back first run: it re-reads whatever state it changes.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        A session opened by :meth:`Database.session`. Other sessions run the
        write once and do not replay it.
    write : callable
        ``write(session) -> None``.
    """
    write(session)
    session.info.setdefault(_PENDING_KEY, []).append(write)


@event.listens_for(Session, "after_commit")
def _forget_durable(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


@event.listens_for(Session, "after_rollback")
def _schedule_durable(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    if pending:
        session.info.setdefault(_REPLAY_KEY, []).extend(pending)


def _is_locked(error: BaseException) -> bool:
    text = str(error).lower()
    return "database is locked" in text or "database is busy" in text


def _install_sqlite_hooks(engine: Engine, *, busy_timeout_ms: int, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        statement = "BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN"
        delay = 0.01
        for attempt in range(_BEGIN_RETRIES):
            try:
                conn.exec_driver_sql(statement)
                return
            except OperationalError as error:
                if not _is_locked(error) or attempt == _BEGIN_RETRIES - 1:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)


def open_database(
    url: str | URL,
    *,
    migrate: bool = True,
    echo: bool = False,
    busy_timeout_s: float = 30.0,
) -> Database:
    """Open (and create or upgrade) the records database.

    Parameters
    ----------
    url : str or sqlalchemy.engine.URL
        SQLAlchemy URL: ``sqlite:///PATH/workbench.db`` (the embedded default,
        see :func:`workbench.config.resolve_workdir`) or
        ``postgresql+psycopg://user:password@host/dbname``.
    migrate : bool, default True
        Run ``alembic upgrade head`` before returning.
    echo : bool, default False
        Log every SQL statement.
    busy_timeout_s : float, default 30.0
        SQLite only: how long a writer waits for another writer's lock.

    Returns
    -------
    Database

    Raises
    ------
    ConfigurationError
        The URL names an unsupported database or cannot be parsed.
    """
    try:
        parsed = make_url(url)
    except Exception as error:
        raise ConfigurationError(
            "Expected a SQLAlchemy database URL such as sqlite:///var/workbench.db or "
            f"postgresql+psycopg://user:pass@host/db; could not parse it ({error})."
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if in_memory:
            engine = create_engine(
                parsed,
                echo=echo,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                parsed,
                echo=echo,
                connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
            )
        _install_sqlite_hooks(
            engine, busy_timeout_ms=int(busy_timeout_s * 1000), in_memory=in_memory
        )
    elif backend == "postgresql":
        engine = create_engine(parsed, echo=echo, pool_pre_ping=True)
    else:
        raise ConfigurationError(
            f"Expected a sqlite or postgresql database URL; found the backend {backend!r}."
        )
    db = Database(engine=engine, url=parsed)
    if migrate:
        upgrade(db)
    return db


def alembic_config() -> AlembicConfig:
    """Return an Alembic configuration pointing at the shipped migrations."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    """Run ``alembic upgrade`` on ``db`` inside one transaction.

    Parameters
    ----------
    db : Database
        The database to migrate.
    revision : str, default "head"
        Target revision.
    """
    config = alembic_config()
    if db.engine.dialect.name != "sqlite":
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return
    # SQLite changes a constraint by rebuilding the table; its documented procedure turns
    # foreign-key enforcement off outside the transaction and checks every key before commit.
    with db.engine.connect() as connection:
        raw = connection.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.begin():
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise ConfigurationError(
                        f"Upgrading the database would break {len(broken)} foreign key(s) "
                        f"(first: {tuple(broken[0])}); nothing was changed."
                    )
        finally:
            raw.execute("PRAGMA foreign_keys = ON")
