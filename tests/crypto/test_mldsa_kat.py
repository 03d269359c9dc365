"""ML-DSA known-answer tests (FIPS 204, deterministic, pure) from the `cryptography_vectors` package."""

from __future__ import annotations

import functools
import importlib.resources

import pytest
from dilithium_py.ml_dsa import ML_DSA_44, ML_DSA_65, ML_DSA_87

from mcp_server.crypto import mldsa
from mcp_server.errors import SignatureInvalid

PARAMETER_SETS = {"44": ML_DSA_44, "65": ML_DSA_65, "87": ML_DSA_87}
FIELDS = {"count", "xi", "seed", "pk", "sk", "msg", "mlen", "sm", "smlen", "ctx"}
RECORDS_PER_FILE = 100
DILITHIUM_PY_RECORDS = 5  # pure Python signing: about 50-80 ms per signature


@functools.cache
def records(level: str) -> tuple[dict[str, str], ...]:
    """Parse `name = hex` lines; a record starts at each `count` line (blank lines are ignored)."""
    path = importlib.resources.files("cryptography_vectors").joinpath(
        "asymmetric", "MLDSA", f"kat_MLDSA_{level}_det_pure.rsp"
    )
    out: list[dict[str, str]] = []
    for line in path.read_text(encoding="ascii").splitlines():
        if not line.strip() or line.startswith(("#", "[")):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"unexpected line {line[:40]!r}"
        name = name.strip()
        if name == "count":
            out.append({})
        out[-1][name] = value.strip()
    return tuple(out)


def decoded(record: dict[str, str]) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(xi, pk, sig, msg, ctx) of one record, with sm split into signature and message."""
    msg = bytes.fromhex(record["msg"])
    sm = bytes.fromhex(record["sm"])
    assert len(msg) == int(record["mlen"])
    assert len(sm) == int(record["smlen"])
    assert sm.endswith(msg)
    return (
        bytes.fromhex(record["xi"]),
        bytes.fromhex(record["pk"]),
        sm[: len(sm) - len(msg)],
        msg,
        bytes.fromhex(record["ctx"]),
    )


def flip(data: bytes, index: int, bit: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ (1 << (bit % 8))]) + data[index + 1 :]


@pytest.mark.parametrize("level", PARAMETER_SETS)
def test_vector_file_shape(level: str) -> None:
    recs = records(level)
    assert len(recs) == RECORDS_PER_FILE
    assert [int(r["count"]) for r in recs] == list(range(RECORDS_PER_FILE))
    algorithm = mldsa.Algorithm(f"ML-DSA-{level}")
    for record in recs:
        assert set(record) == FIELDS
        xi, _pk, sig, _msg, _ctx = decoded(record)
        assert len(xi) == 32
        assert len(sig) == mldsa.SIGNATURE_BYTES[algorithm]


@pytest.mark.parametrize("level", PARAMETER_SETS)
def test_key_from_seed_matches_public_key(level: str) -> None:
    algorithm = mldsa.Algorithm(f"ML-DSA-{level}")
    for record in records(level):
        xi, pk, _sig, _msg, _ctx = decoded(record)
        private = mldsa.from_seed(algorithm, xi)
        assert mldsa.algorithm_of(private) is algorithm
        assert private.public_key().public_bytes_raw() == pk, f"count {record['count']}"
        assert mldsa.public_key_from_raw(algorithm, pk).public_bytes_raw() == pk


@pytest.mark.parametrize("level", PARAMETER_SETS)
def test_signatures_verify_and_any_bit_flip_fails(level: str) -> None:
    algorithm = mldsa.Algorithm(f"ML-DSA-{level}")
    for record in records(level):
        count = int(record["count"])
        _xi, pk, sig, msg, ctx = decoded(record)
        public = mldsa.public_key_from_raw(algorithm, pk)
        mldsa.verify(public, sig, msg, context=ctx)
        # A different bit in a different byte for every record.
        tampered = {
            "sig": (flip(sig, count * 97 + 13, count), msg, ctx),
            "msg": (sig, flip(msg, count * 31, count + 3), ctx),
            "ctx": (sig, msg, flip(ctx, count, count + 5)),
        }
        for what, (s, m, c) in tampered.items():
            with pytest.raises(SignatureInvalid):
                mldsa.verify(public, s, m, context=c)
            assert (s, m, c) != (sig, msg, ctx), what
        # Without the record's context string (i.e. with the MAML default) it must fail too.
        with pytest.raises(SignatureInvalid):
            mldsa.verify(public, sig, msg)


@pytest.mark.parametrize("level", PARAMETER_SETS)
def test_dilithium_py_reproduces_deterministic_signatures(level: str) -> None:
    implementation = PARAMETER_SETS[level]
    for record in records(level)[:DILITHIUM_PY_RECORDS]:
        _xi, pk, sig, msg, ctx = decoded(record)
        sk = bytes.fromhex(record["sk"])
        assert implementation.sign(sk, msg, ctx=ctx, deterministic=True) == sig, f"count {record['count']}"
        assert implementation.verify(pk, msg, sig, ctx=ctx)


@pytest.mark.parametrize("level", PARAMETER_SETS)
def test_dilithium_py_key_derivation_from_seed(level: str) -> None:
    implementation = PARAMETER_SETS[level]
    for record in records(level)[:DILITHIUM_PY_RECORDS]:
        pk, sk = implementation.key_derive(bytes.fromhex(record["xi"]))
        assert (pk.hex(), sk.hex()) == (record["pk"], record["sk"]), f"count {record['count']}"
