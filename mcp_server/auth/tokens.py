"""Bearer token verification: one `TokenAuthority` for every transport.

A token is accepted only when all of this holds, checked in this order:

1. at most 16 KiB, three base64url parts, a JSON header with a string `alg` that is not `none`;
2. `kid`, when present, is 1-128 characters of `A-Z a-z 0-9 . _ -` (nothing path- or SQL-like);
3. its (unverified) `iss` names a configured issuer; the header `alg` is on that issuer's allow-list;
4. a key of that issuer verifies it: found by `kid` (a JWKS refetch at most once per cooldown for an
   unknown `kid`), or the issuer's only key for that algorithm; the key's type must fit `alg`;
5. PyJWT checks the signature and the claims: `exp`, `iss`, `aud` required; `exp` and `nbf` with a
   small leeway; `aud` must be this server's audience; HMAC secrets shorter than 32 bytes refused;
6. a `sub` claim is present; for Entra ID issuers with `tenant_id`, `tid` matches.

Verified tokens are cached (keyed by their SHA-256, until they expire), so each is verified once.
Failures raise `Unauthenticated` with a reason that names no token content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)
from mcp.server.auth.provider import AccessToken

from mcp_server.auth import local_issuer
from mcp_server.auth.jws_mldsa import ALGORITHMS as MLDSA_JWS
from mcp_server.auth.jws_mldsa import MLDSAJWSAlgorithm
from mcp_server.auth.principal import Principal
from mcp_server.crypto import mldsa
from mcp_server.errors import BackendUnavailable, KeyStoreError, Unauthenticated
from mcp_server.settings import IssuerConfig, Settings

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES = 16 * 1024
MAX_JWKS_BYTES = 1024 * 1024
_KID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_CACHE_ENTRIES = 10_000

HMAC_ALGORITHMS = {"HS256", "HS384", "HS512"}
RSA_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
SUPPORTED = HMAC_ALGORITHMS | RSA_ALGORITHMS | set(EC_ALGORITHMS.values()) | {"EdDSA"} | set(MLDSA_JWS)


def algorithms_for(key: object) -> set[str]:
    """The JWS algorithms a key of this type can verify; the allow-list is intersected with this."""
    if isinstance(key, bytes):
        return set(HMAC_ALGORITHMS)
    if isinstance(key, rsa.RSAPublicKey):
        return set(RSA_ALGORITHMS)
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = EC_ALGORITHMS.get(key.curve.name)
        return {name} if name else set()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {"EdDSA"}
    try:
        return {mldsa.algorithm_of(key).value}  # type: ignore[arg-type]
    except KeyStoreError:
        return set()


@dataclass
class TrustedKey:
    kid: str | None
    key: object
    algorithms: set[str]


class ConfigurationError(ValueError):
    """The issuer configuration is unusable; raised when the server starts, never per request."""


@dataclass
class Issuer:
    """One trusted issuer with its keys; JWKS keys are fetched lazily and cached."""

    issuer: str
    algorithms: set[str]
    audiences: list[str]
    static_keys: list[TrustedKey] = field(default_factory=list)
    jwks_url: str | None = None
    tenant_id: str | None = None
    roles_as_scopes: bool = False
    cache_seconds: int = 3600
    cooldown_seconds: int = 60
    _jwks: list[TrustedKey] = field(default_factory=list)
    _fetched_at: float = float("-inf")
    _attempted_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)
    fetches: int = 0

    def _keys(self, kid: str | None, *, refresh: bool) -> list[TrustedKey]:
        keys = list(self.static_keys)
        if self.jwks_url is not None:
            now = time.monotonic()
            stale = now - self._fetched_at > self.cache_seconds
            unknown = kid is not None and all(k.kid != kid for k in (*keys, *self._jwks))
            if stale or (refresh and unknown):
                # One fetch at a time: callers arriving during a fetch wait for its keys; within the
                # cooldown nobody fetches again, whatever `kid`s they bring.
                with self._lock:
                    if time.monotonic() - self._attempted_at >= self.cooldown_seconds:
                        self._attempted_at = time.monotonic()
                        self._fetch()
            keys.extend(self._jwks)
        return keys

    def _fetch(self) -> None:
        assert self.jwks_url is not None
        self.fetches += 1
        try:
            with urllib.request.urlopen(self.jwks_url, timeout=5) as response:  # noqa: S310 (configured URL)
                body = response.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise ValueError("JWKS larger than 1 MiB")
            document = json.loads(body)
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.jwks_url, type(exc).__name__)
            if not self._jwks:
                raise BackendUnavailable("cannot fetch the token issuer's keys; try again later") from None
            return
        keys: list[TrustedKey] = []
        listed = document.get("keys") if isinstance(document, dict) else None
        for jwk in listed if isinstance(listed, list) else []:
            parsed = _key_from_jwk(jwk)
            if parsed is not None:
                parsed.algorithms &= self.algorithms
                if parsed.algorithms:
                    keys.append(parsed)
        self._jwks = keys
        self._fetched_at = time.monotonic()

    def key_for(self, kid: str | None, alg: str) -> TrustedKey:
        candidates = [k for k in self._keys(kid, refresh=True) if alg in k.algorithms]
        if kid is not None:
            matches = [k for k in candidates if k.kid == kid]
            if not matches and len(candidates) == 1 and candidates[0].kid is None:
                matches = candidates  # a single PEM key or secret has no kid of its own
            candidates = matches
        if len(candidates) != 1:
            raise Unauthenticated("no key of the token's issuer matches its key id and algorithm")
        return candidates[0]


def _key_from_jwk(jwk: Any) -> TrustedKey | None:
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not _KID.fullmatch(kid)):
        return None
    try:
        if jwk.get("kty") == "AKP":
            key: object = MLDSAJWSAlgorithm.from_jwk(jwk)
        elif jwk.get("kty") == "oct":
            return None  # symmetric keys are never taken from a JWKS
        else:
            key = jwt.PyJWK(jwk).key
    except (PyJWTError, ValueError, KeyStoreError):
        return None
    algorithms = algorithms_for(key)
    if isinstance(jwk.get("alg"), str):
        algorithms &= {jwk["alg"]}
    return TrustedKey(kid, key, algorithms)


def _issuer_from_config(cfg: IssuerConfig, settings: Settings) -> Issuer:
    unknown = set(cfg.algorithms) - SUPPORTED
    if unknown or "none" in cfg.algorithms:
        raise ConfigurationError(f"issuer {cfg.issuer}: unsupported algorithms {sorted(unknown)}")
    issuer = Issuer(
        issuer=cfg.issuer,
        algorithms=set(cfg.algorithms),
        audiences=cfg.audience or [settings.expected_audience],
        jwks_url=cfg.jwks_url,
        tenant_id=cfg.tenant_id,
        roles_as_scopes=cfg.roles_as_scopes,
        cache_seconds=settings.jwks_cache_seconds,
        cooldown_seconds=settings.jwks_refetch_cooldown_seconds,
    )
    for path in cfg.public_key_files:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"issuer {cfg.issuer}: cannot read public key {path}") from exc
        allowed = algorithms_for(key) & issuer.algorithms
        if not allowed:
            raise ConfigurationError(
                f"issuer {cfg.issuer}: key {path} fits none of {sorted(issuer.algorithms)}"
            )
        issuer.static_keys.append(TrustedKey(None, key, allowed))
    if cfg.hs256_secret is not None:
        secret = cfg.hs256_secret.get_secret_value().encode("utf-8")
        if len(secret) < 32:
            raise ConfigurationError(f"issuer {cfg.issuer}: an HMAC secret needs at least 32 bytes")
        allowed = HMAC_ALGORITHMS & issuer.algorithms
        if not allowed:
            raise ConfigurationError(f"issuer {cfg.issuer}: a shared secret needs HS256 in algorithms")
        issuer.static_keys.append(TrustedKey(None, secret, allowed))
    if (HMAC_ALGORITHMS & issuer.algorithms) and cfg.hs256_secret is None:
        raise ConfigurationError(f"issuer {cfg.issuer}: HS algorithms are allowed only with a shared secret")
    if not issuer.static_keys and issuer.jwks_url is None:
        raise ConfigurationError(f"issuer {cfg.issuer}: give jwks_url, public_key_files or hs256_secret")
    return issuer


def _words(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return ()


class TokenAuthority:
    """Verifies bearer tokens against the configured issuers; returns a `Principal` or raises."""

    def __init__(self, issuers: list[Issuer], leeway: int = 30) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self.leeway = leeway
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})
        for name, algorithm in MLDSA_JWS.items():
            self._jwt._jws.register_algorithm(name, algorithm)  # no public hook on a private PyJWT instance

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenAuthority:
        issuers = [_issuer_from_config(cfg, settings) for cfg in settings.issuers]
        if settings.trust_local_issuer:
            vk = local_issuer.ensure(settings)
            issuers.append(
                Issuer(
                    issuer=settings.local_issuer,
                    algorithms={vk.algorithm},
                    audiences=[settings.expected_audience],
                    static_keys=[TrustedKey(vk.kid, vk.key, {vk.algorithm})],
                )
            )
        names = [i.issuer for i in issuers]
        if len(set(names)) != len(names):
            raise ConfigurationError("an issuer is configured twice")
        return cls(issuers, leeway=settings.token_leeway_seconds)

    @staticmethod
    def _cache_key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before, or None; raises if it has expired since."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            return None
        principal = self._cache.get(self._cache_key(token))
        expires = principal.expires_at if principal is not None else None
        if expires is not None and expires + self.leeway < time.time():
            raise Unauthenticated("token expired; get a new one")
        return principal

    def verify(self, token: str) -> Principal:
        """Return the token's principal, or raise `Unauthenticated` (or `BackendUnavailable`).

        May fetch a JWKS (blocking, bounded by a 5 s timeout): async callers use `verify_async`.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("bearer token missing or longer than 16 KiB")
        principal = self.cached(token)
        if principal is not None:
            return principal
        principal = self._verify(token)
        with self._cache_lock:
            self._cache[self._cache_key(token)] = principal
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return principal

    async def verify_async(self, token: str) -> Principal:
        """`verify` without blocking the event loop: cache hits inline, the rest in a worker thread."""
        import anyio.to_thread

        principal = self.cached(token)
        if principal is not None:
            return principal
        return await anyio.to_thread.run_sync(self.verify, token)

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = self._jwt.decode(token, options={"verify_signature": False})
        except (PyJWTError, UnicodeError):  # UnicodeError: a str with lone surrogates cannot be encoded
            raise Unauthenticated("malformed token: not a signed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise Unauthenticated("unsigned tokens (alg none) are refused")
        if kid is not None and (not isinstance(kid, str) or not _KID.fullmatch(kid)):
            raise Unauthenticated("malformed key id (kid) in the token header")
        iss = unverified.get("iss") if isinstance(unverified, dict) else None
        if not isinstance(iss, str):
            raise Unauthenticated("token lacks the required claim 'iss'")
        issuer = self.issuers.get(iss)
        if issuer is None:
            raise Unauthenticated("the token's issuer is not trusted by this server")
        if alg not in issuer.algorithms:
            raise Unauthenticated(f"algorithm {alg[:16]!r} is not allowed for this issuer")
        key = issuer.key_for(kid, alg)
        try:
            claims = self._jwt.decode(
                token,
                key.key,  # type: ignore[arg-type]
                algorithms=[alg],
                audience=issuer.audiences,
                issuer=issuer.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"], "verify_nbf": True, "strict_aud": False},
            )
        except ExpiredSignatureError:
            raise Unauthenticated("token expired; get a new one") from None
        except ImmatureSignatureError:
            raise Unauthenticated("token not valid yet (nbf or iat in the future)") from None
        except InvalidAudienceError:
            raise Unauthenticated("token was issued for another audience, not this server") from None
        except InvalidIssuerError:
            raise Unauthenticated("the token's issuer is not trusted by this server") from None
        except MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the required claim {exc.claim!r}") from None
        except InvalidSignatureError:
            raise Unauthenticated("token signature does not verify") from None
        except (InvalidAlgorithmError, InvalidKeyError):
            raise Unauthenticated("token algorithm does not fit the issuer's key") from None
        except PyJWTError:
            raise Unauthenticated("malformed token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            raise Unauthenticated("token lacks a usable 'sub' claim")
        if issuer.tenant_id is not None and claims.get("tid") != issuer.tenant_id:
            raise Unauthenticated("token is from another Entra ID tenant")
        scopes = {*_words(claims.get("scope")), *_words(claims.get("scp"))}
        roles = set(_words(claims.get("roles")))
        if issuer.roles_as_scopes:
            scopes |= roles
        jti = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        clients = ("client_id", "azp", "appid")
        client = next((claims[c] for c in clients if isinstance(claims.get(c), str)), None)
        exp = claims.get("exp")
        return Principal(
            sub=sub,
            issuer=issuer.issuer,
            scopes=frozenset(scopes),
            roles=frozenset(roles),
            token_id=jti,
            client_id=client,
            expires_at=int(exp) if isinstance(exp, int | float) else None,
        )


class PrincipalAccessToken(AccessToken):
    """The SDK's `AccessToken` carrying our verified `Principal` (extra fields stay server-side)."""

    principal: Any = None


class SdkTokenVerifier:
    """The SDK `TokenVerifier` for HTTP: failures become `None` (the SDK answers 401) and a log line."""

    def __init__(self, authority: TokenAuthority) -> None:
        self.authority = authority

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await self.authority.verify_async(token)
        except Unauthenticated as exc:
            log.info("bearer token refused: %s", exc.message)
            return None
        except BackendUnavailable as exc:
            log.warning("bearer token not checked: %s", exc.message)
            return None
        return PrincipalAccessToken(
            token="",  # never keep the raw token beyond verification
            client_id=principal.client_id or principal.sub,
            scopes=sorted(principal.scopes),
            expires_at=principal.expires_at,
            subject=principal.sub,
            claims={"iss": principal.issuer},
            principal=principal,
        )
