"""The SQL database behind quotas (and, next, the receipts ledger): engine, schema base, errors.

SQLite (a file in the home) by default; any SQLAlchemy URL otherwise, e.g. PostgreSQL for several
server processes. SQLite connections use WAL, a busy timeout and foreign keys. Driver errors are
mapped to `BackendUnavailable` by `database_errors()`, the one seam to the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase

from mcp_server.errors import BackendUnavailable

BUSY_TIMEOUT_MS = 10_000


class Base(DeclarativeBase):
    """Declarative base of every table the server keeps."""


def open_engine(url: str) -> Engine:
    """An engine for `url`; the schema is created if missing. Every failure is `BackendUnavailable`."""
    with database_errors():
        engine = _engine(url)
        import mcp_server.policy.quota  # noqa: F401  (registers its tables on Base.metadata)

        try:
            Base.metadata.create_all(engine)
        except SQLAlchemyError:
            # Another process created the same tables between our check and our CREATE: check again.
            Base.metadata.create_all(engine)
    return engine


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@contextmanager
def database_errors() -> Iterator[None]:
    """Map driver and SQLAlchemy errors to `BackendUnavailable` (no SQL or parameters in the message)."""
    try:
        yield
    except (SQLAlchemyError, ImportError) as exc:  # ImportError: the URL names a driver not installed
        raise BackendUnavailable(
            f"the database is unavailable ({type(exc).__name__}); try again shortly"
        ) from exc
