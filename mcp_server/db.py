"""The SQL database behind quotas and the receipts ledger: engines, schema migrations, errors.

SQLite (a file in the home) by default; any SQLAlchemy URL otherwise, e.g.
`postgresql+psycopg://user@host/db` for several server processes. The schema is created and
upgraded by the Alembic migrations in `mcp_server/migrations` (`migrate`), under a lock so that
processes starting together do not race: a file lock beside a SQLite database, an advisory lock on
PostgreSQL.

SQLite connections use WAL, a busy timeout and foreign keys. A `durable` engine (the ledger's) also
uses `synchronous=FULL`, and `write_transaction` opens its transactions with `BEGIN IMMEDIATE`, so an
append holds the write lock from its first read and a commit is on disk before it is acknowledged.
Driver errors are mapped to `BackendUnavailable` by `database_errors()`, the one seam to the database.
"""

from __future__ import annotations

import fcntl
import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase

from mcp_server.errors import BackendUnavailable

BUSY_TIMEOUT_MS = 10_000
WRITE_LOCK = "macroslow_write_lock"  # execution option: on a durable SQLite engine, BEGIN IMMEDIATE
MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA_HEAD = "0006"  # the newest migration's revision (a test checks it against the scripts)


class Base(DeclarativeBase):
    """Declarative base of every table the server keeps."""


def open_engine(url: str, *, durable: bool = False, migrate_schema: bool = True) -> Engine:
    """An engine for `url`, the schema brought up to date. Every failure is `BackendUnavailable`."""
    with database_errors():
        engine = _engine(url, durable=durable)
        if migrate_schema:
            migrate(engine)
    return engine


def _engine(url: str, *, durable: bool) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        if durable:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if durable:

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers ask for the lock up front (no deadlock between two readers turning writers);
            # readers start a deferred transaction and never block appends.
            immediate = conn.get_execution_options().get(WRITE_LOCK, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes the write lock at once (SQLite durable engine: `BEGIN IMMEDIATE`);
    committed on success, rolled back on error."""
    with engine.connect().execution_options(**{WRITE_LOCK: True}) as conn, conn.begin():
        yield conn


@contextmanager
def transaction(engine: Engine, connection: Connection | None = None) -> Iterator[Connection]:
    """The caller's `connection` (its transaction), or else a new transaction on `engine`, committed
    on success; driver errors are `BackendUnavailable` either way. Lets several short statements of
    different modules share one transaction."""
    with database_errors():
        if connection is not None:
            yield connection
        else:
            with engine.begin() as conn:
                yield conn


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration (idempotent, safe across processes).

    A database already at `SCHEMA_HEAD` is left alone without loading Alembic (server start-up)."""
    if _schema_version(engine) == SCHEMA_HEAD:
        return
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Running upgrade ..." is not news
    with _migration_lock(engine), engine.connect() as connection:
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            raise BackendUnavailable(
                "the database schema is from a newer or unknown version of macroslow-mcp; upgrade this server"
            ) from exc
        connection.commit()


def _schema_version(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except SQLAlchemyError:
        return None  # no schema yet (or unreadable: the migration will say)
    return versions[0] if len(versions) == 1 else None


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if engine.dialect.name == "postgresql":
        key = zlib.crc32(b"macroslow-mcp/migrate")
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                lock.commit()
        return
    yield


@contextmanager
def database_errors() -> Iterator[None]:
    """Map driver and SQLAlchemy errors to `BackendUnavailable` (no SQL or parameters in the message)."""
    try:
        yield
    except (SQLAlchemyError, ImportError, OSError) as exc:  # ImportError: a driver not installed
        raise BackendUnavailable(
            f"the database is unavailable ({type(exc).__name__}); try again shortly"
        ) from exc
