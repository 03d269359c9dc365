"""The schema comes from the Alembic migrations, and the ORM models agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

# The tables of every module that has some:
import mcp_server.ledger.models
import mcp_server.llm.cache
import mcp_server.policy.quota
import mcp_server.quantum.store
import mcp_server.witness.models  # noqa: F401
from mcp_server.db import SCHEMA_HEAD, Base, open_engine
from mcp_server.errors import BackendUnavailable


def test_migrations_make_exactly_the_models_tables(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names()) - {"alembic_version"}
        assert tables == set(Base.metadata.tables)
        for name, table in Base.metadata.tables.items():
            assert {c["name"] for c in inspector.get_columns(name)} == {c.name for c in table.columns}, name
    finally:
        engine.dispose()


def test_reopening_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for _ in range(3):
        engine = open_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                SCHEMA_HEAD
            ]
        engine.dispose()


def test_a_database_from_a_newer_version_is_refused_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = open_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(BackendUnavailable, match="newer or unknown version"):
        open_engine(url)


def test_postgres_schema_matches(postgres_url: str) -> None:
    engine = open_engine(postgres_url)
    try:
        assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set(Base.metadata.tables)
    finally:
        engine.dispose()


def test_schema_head_constant_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from mcp_server.db import MIGRATIONS, SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_HEAD]
