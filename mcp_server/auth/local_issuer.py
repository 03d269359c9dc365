"""The local development issuer: a key in the home that `token mint` signs access tokens with.

    issuer/issuer.key.pem   ML-DSA-65 private key (PKCS#8, mode 0600, encrypted with the passphrase)
    issuer/issuer.pub.pem   its public key: all the server needs to verify
    issuer/hs256.secret     or, with MACROSLOW_LOCAL_ISSUER_ALGORITHM=HS256, a 32-byte shared secret

Created on first use and never overwritten. The server trusts this issuer unless
`MACROSLOW_TRUST_LOCAL_ISSUER=false`, so HTTP authentication can be tried without an identity provider.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from mcp_server.auth.jws_mldsa import ALGORITHMS as MLDSA_JWS
from mcp_server.crypto import mldsa
from mcp_server.crypto.keys import _write_new, load_public_pem, public_pem
from mcp_server.errors import InvalidDocument, KeyStoreError
from mcp_server.settings import Settings

MAX_TTL_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class VerificationKey:
    """A key the local issuer's tokens verify with: an ML-DSA public key or the HS256 secret."""

    kid: str
    key: object
    algorithm: str


def _dir(settings: Settings) -> Path:
    path = settings.issuer_path
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _read_private(path: Path) -> bytes:
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(st.st_mode)
        raise KeyStoreError(f"{path} is accessible by others (mode {mode:04o}); run chmod 600 on it")
    return path.read_bytes()


def ensure(settings: Settings) -> VerificationKey:
    """Create the issuer key (or secret) if missing; return what verifies its tokens."""
    from mcp_server.home import home_lock

    with home_lock(settings):
        return _ensure(settings)


def _ensure(settings: Settings) -> VerificationKey:
    home = _dir(settings)
    if settings.local_issuer_algorithm == "HS256":
        secret_file = home / "hs256.secret"
        if not secret_file.exists():
            _write_new(secret_file, base64.b64encode(secrets.token_bytes(32)) + b"\n", 0o600)
        secret = base64.b64decode(_read_private(secret_file).strip())
        return VerificationKey("local-hs256", secret, "HS256")
    pub_file, key_file = home / "issuer.pub.pem", home / "issuer.key.pem"
    if not key_file.exists() and not pub_file.exists():
        key = mldsa.generate(mldsa.Algorithm.ML_DSA_65)
        passphrase = settings.passphrase_bytes()
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        _write_new(key_file, pem, 0o600)
        _write_new(pub_file, public_pem(key.public_key()), 0o644)
    public = load_public_pem(pub_file.read_bytes())
    return VerificationKey(mldsa.key_id(public), public, mldsa.algorithm_of(public).value)


def _signing_key(settings: Settings) -> tuple[str, object, str]:
    verification = ensure(settings)
    if verification.algorithm == "HS256":
        return verification.kid, verification.key, "HS256"
    data = _read_private(settings.issuer_path / "issuer.key.pem")
    encrypted = b"ENCRYPTED PRIVATE KEY" in data
    passphrase = settings.passphrase_bytes()
    if encrypted and passphrase is None:
        raise KeyStoreError("the local issuer key is encrypted; set MACROSLOW_KEY_PASSPHRASE")
    try:
        key = serialization.load_pem_private_key(data, passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError("cannot load the local issuer key: wrong passphrase or damaged file") from exc
    return verification.kid, key, verification.algorithm


def mint(
    settings: Settings,
    *,
    sub: str,
    scopes: list[str],
    ttl: int,
    roles: list[str] | None = None,
    audience: str | None = None,
) -> str:
    """A development access token from the local issuer, for `settings.expected_audience`."""
    import jwt

    if not 1 <= ttl <= MAX_TTL_SECONDS:
        raise InvalidDocument(f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
    kid, key, algorithm = _signing_key(settings)
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": settings.local_issuer,
        "sub": sub,
        "aud": audience or settings.expected_audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(scopes),
        "client_id": "macroslow-mcp-cli",
    }
    if roles:
        claims["roles"] = roles
    encoder = jwt.PyJWT()
    for name, alg in MLDSA_JWS.items():
        encoder._jws.register_algorithm(name, alg)
    return encoder.encode(claims, key, algorithm=algorithm, headers={"kid": kid, "typ": "at+jwt"})  # type: ignore[arg-type]
