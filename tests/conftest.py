"""Shared fixtures: the bundled example workflow and a throwaway key store with one trusted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_server.crypto.keys import KeyStore, TrustStore
from mcp_server.crypto.mldsa import Algorithm
from mcp_server.home import example_workflow


@pytest.fixture
def example_text() -> str:
    """The bundled GHZ example document (unsigned, LF line endings)."""
    return example_workflow()


@pytest.fixture
def keystore(tmp_path: Path) -> KeyStore:
    """A key store under tmp_path with one generated ML-DSA-65 key: the default, and trusted."""
    store = KeyStore(tmp_path / "keys", TrustStore(tmp_path / "trust"))
    store.generate(Algorithm.ML_DSA_65)
    return store
