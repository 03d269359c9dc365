"""Cross-verification with dilithium-py, an independent ML-DSA implementation, in both directions."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from dilithium_py.ml_dsa import ML_DSA_44, ML_DSA_65, ML_DSA_87

from mcp_server.crypto import mldsa
from mcp_server.crypto.keys import KeyStore, TrustStore
from mcp_server.errors import SignatureInvalid
from mcp_server.maml import parser
from mcp_server.signing import inspect_signature, sign_document

IMPLEMENTATIONS = {
    mldsa.Algorithm.ML_DSA_44: ML_DSA_44,
    mldsa.Algorithm.ML_DSA_65: ML_DSA_65,
    mldsa.Algorithm.ML_DSA_87: ML_DSA_87,
}
MESSAGE = b"---\nmaml_version: '2.0'\n---\n# a message with \xc3\xa9 and \x00 bytes\n"


@pytest.mark.parametrize("algorithm", list(IMPLEMENTATIONS))
def test_ours_signs_dilithium_py_verifies(algorithm: mldsa.Algorithm) -> None:
    implementation = IMPLEMENTATIONS[algorithm]
    private = mldsa.generate(algorithm)
    assert mldsa.algorithm_of(private) is algorithm
    pk = private.public_key().public_bytes_raw()
    sig = mldsa.sign(private, MESSAGE)
    assert len(sig) == mldsa.SIGNATURE_BYTES[algorithm]
    assert implementation.verify(pk, MESSAGE, sig, ctx=mldsa.MAML_CONTEXT) is True
    assert implementation.verify(pk, MESSAGE, sig, ctx=mldsa.MAML_CONTEXT + b"x") is False
    assert implementation.verify(pk, MESSAGE, sig) is False  # empty context
    assert implementation.verify(pk, MESSAGE + b"!", sig, ctx=mldsa.MAML_CONTEXT) is False
    # An explicit context goes through too.
    sig_ctx = mldsa.sign(private, MESSAGE, context=b"other")
    assert implementation.verify(pk, MESSAGE, sig_ctx, ctx=b"other") is True
    assert implementation.verify(pk, MESSAGE, sig_ctx, ctx=mldsa.MAML_CONTEXT) is False


@pytest.mark.parametrize("algorithm", list(IMPLEMENTATIONS))
def test_dilithium_py_signs_ours_verifies(algorithm: mldsa.Algorithm) -> None:
    implementation = IMPLEMENTATIONS[algorithm]
    pk, sk = implementation.keygen()
    public = mldsa.public_key_from_raw(algorithm, pk)
    for deterministic in (False, True):
        sig = implementation.sign(sk, MESSAGE, ctx=mldsa.MAML_CONTEXT, deterministic=deterministic)
        mldsa.verify(public, sig, MESSAGE)
        with pytest.raises(SignatureInvalid):
            mldsa.verify(public, sig, MESSAGE + b"!")
        with pytest.raises(SignatureInvalid):
            mldsa.verify(public, sig, MESSAGE, context=b"")
    # Signed with no context: not a MAML signature.
    plain = implementation.sign(sk, MESSAGE)
    with pytest.raises(SignatureInvalid):
        mldsa.verify(public, plain, MESSAGE)
    mldsa.verify(public, plain, MESSAGE, context=b"")


@pytest.mark.parametrize("algorithm", list(IMPLEMENTATIONS))
def test_signature_length_checked_before_verify(algorithm: mldsa.Algorithm) -> None:
    private = mldsa.generate(algorithm)
    sig = mldsa.sign(private, MESSAGE)
    for bad in (sig[:-1], sig + b"\x00", b""):
        with pytest.raises(SignatureInvalid, match=f"{algorithm} signatures are {len(sig)}"):
            mldsa.verify(private.public_key(), bad, MESSAGE)


@pytest.mark.parametrize("algorithm", list(IMPLEMENTATIONS))
def test_document_round_trip_verified_by_dilithium_py(
    algorithm: mldsa.Algorithm, example_text: str, tmp_path: Path
) -> None:
    keys = KeyStore(tmp_path / "keys", TrustStore(tmp_path / "trust"))
    info = keys.generate(algorithm)
    signed = sign_document(example_text, keys)
    assert signed.algorithm == algorithm.value
    assert signed.key_id == info.key_id

    block = parser.parse(signed.signed_document).front_matter.signature
    assert block is not None
    assert (block.algorithm, block.key_id) == (algorithm.value, info.key_id)
    sig = base64.b64decode(block.value, validate=True)
    public = keys.public_key(info.key_id)
    assert public is not None
    pk = public.public_bytes_raw()
    canonical = parser.canonical_bytes(signed.signed_document)
    assert canonical == example_text.encode()

    implementation = IMPLEMENTATIONS[algorithm]
    assert implementation.verify(pk, canonical, sig, ctx=mldsa.MAML_CONTEXT) is True
    assert (
        implementation.verify(pk, canonical.replace(b"1024", b"1025"), sig, ctx=mldsa.MAML_CONTEXT) is False
    )

    report = inspect_signature(signed.signed_document, keys)
    assert (report.valid, report.trusted, report.algorithm) == (True, True, algorithm.value)


def test_document_signed_by_dilithium_py_verifies(example_text: str, tmp_path: Path) -> None:
    """The other direction for whole documents: embed a dilithium-py signature, verify with ours."""
    pk, sk = ML_DSA_65.keygen()
    public = mldsa.public_key_from_raw(mldsa.Algorithm.ML_DSA_65, pk)
    trust = TrustStore(tmp_path / "trust")
    kid = trust.add(public)
    keys = KeyStore(tmp_path / "keys", trust)
    canonical = parser.canonical_bytes(example_text)
    value = base64.b64encode(ML_DSA_65.sign(sk, canonical, ctx=mldsa.MAML_CONTEXT)).decode()
    signed = parser.replace_signature(
        example_text, ["signature:", "  algorithm: ML-DSA-65", f"  key_id: {kid}", f'  value: "{value}"']
    )
    report = inspect_signature(signed, keys)
    assert (report.valid, report.trusted, report.key_id) == (True, True, kid), report.reasons
    report = inspect_signature(signed.replace("three qubits", "four qubits"), keys)
    assert not report.valid
