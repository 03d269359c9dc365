"""ML-KEM-768 known-answer tests (FIPS 203) from the `cryptography_vectors` package.

Each record gives the key-generation seed (d, z), the encapsulation key `pk`, a ciphertext `ct` with
its shared secret `ss`, and a malformed ciphertext `ct_n` with the implicit-rejection secret `ss_n`.
`cryptography` derives the key pair from d || z and decapsulates; encapsulation is randomised there
(its message `msg` cannot be injected), so encapsulation is checked by round trip instead.
"""

from __future__ import annotations

import functools
import importlib.resources

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey

from mcp_server.crypto import kem

FIELDS = {"count", "z", "d", "msg", "seed", "pk", "sk", "ct", "ss", "ct_n", "ss_n"}


@functools.cache
def records() -> tuple[dict[str, bytes], ...]:
    path = importlib.resources.files("cryptography_vectors").joinpath(
        "asymmetric", "MLKEM", "kat_MLKEM_768.rsp"
    )
    out: list[dict[str, bytes]] = []
    for line in path.read_text(encoding="ascii").splitlines():
        if not line.strip() or line.startswith(("#", "[")):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"unexpected line {line[:40]!r}"
        name, value = name.strip(), value.strip()
        if name == "count":
            out.append({})
            continue
        out[-1][name] = bytes.fromhex(value)
    return tuple(out)


def test_the_vector_file_is_complete() -> None:
    recs = records()
    assert len(recs) == 1000
    for rec in recs:
        assert set(rec) == FIELDS - {"count"}
        assert len(rec["pk"]) == kem.MLKEM_PUBLIC_BYTES and len(rec["ct"]) == kem.MLKEM_CIPHERTEXT_BYTES


def test_all_vectors_keygen_and_decapsulation() -> None:
    """All 1,000 records: key pair from d || z, then decapsulation of ct (ss) and of ct_n (ss_n)."""
    for i, rec in enumerate(records()):
        private = MLKEM768PrivateKey.from_seed_bytes(rec["d"] + rec["z"])
        assert private.public_key().public_bytes_raw() == rec["pk"], i
        assert private.decapsulate(rec["ct"]) == rec["ss"], i
        assert private.decapsulate(rec["ct_n"]) == rec["ss_n"], i  # implicit rejection


@pytest.mark.parametrize("index", [0, 1, 999])
def test_encapsulation_to_a_vector_key_round_trips(index: int) -> None:
    rec = records()[index]
    public = MLKEM768PublicKey.from_public_bytes(rec["pk"])
    secret, ciphertext = public.encapsulate()
    assert len(ciphertext) == kem.MLKEM_CIPHERTEXT_BYTES
    assert MLKEM768PrivateKey.from_seed_bytes(rec["d"] + rec["z"]).decapsulate(ciphertext) == secret
