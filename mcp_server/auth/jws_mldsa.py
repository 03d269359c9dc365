"""ML-DSA JWS (RFC 9964) as a PyJWT algorithm, so access tokens can be post-quantum too.

RFC 9964 registers the JOSE algorithms `ML-DSA-44`, `ML-DSA-65` and `ML-DSA-87` (pure ML-DSA with an
empty context string) and the JWK key type `AKP` with members `alg` and `pub` (the raw public key,
base64url). Only public keys are read from JWKs here; private keys stay in PEM files.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from jwt.algorithms import Algorithm

from mcp_server.crypto import mldsa
from mcp_server.crypto.mldsa import Algorithm as MLDSAVariant


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class MLDSAJWSAlgorithm(Algorithm):
    """One ML-DSA parameter set as a JWS algorithm; keys must be of exactly that parameter set."""

    def __init__(self, variant: MLDSAVariant) -> None:
        self.variant = variant

    def prepare_key(self, key: Any) -> mldsa.PrivateKey | mldsa.PublicKey:
        try:
            algorithm = mldsa.algorithm_of(key)
        except Exception:
            from jwt.exceptions import InvalidKeyError

            raise InvalidKeyError(f"{self.variant.value} needs an ML-DSA key object") from None
        if algorithm != self.variant:
            from jwt.exceptions import InvalidKeyError

            raise InvalidKeyError(f"key is {algorithm.value}, token says {self.variant.value}")
        return key  # type: ignore[no-any-return]

    def sign(self, msg: bytes, key: Any) -> bytes:
        if not hasattr(key, "sign"):
            raise TypeError("signing needs an ML-DSA private key")
        return key.sign(msg)  # type: ignore[no-any-return]  # RFC 9964: empty context

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        public = key.public_key() if hasattr(key, "public_key") else key
        if len(sig) != mldsa.SIGNATURE_BYTES[self.variant]:
            return False
        try:
            public.verify(sig, msg)
        except InvalidSignature:
            return False
        return True

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        public = key_obj.public_key() if hasattr(key_obj, "public_key") else key_obj
        jwk = {
            "kty": "AKP",
            "alg": mldsa.algorithm_of(public).value,
            "pub": _b64url(public.public_bytes_raw()),
            "kid": mldsa.key_id(public),
        }
        return jwk if as_dict else json.dumps(jwk)

    @staticmethod
    def from_jwk(jwk: str | dict[str, Any]) -> mldsa.PublicKey:
        obj = json.loads(jwk) if isinstance(jwk, str) else jwk
        if obj.get("kty") != "AKP" or not isinstance(obj.get("pub"), str):
            raise ValueError("not an AKP public key")
        if "priv" in obj:
            raise ValueError("a JWKS must not carry private keys")
        variant = MLDSAVariant(str(obj.get("alg")))
        return mldsa.public_key_from_raw(variant, _unb64url(obj["pub"]))


ALGORITHMS = {v.value: MLDSAJWSAlgorithm(v) for v in MLDSAVariant}
