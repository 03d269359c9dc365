"""ML-DSA (FIPS 204) through `cryptography` (>= 48): the one seam to the signature backend.

Everything that signs or verifies goes through `sign` and `verify` here, so the context string for
domain separation is applied in exactly one place. `cryptography`'s exceptions are mapped to
`SignatureInvalid` / `KeyStoreError` at this seam.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa

from mcp_server.errors import KeyStoreError, SignatureInvalid

# FIPS 204 "context string" (at most 255 bytes). A signature made for a MAML document cannot be
# replayed as any other kind of ML-DSA signature, and vice versa.
MAML_CONTEXT = b"macroslow-mcp/maml-signature/v1"


class Algorithm(StrEnum):
    ML_DSA_44 = "ML-DSA-44"
    ML_DSA_65 = "ML-DSA-65"
    ML_DSA_87 = "ML-DSA-87"


DEFAULT_ALGORITHM = Algorithm.ML_DSA_65

PrivateKey: TypeAlias = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
PublicKey: TypeAlias = mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey

_PRIVATE: dict[Algorithm, type[PrivateKey]] = {
    Algorithm.ML_DSA_44: mldsa.MLDSA44PrivateKey,
    Algorithm.ML_DSA_65: mldsa.MLDSA65PrivateKey,
    Algorithm.ML_DSA_87: mldsa.MLDSA87PrivateKey,
}
_PUBLIC: dict[Algorithm, type[PublicKey]] = {
    Algorithm.ML_DSA_44: mldsa.MLDSA44PublicKey,
    Algorithm.ML_DSA_65: mldsa.MLDSA65PublicKey,
    Algorithm.ML_DSA_87: mldsa.MLDSA87PublicKey,
}
# Signature sizes from FIPS 204, table 2: a wrong length is reported before any verify.
SIGNATURE_BYTES = {Algorithm.ML_DSA_44: 2420, Algorithm.ML_DSA_65: 3309, Algorithm.ML_DSA_87: 4627}


def parse_algorithm(name: str) -> Algorithm:
    try:
        return Algorithm(name)
    except ValueError:
        allowed = ", ".join(a.value for a in Algorithm)
        shown = name if len(name) <= 40 else name[:39] + "…"  # what a caller wrote, not echoed whole
        raise SignatureInvalid(f"unsupported algorithm {shown!r}; expected one of {allowed}") from None


def generate(algorithm: Algorithm = DEFAULT_ALGORITHM) -> PrivateKey:
    return _PRIVATE[algorithm].generate()


def from_seed(algorithm: Algorithm, seed: bytes) -> PrivateKey:
    """Derive a key pair from its 32-byte FIPS 204 seed (xi); used by the known-answer tests."""
    return _PRIVATE[algorithm].from_seed_bytes(seed)


def algorithm_of(key: PrivateKey | PublicKey) -> Algorithm:
    for algorithm, cls in (*_PRIVATE.items(), *_PUBLIC.items()):
        if isinstance(key, cls):
            return algorithm
    raise KeyStoreError(f"not an ML-DSA key: {type(key).__name__}")


def public_key_from_raw(algorithm: Algorithm, raw: bytes) -> PublicKey:
    try:
        return _PUBLIC[algorithm].from_public_bytes(raw)
    except ValueError as exc:
        raise KeyStoreError(f"not a valid {algorithm} public key") from exc


def spki_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(public_key: PublicKey) -> str:
    """Key id: the first 16 bytes of SHA-256 over the SubjectPublicKeyInfo DER, as 32 hex digits."""
    return hashlib.sha256(spki_der(public_key)).hexdigest()[:32]


def sign(private_key: PrivateKey, data: bytes, context: bytes = MAML_CONTEXT) -> bytes:
    return private_key.sign(data, context)


def verify(public_key: PublicKey, signature: bytes, data: bytes, context: bytes = MAML_CONTEXT) -> None:
    """Return nothing if `signature` is valid for `data` under `public_key`, else raise SignatureInvalid."""
    expected = SIGNATURE_BYTES[algorithm_of(public_key)]
    if len(signature) != expected:
        raise SignatureInvalid(
            f"signature is {len(signature)} bytes; {algorithm_of(public_key)} signatures are {expected}"
        )
    try:
        public_key.verify(signature, data, context)
    except InvalidSignature as exc:
        raise SignatureInvalid(
            "signature does not match the document (changed after signing, or wrong key)"
        ) from exc
