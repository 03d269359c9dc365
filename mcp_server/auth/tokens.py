"""Bearer token verification: one `TokenAuthority` for every transport.

A token is accepted only when all of this holds, checked in this order:

1. at most 16 KiB of ASCII, three base64url parts; header and claims are JSON objects within the
   bounds below (depth, number length), the header's `alg` a string that is not `none`;
2. `kid`, when present, is 1-128 characters of `A-Z a-z 0-9 . _ -` (nothing path- or SQL-like);
3. its (unverified) `iss` names a configured issuer; the header `alg` is on that issuer's allow-list;
   the registered time claims `exp`, `nbf`, `iat` are JSON numbers from 0 to the year 9999 (a
   string, boolean, NaN or overflowing number is refused, never coerced as PyJWT's `int()` would);
4. a key of that issuer verifies it: found by `kid` (a JWKS refetch at most once per cooldown for an
   unknown `kid`), or the issuer's only key for that algorithm; the key's type must fit `alg`;
5. PyJWT checks the signature and the claims: `exp`, `iss`, `aud` required; `exp`, `nbf` and `iat`
   with the leeway; `aud` must be this server's audience; HMAC secrets shorter than 32 bytes refused;
6. a `sub` claim is present; for Entra ID issuers with `tenant_id`, `tid` matches.

Verified tokens are cached (keyed by their SHA-256) until `exp` + leeway, the same instant a fresh
verification would refuse them, so each is verified once; the cache holds at most `CACHE_ENTRIES`
principals and `CACHE_BYTES` of (estimated) memory, least recently used first out. The SDK's bearer
middleware is told the same deadline (`SdkTokenVerifier`), so HTTP and stdio agree on the leeway.
Failures raise `Unauthenticated` with a reason that names no token content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import logging
import re
import threading
import time
import urllib.parse
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

from mcp_server import untrusted_json
from mcp_server.auth import local_issuer
from mcp_server.auth.jws_mldsa import ALGORITHMS as MLDSA_JWS
from mcp_server.auth.jws_mldsa import MLDSAJWSAlgorithm
from mcp_server.auth.principal import Principal
from mcp_server.crypto import mldsa
from mcp_server.errors import (
    BackendUnavailable,
    InvalidDocument,
    KeyStoreError,
    MacroslowError,
    RequestTooLarge,
    Unauthenticated,
)
from mcp_server.settings import IssuerConfig, Settings

log = logging.getLogger(__name__)

# Bounds on what a caller (a token) or an identity provider (a JWKS document) can make us parse.
MAX_TOKEN_BYTES = 16 * 1024  # the whole compact JWS, checked before anything is decoded
MAX_TOKEN_DEPTH = 16  # nesting of the header and of the claims (Keycloak's resource_access: 4)
MAX_NUMBER_DIGITS = 32  # the longest number literal in a header, claims or a JWKS
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z: the latest exp, nbf or iat accepted
MAX_JWKS_BYTES = 1024 * 1024
MAX_JWKS_DEPTH = 16
MAX_JWKS_KEYS = 100
JWKS_FETCH_SECONDS = 10  # the whole download, however slowly the server trickles it
CACHE_ENTRIES = 10_000  # verified tokens remembered
CACHE_BYTES = 32 * 1024 * 1024  # and the (estimated) memory their principals may take
_KID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
TIME_CLAIMS = ("exp", "nbf", "iat")

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
        """Replace the JWKS keys with a fresh download; on any failure keep the keys known so far."""
        assert self.jwks_url is not None
        self.fetches += 1
        try:
            keys = self._parse_jwks(_download(self.jwks_url))
        except (OSError, http.client.HTTPException, ValueError, InvalidDocument, RequestTooLarge) as exc:
            reason = exc.message if isinstance(exc, MacroslowError) else type(exc).__name__
            log.warning("JWKS fetch from %s failed: %s", self.jwks_url, reason)
            if not self._jwks:
                raise BackendUnavailable("cannot fetch the token issuer's keys; try again later") from None
            return
        self._jwks = keys
        self._fetched_at = time.monotonic()

    def _parse_jwks(self, body: bytes) -> list[TrustedKey]:
        document = untrusted_json.loads(
            body,
            max_bytes=MAX_JWKS_BYTES,
            max_depth=MAX_JWKS_DEPTH,
            max_number_digits=MAX_NUMBER_DIGITS,
            what="JWKS document",
        )
        listed = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(listed, list):
            raise InvalidDocument("JWKS document has no 'keys' list")
        if len(listed) > MAX_JWKS_KEYS:
            raise InvalidDocument(f"JWKS document has more than {MAX_JWKS_KEYS} keys")
        keys: list[TrustedKey] = []
        for jwk in listed:
            parsed = _key_from_jwk(jwk)
            if parsed is not None:
                parsed.algorithms &= self.algorithms
                if parsed.algorithms:
                    keys.append(parsed)
        return keys

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


def _download(url: str) -> bytes:
    """The body at `url`: at most `MAX_JWKS_BYTES`, within `JWKS_FETCH_SECONDS` in all (a socket
    timeout alone would let a server trickle a byte every few seconds for hours)."""
    deadline = time.monotonic() + JWKS_FETCH_SECONDS
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (configured http(s) URL)
        declared = response.headers.get("Content-Length", "")
        if declared.isdecimal() and int(declared) > MAX_JWKS_BYTES:
            raise InvalidDocument(f"JWKS document is larger than {MAX_JWKS_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(64 * 1024):
            size += len(chunk)
            if size > MAX_JWKS_BYTES:
                raise InvalidDocument(f"JWKS document is larger than {MAX_JWKS_BYTES} bytes")
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"JWKS download took longer than {JWKS_FETCH_SECONDS} s")
    if declared.isdecimal() and size != int(declared):
        raise InvalidDocument("JWKS document ended before its Content-Length")  # a truncated body
    return b"".join(chunks)


def _key_from_jwk(jwk: Any) -> TrustedKey | None:
    """A key of a JWKS entry, or None for an entry that is unusable, unfit or malformed."""
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not _KID.fullmatch(kid)):
        return None
    kty = jwk.get("kty")
    if not isinstance(kty, str):
        return None
    try:
        if kty == "AKP":
            key: object = MLDSAJWSAlgorithm.from_jwk(jwk)
        elif kty == "oct":
            return None  # symmetric keys are never taken from a JWKS
        else:
            key = jwt.PyJWK(jwk).key
    except Exception:  # untrusted input into PyJWT and cryptography, which raise many kinds for it
        # (ValueError, TypeError, KeyError, NotImplementedError for "alg": "none", ...): not a key
        return None
    algorithms = algorithms_for(key)
    if isinstance(jwk.get("alg"), str):
        algorithms &= {jwk["alg"]}
    return TrustedKey(kid, key, algorithms)


def _issuer_from_config(cfg: IssuerConfig, settings: Settings) -> Issuer:
    unknown = set(cfg.algorithms) - SUPPORTED
    if unknown or "none" in cfg.algorithms:
        raise ConfigurationError(f"issuer {cfg.issuer}: unsupported algorithms {sorted(unknown)}")
    if cfg.jwks_url is not None and urllib.parse.urlsplit(cfg.jwks_url).scheme not in {"http", "https"}:
        raise ConfigurationError(f"issuer {cfg.issuer}: jwks_url must be an http(s) URL")
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


def _segment(part: str, what: str) -> Any:
    """One base64url part of a compact JWS, decoded and parsed as bounded JSON.

    At least as strict as PyJWT's own decoding (alphabet, at most two `=`), so the bytes PyJWT
    parses again when it verifies are exactly the bytes checked here."""
    stripped = part.rstrip("=")
    if not _B64URL.fullmatch(part) or len(stripped) % 4 == 1 or (stripped != part and len(part) % 4):
        raise Unauthenticated("malformed token: not a signed JWT")
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
        return untrusted_json.loads(
            raw,
            max_bytes=MAX_TOKEN_BYTES,
            max_depth=MAX_TOKEN_DEPTH,
            max_number_digits=MAX_NUMBER_DIGITS,
            what=what,
            unique_keys=True,  # RFC 7519 section 4: a claim named twice may be refused, and is
        )
    except binascii.Error:
        raise Unauthenticated("malformed token: not a signed JWT") from None
    except (InvalidDocument, RequestTooLarge) as exc:
        problem = exc.message.removeprefix("line 1: ")  # a JWS part has one line
        raise Unauthenticated(f"malformed token: {problem}") from None


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWS, not yet verified, each a JSON object within bounds."""
    parts = token.split(".")
    if not token.isascii() or len(parts) != 3 or not _B64URL.fullmatch(parts[2]):
        raise Unauthenticated("malformed token: not a signed JWT")
    header = _segment(parts[0], "token header")
    claims = _segment(parts[1], "token payload")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Unauthenticated("malformed token: not a signed JWT")
    return header, claims


def _json_type(value: object) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else "a number"


def _check_time_claims(claims: dict[str, Any]) -> None:
    """`exp`, `nbf` and `iat`, where present, are JSON numbers (RFC 7519 NumericDate) in range.

    PyJWT would coerce them with `int()`: a string "1700000000" would pass its check, and we would
    have no expiry to bound the cache with. Refused here, by name, never echoing the value."""
    for name in TIME_CLAIMS:
        if name not in claims or (name == "exp" and claims[name] is None):
            continue  # a missing (or null) exp is PyJWT's 'lacks the required claim'
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unauthenticated(
                f"token claim {name!r} must be a JSON number of seconds since 1970, not {_json_type(value)}"
            )
        if not 0 <= value <= MAX_TIMESTAMP:  # finite: the parser refuses NaN and Infinity
            raise Unauthenticated(f"token claim {name!r} is out of range (0 to the year 9999)")


@dataclass(frozen=True)
class _Cached:
    principal: Principal
    deadline: float  # exp + leeway: from this instant on the token is refused
    weight: int  # estimated bytes


def _weight(principal: Principal) -> int:
    """Roughly the memory a cached principal holds: every string it took from the token, with the
    overhead of a str object and a set slot each. Everything here came from a <= 16 KiB token, but
    thousands of short scopes in one token take far more memory than the token did."""
    strings = [principal.sub, principal.token_id or "", principal.client_id or ""]
    strings += [*principal.scopes, *principal.roles]
    return 512 + sum(len(s) + 96 for s in strings)


class TokenAuthority:
    """Verifies bearer tokens against the configured issuers; returns a `Principal` or raises."""

    def __init__(
        self,
        issuers: list[Issuer],
        leeway: int = 30,
        *,
        cache_entries: int = CACHE_ENTRIES,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self.leeway = leeway
        self.cache_entries = cache_entries
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_weight = 0
        self._purged_at = float("-inf")
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

    def deadline(self, principal: Principal) -> int | None:
        """The instant (epoch seconds) from which `principal`'s token is refused: exp + leeway."""
        return None if principal.expires_at is None else principal.expires_at + self.leeway

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified before, or None; raises if it has expired since."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            return None
        key = self._cache_key(token)
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if time.time() >= entry.deadline:  # what PyJWT decides: refused once exp <= now - leeway
                self._forget(key)
                raise Unauthenticated("token expired; get a new one")
            self._cache.move_to_end(key)
            return entry.principal

    def _forget(self, key: str) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self._cache_weight -= entry.weight

    def _remember(self, token: str, principal: Principal) -> None:
        """Cache a verified principal until its deadline, within the entry and memory bounds."""
        deadline = self.deadline(principal)
        if deadline is None:
            return  # cannot happen for a verified token (exp is required); never cache without one
        entry = _Cached(principal, float(deadline), _weight(principal))
        key = self._cache_key(token)
        with self._cache_lock:
            self._forget(key)
            self._cache[key] = entry
            self._cache_weight += entry.weight
            if len(self._cache) > self.cache_entries or self._cache_weight > self.cache_bytes:
                now = time.time()
                if now - self._purged_at >= 1:  # a full sweep at most once a second
                    self._purged_at = now
                    for stale in [k for k, e in self._cache.items() if now >= e.deadline]:
                        self._forget(stale)
                while len(self._cache) > self.cache_entries or self._cache_weight > self.cache_bytes:
                    self._forget(next(iter(self._cache)))  # least recently used

    def verify(self, token: str) -> Principal:
        """Return the token's principal, or raise `Unauthenticated` (or `BackendUnavailable`).

        May fetch a JWKS (blocking, bounded by `JWKS_FETCH_SECONDS`): async callers use `verify_async`.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("bearer token missing or longer than 16 KiB")
        principal = self.cached(token)
        if principal is not None:
            return principal
        principal = self._verify(token)
        self._remember(token, principal)
        return principal

    async def verify_async(self, token: str) -> Principal:
        """`verify` without blocking the event loop: cache hits inline, the rest in a worker thread."""
        import anyio.to_thread

        principal = self.cached(token)
        if principal is not None:
            return principal
        return await anyio.to_thread.run_sync(self.verify, token)

    def _verify(self, token: str) -> Principal:
        header, unverified = _unverified(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise Unauthenticated("unsigned tokens (alg none) are refused")
        if kid is not None and (not isinstance(kid, str) or not _KID.fullmatch(kid)):
            raise Unauthenticated("malformed key id (kid) in the token header")
        iss = unverified.get("iss")
        if not isinstance(iss, str):
            raise Unauthenticated("token lacks the required claim 'iss'")
        issuer = self.issuers.get(iss)
        if issuer is None:
            raise Unauthenticated("the token's issuer is not trusted by this server")
        if alg not in issuer.algorithms:
            raise Unauthenticated(f"algorithm {alg[:16]!r} is not allowed for this issuer")
        _check_time_claims(unverified)
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
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):  # checked above; the same bytes
            raise Unauthenticated("token lacks the required claim 'exp'")
        scopes = {*_words(claims.get("scope")), *_words(claims.get("scp"))}
        roles = set(_words(claims.get("roles")))
        if issuer.roles_as_scopes:
            scopes |= roles
        jti = claims.get("jti") if isinstance(claims.get("jti"), str) else None
        clients = ("client_id", "azp", "appid")
        client = next((claims[c] for c in clients if isinstance(claims.get(c), str)), None)
        return Principal(
            sub=sub,
            issuer=issuer.issuer,
            scopes=frozenset(scopes),
            roles=frozenset(roles),
            token_id=jti,
            client_id=client,
            expires_at=int(exp),  # as PyJWT compares it
        )


class PrincipalAccessToken(AccessToken):
    """The SDK's `AccessToken` carrying our verified `Principal` (extra fields stay server-side)."""

    principal: Any = None


class SdkTokenVerifier:
    """The SDK `TokenVerifier` for HTTP: failures become `None` (the SDK answers 401) and a log line.

    `AccessToken.expires_at` is the deadline (exp + leeway), not the token's `exp`: the SDK checks it
    without leeway, and stdio (which has no such check) must not accept what HTTP refuses."""

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
            # The SDK's BearerAuthBackend refuses a token once `expires_at < time.time()`, with no
            # leeway of its own: it is told exp + leeway, the deadline `TokenAuthority` enforces.
            expires_at=self.authority.deadline(principal),
            subject=principal.sub,
            claims={"iss": principal.issuer},
            principal=principal,
        )
