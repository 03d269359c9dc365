"""Shared fixtures: the example workflow, fresh homes (`make_settings`), a throwaway key store, and a
throwaway PostgreSQL database (`postgres_url`, skipped when no server answers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_server.crypto.keys import KeyStore, TrustStore
from mcp_server.crypto.mldsa import Algorithm
from mcp_server.home import example_workflow, initialize
from mcp_server.settings import Settings


@pytest.fixture
def example_text() -> str:
    """The bundled GHZ example document (unsigned, LF line endings)."""
    return example_workflow()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a fresh home under tmp_path (initialised: key, trust, example workflow), with
    overrides; no environment or .env file is read."""

    def make(**overrides: Any) -> Settings:
        settings = Settings(home=tmp_path / "home", _env_file=None, **overrides)  # type: ignore[call-arg]
        initialize(settings)
        return settings

    return make


@pytest.fixture
def keystore(tmp_path: Path) -> KeyStore:
    """A key store under tmp_path with one generated ML-DSA-65 key: the default, and trusted."""
    store = KeyStore(tmp_path / "keys", TrustStore(tmp_path / "trust"))
    store.generate(Algorithm.ML_DSA_65)
    return store


def _postgres_unavailable() -> str | None:
    import socket

    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg module is not installed"
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            pass
    except OSError:
        return "no PostgreSQL server answers at 127.0.0.1:5432"
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the local server (trust auth), dropped afterwards, so
    tests never see what earlier runs left in the shared `test` database."""
    import uuid

    reason = _postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    import psycopg

    name = f"macroslow_test_{uuid.uuid4().hex[:12]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
