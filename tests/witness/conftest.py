"""Fixtures of the witness tests: real ML-DSA-44 keys, a log with leaves, signed checkpoints."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from mcp_server.ledger import checkpoint as notes
from mcp_server.ledger import merkle
from mcp_server.witness import cosignature

ORIGIN = "example.com/log"
LOG_TIME = 1_700_000_000


class Log:
    """A toy log: leaf hashes, and checkpoints signed in the ML-DSA-44 cosignature format."""

    def __init__(self, key: MLDSA44PrivateKey, origin: str = ORIGIN, leaves: int = 64) -> None:
        self.key = key
        self.origin = origin
        self.hashes = [merkle.leaf_hash(f"{origin} leaf {i}".encode()) for i in range(leaves)]

    def root(self, size: int) -> bytes:
        return merkle.root_from_leaf_hashes(self.hashes[:size])

    def proof(self, old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(self.hashes, old, new)

    def note(self, size: int, root: bytes | None = None, key: MLDSA44PrivateKey | None = None) -> str:
        cp = notes.Checkpoint(self.origin, size, self.root(size) if root is None else root)
        text = notes.body(cp).decode()
        return text + "\n" + cosignature.sign_line(text, self.origin, key or self.key, LOG_TIME)

    def vkey(self) -> str:
        return cosignature.vkey(self.origin, self.key.public_key())


def seeded(label: str) -> MLDSA44PrivateKey:
    return MLDSA44PrivateKey.from_seed_bytes(hashlib.sha256(label.encode()).digest())


@pytest.fixture(scope="session")
def log_key() -> MLDSA44PrivateKey:
    return seeded("log")


@pytest.fixture
def log(log_key: MLDSA44PrivateKey) -> Log:
    return Log(log_key)
