"""Adversarial tests for bearer token verification: `TokenAuthority` and everything it trusts.

Every refusal is checked for its exact reason (a distinctive part of the message in tokens.py) and
for what it must not say: neither the token nor any of its header or claim values.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import RSAAlgorithm

from mcp_server.auth import local_issuer
from mcp_server.auth.jws_mldsa import ALGORITHMS as MLDSA_JWS
from mcp_server.auth.jws_mldsa import MLDSAJWSAlgorithm
from mcp_server.auth.principal import Principal
from mcp_server.auth.tokens import (
    MAX_JWKS_BYTES,
    MAX_TOKEN_BYTES,
    ConfigurationError,
    Issuer,
    PrincipalAccessToken,
    SdkTokenVerifier,
    TokenAuthority,
    TrustedKey,
)
from mcp_server.crypto import mldsa
from mcp_server.errors import BackendUnavailable, Unauthenticated
from mcp_server.settings import IssuerConfig, Settings

AUD = "https://mcp.test.example/mcp"
ISS = "https://idp.test.example"
SUB = "alice-7f3a91c2"
SECRET = "hs256-shared-secret-" + "0123456789abcdef" * 2  # 52 bytes
DROP = object()  # a claim to leave out

# -- keys, tokens and helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa2: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey
    pem_dir: Path

    def pem(self, name: str) -> Path:
        return self.pem_dir / f"{name}.pem"

    def private(self, alg: str) -> Any:
        if alg.startswith("HS"):
            return SECRET
        return {"RS": self.rsa, "PS": self.rsa, "ES": self.ec, "Ed": self.ed}[alg[:2]]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """RSA keys are slow to make: once per module. PEM public keys are written for issuer configs."""
    made = Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa2=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
        pem_dir=tmp_path_factory.mktemp("pem"),
    )
    for name, key in (("rsa", made.rsa), ("ec", made.ec), ("ed", made.ed)):
        made.pem(name).write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return made


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MACROSLOW_* setting from the environment, and no proxy between urllib and the JWKS server."""
    import os

    for name in list(os.environ):
        if name.startswith("MACROSLOW_") or name.lower() in {"http_proxy", "https_proxy", "all_proxy"}:
            monkeypatch.delenv(name)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for ISS and AUD, each with a fresh jti (so no two tokens share a cache entry)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": SUB,
        "aud": AUD,
        "iat": now,
        "exp": now + 300,
        "jti": "jti-" + uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


ENCODER = jwt.PyJWT()
for _name, _alg in MLDSA_JWS.items():
    ENCODER._jws.register_algorithm(_name, _alg)


def sign(payload: dict[str, Any], key: Any, alg: str, **header: Any) -> str:
    """A token made by real PyJWT (with the ML-DSA algorithms registered)."""
    return ENCODER.encode(payload, key, algorithm=alg, headers=header or None)


def sign_raw(header: dict[str, Any], payload: dict[str, Any], key: Any, alg: str) -> str:
    """A token with exactly this header (PyJWT's encoder would refuse some of ours), signed for real."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    algorithm = MLDSA_JWS.get(alg) or jwt.PyJWS().get_algorithm_by_name(alg)
    signature = algorithm.sign(signing_input.encode(), algorithm.prepare_key(key))
    return f"{signing_input}.{b64url(signature)}"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _token_strings(token: str) -> set[str]:
    """Every string in the token's header (but its alg) and claims, as far as they decode."""
    found: set[str] = set()
    for index, part in enumerate(token.split(".")[:2]):
        try:
            obj = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        except (ValueError, RecursionError):
            continue
        if index == 0 and isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k != "alg"}  # 'not allowed' names the alg on purpose
        found.update(_strings(obj))
    return found


def assert_no_leak(text: str, token: object) -> None:
    values = {SUB}
    if isinstance(token, str):
        values.add(token)
        values.update(token.split("."))
        values.update(_token_strings(token))
    for value in values:
        if len(value) >= 6:
            assert value not in text, f"message leaks {value[:40]!r}"


def refused(authority: TokenAuthority, token: Any, reason: str, *, exact: bool = False) -> Unauthenticated:
    """`authority.verify(token)` raises Unauthenticated for `reason`, naming nothing of the token."""
    with pytest.raises(Unauthenticated) as info:
        authority.verify(token)
    error = info.value
    assert error.code == "unauthenticated"
    assert (error.message == reason) if exact else (reason in error.message), error.message
    assert error.details == {}
    assert_no_leak(str(error), token)
    return error


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "resource_url": AUD,
            "trust_local_issuer": False,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


def authority_for(make_settings: SettingsFactory, *issuers: IssuerConfig, **overrides: Any) -> TokenAuthority:
    return TokenAuthority.from_settings(make_settings(issuers=list(issuers), **overrides))


def pem_issuer(keys: Keys, name: str, algorithms: list[str], **extra: Any) -> IssuerConfig:
    return IssuerConfig(issuer=ISS, algorithms=algorithms, public_key_files=[keys.pem(name)], **extra)


def hs_issuer(issuer: str = ISS, **extra: Any) -> IssuerConfig:
    return IssuerConfig(issuer=issuer, algorithms=["HS256"], hs256_secret=SECRET, **extra)  # type: ignore[arg-type]


@pytest.fixture
def rs256(keys: Keys, make_settings: SettingsFactory) -> TokenAuthority:
    return authority_for(make_settings, pem_issuer(keys, "rsa", ["RS256"]))


# -- 1. valid tokens of every kind ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "pem"), [("HS256", None), ("RS256", "rsa"), ("ES256", "ec"), ("EdDSA", "ed")]
)
def test_valid_token_accepted(keys: Keys, make_settings: SettingsFactory, alg: str, pem: str | None) -> None:
    cfg = hs_issuer() if pem is None else pem_issuer(keys, pem, [alg])
    authority = authority_for(make_settings, cfg)
    payload = claims(scope="maml:read maml:sign", jti="token-0042", client_id="cli-7")
    principal = authority.verify(sign(payload, keys.private(alg), alg))
    assert principal == Principal(
        sub=SUB,
        issuer=ISS,
        scopes=frozenset({"maml:read", "maml:sign"}),
        roles=frozenset(),
        token_id="token-0042",
        client_id="cli-7",
        expires_at=payload["exp"],
    )


@pytest.mark.parametrize("algorithm", ["ML-DSA-65", "HS256"])
def test_local_issuer_token_accepted(make_settings: SettingsFactory, algorithm: str) -> None:
    settings = make_settings(trust_local_issuer=True, local_issuer_algorithm=algorithm)
    authority = TokenAuthority.from_settings(settings)
    token = local_issuer.mint(
        settings, sub=SUB, scopes=["maml:read", "receipts:read"], ttl=300, roles=["Ops"]
    )
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    unverified = jwt.decode(token, options={"verify_signature": False})
    principal = authority.verify(token)
    assert principal == Principal(
        sub=SUB,
        issuer=settings.local_issuer,
        scopes=frozenset({"maml:read", "receipts:read"}),
        roles=frozenset({"Ops"}),
        token_id=unverified["jti"],
        client_id="macroslow-mcp-cli",
        expires_at=unverified["exp"],
    )


def test_local_issuer_token_from_another_home_refused(make_settings: SettingsFactory, tmp_path: Path) -> None:
    """Another installation's local issuer has the same `iss` but its own ML-DSA key."""
    ours = make_settings(trust_local_issuer=True)
    theirs = make_settings(trust_local_issuer=True, home=tmp_path / "elsewhere")
    authority = TokenAuthority.from_settings(ours)
    token = local_issuer.mint(theirs, sub=SUB, scopes=["maml:sign"], ttl=300)
    refused(authority, token, "no key of the token's issuer matches its key id and algorithm")


def test_audience_list_containing_ours_accepted(keys: Keys, rs256: TokenAuthority) -> None:
    token = sign(claims(aud=["https://other.example", AUD]), keys.rsa, "RS256")
    assert rs256.verify(token).sub == SUB


def test_configured_audience_replaces_the_default(keys: Keys, make_settings: SettingsFactory) -> None:
    authority = authority_for(make_settings, pem_issuer(keys, "rsa", ["RS256"], audience=["api://maml"]))
    assert authority.verify(sign(claims(aud="api://maml"), keys.rsa, "RS256")).sub == SUB
    refused(authority, sign(claims(aud=AUD), keys.rsa, "RS256"), "another audience")


# -- 2. alg none, and other headers without a usable alg -------------------------------------------


@pytest.mark.parametrize(
    ("header", "signature"),
    [
        ({"alg": "none", "typ": "JWT"}, ""),
        ({"alg": "None"}, ""),
        ({"alg": "NONE"}, ""),
        ({"alg": "nOnE"}, ""),
        ({"alg": "none"}, b64url(b"x" * 32)),
        ({"typ": "JWT"}, ""),
        ({"alg": 256}, ""),
        ({"alg": None}, ""),
    ],
)
def test_unsigned_token_refused(
    make_settings: SettingsFactory, header: dict[str, Any], signature: str
) -> None:
    authority = authority_for(make_settings, hs_issuer(), trust_local_issuer=True)
    token = f"{b64json(header)}.{b64json(claims())}.{signature}"
    refused(authority, token, "unsigned tokens (alg none) are refused")


# -- 3. algorithm confusion and issuer configuration ------------------------------------------------


def _hs256_with_pem_secret(keys: Keys) -> str:
    pem = keys.pem("rsa").read_bytes()
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def test_hs256_signed_with_rsa_public_pem_refused(keys: Keys, rs256: TokenAuthority) -> None:
    refused(rs256, _hs256_with_pem_secret(keys), "algorithm 'HS256' is not allowed for this issuer")


def test_hs256_signed_with_rsa_public_pem_refused_when_hs256_allowed(
    keys: Keys, make_settings: SettingsFactory
) -> None:
    """Even with HS256 allowed (and a real secret), the RSA key is never used as an HMAC secret."""
    cfg = pem_issuer(keys, "rsa", ["RS256", "HS256"], hs256_secret=SECRET)
    authority = authority_for(make_settings, cfg)
    refused(authority, _hs256_with_pem_secret(keys), "token signature does not verify")
    # both keys still work for what they are
    assert authority.verify(sign(claims(), keys.rsa, "RS256")).sub == SUB
    assert authority.verify(sign(claims(), SECRET, "HS256")).sub == SUB


@pytest.mark.parametrize(
    ("cfg", "reason"),
    [
        (
            {"algorithms": ["RS256", "HS256"], "public_key_files": ["rsa"]},
            "HS algorithms are allowed only with a shared secret",
        ),
        ({"algorithms": ["none"], "public_key_files": ["rsa"]}, "unsupported algorithms ['none']"),
        ({"algorithms": ["RS256", "XS1"], "public_key_files": ["rsa"]}, "unsupported algorithms ['XS1']"),
        ({"algorithms": ["HS256"], "hs256_secret": "x" * 31}, "an HMAC secret needs at least 32 bytes"),
        (
            {"algorithms": ["RS256"], "public_key_files": ["rsa"], "hs256_secret": SECRET},
            "a shared secret needs HS256 in algorithms",
        ),
        ({"algorithms": ["ES256"], "public_key_files": ["rsa"]}, "fits none of ['ES256']"),
        ({"algorithms": ["ES384"], "public_key_files": ["ec"]}, "fits none of ['ES384']"),
        ({"algorithms": ["RS256"], "public_key_files": ["missing"]}, "cannot read public key"),
        ({"algorithms": ["RS256"]}, "give jwks_url, public_key_files or hs256_secret"),
    ],
)
def test_issuer_configuration_error(
    keys: Keys, make_settings: SettingsFactory, cfg: dict[str, Any], reason: str
) -> None:
    fields = dict(cfg)
    fields["public_key_files"] = [keys.pem(name) for name in cfg.get("public_key_files", [])]
    with pytest.raises(ConfigurationError) as info:
        authority_for(make_settings, IssuerConfig(issuer=ISS, **fields))
    assert reason in str(info.value)
    assert SECRET not in str(info.value)


def test_issuer_configured_twice(keys: Keys, make_settings: SettingsFactory) -> None:
    with pytest.raises(ConfigurationError, match="an issuer is configured twice"):
        authority_for(make_settings, pem_issuer(keys, "rsa", ["RS256"]), hs_issuer())


def test_configured_issuer_may_not_impersonate_the_local_issuer(make_settings: SettingsFactory) -> None:
    local_iss = make_settings().local_issuer
    with pytest.raises(ConfigurationError, match="an issuer is configured twice"):
        authority_for(make_settings, hs_issuer(issuer=local_iss), trust_local_issuer=True)


# -- 4. algorithms off the allow-list ----------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "ES256", "EdDSA", "HS256", "ML-DSA-65"])
def test_algorithm_not_allowed(keys: Keys, rs256: TokenAuthority, alg: str) -> None:
    key = mldsa.generate(mldsa.Algorithm.ML_DSA_65) if alg == "ML-DSA-65" else keys.private(alg)
    refused(rs256, sign(claims(), key, alg), f"algorithm {alg!r} is not allowed for this issuer")


def test_mldsa_variant_not_allowed(make_settings: SettingsFactory) -> None:
    settings = make_settings(trust_local_issuer=True)
    authority = TokenAuthority.from_settings(settings)
    token = sign(claims(iss=settings.local_issuer), mldsa.generate(mldsa.Algorithm.ML_DSA_44), "ML-DSA-44")
    refused(authority, token, "algorithm 'ML-DSA-44' is not allowed for this issuer")


def test_allowed_algorithm_without_a_key_of_that_type(keys: Keys, make_settings: SettingsFactory) -> None:
    """ES256 is allowed, but the issuer's only key is RSA: no key fits."""
    authority = authority_for(make_settings, pem_issuer(keys, "rsa", ["RS256", "ES256"]))
    refused(authority, sign(claims(), keys.ec, "ES256"), "no key of the token's issuer matches")


def test_token_signed_by_another_key_of_the_right_type(keys: Keys, rs256: TokenAuthority) -> None:
    refused(rs256, sign(claims(), keys.rsa2, "RS256"), "token signature does not verify")


# -- 5./6. required claims, issuer and audience ---------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": DROP}, "token lacks the required claim 'exp'"),
        ({"aud": DROP}, "token lacks the required claim 'aud'"),
        ({"iss": DROP}, "token lacks the required claim 'iss'"),
        ({"iss": 42}, "token lacks the required claim 'iss'"),
        ({"iss": ["https://idp.test.example"]}, "token lacks the required claim 'iss'"),
        ({"sub": DROP}, "token lacks a usable 'sub' claim"),
        ({"sub": ""}, "token lacks a usable 'sub' claim"),
        ({"sub": 12345}, "malformed token"),  # PyJWT itself refuses a non-string sub
        ({"sub": ["alice"]}, "malformed token"),
        ({"sub": "s" * 257}, "token lacks a usable 'sub' claim"),
        ({"iss": "https://evil.example"}, "the token's issuer is not trusted by this server"),
        ({"iss": ISS + "/"}, "the token's issuer is not trusted by this server"),
        ({"iss": ISS.upper()}, "the token's issuer is not trusted by this server"),
        ({"aud": "https://other.example/mcp"}, "token was issued for another audience"),
        ({"aud": ["https://a.example", "https://b.example"]}, "token was issued for another audience"),
        ({"aud": AUD + "/"}, "token was issued for another audience"),
        ({"aud": 7}, "token was issued for another audience"),
        ({"aud": []}, "token lacks the required claim 'aud'"),
        ({"aud": None}, "token lacks the required claim 'aud'"),
        ({"exp": None}, "token lacks the required claim 'exp'"),
        ({"jti": 5}, "malformed token"),
    ],
)
def test_claims_refused(keys: Keys, rs256: TokenAuthority, overrides: dict[str, Any], reason: str) -> None:
    token = sign_raw({"alg": "RS256", "typ": "JWT"}, claims(**overrides), keys.rsa, "RS256")
    refused(rs256, token, reason, exact=reason == "malformed token")


def test_payload_not_an_object_refused(keys: Keys, rs256: TokenAuthority) -> None:
    token = sign_raw({"alg": "RS256"}, ["iss", ISS], keys.rsa, "RS256")  # type: ignore[arg-type]
    refused(rs256, token, "malformed token: not a signed JWT")


# -- 7. time: exp, nbf, iat and the leeway -----------------------------------------------------------


@pytest.mark.parametrize(
    ("offsets", "reason"),
    [
        ({"exp": -5}, None),  # within the 30 s leeway (margins of 5 s or more keep this exact)
        ({"exp": -25}, None),
        ({"nbf": 5}, None),
        ({"nbf": 25}, None),
        ({"iat": 20}, None),
        ({"exp": -35}, "token expired; get a new one"),
        ({"exp": -3600}, "token expired; get a new one"),
        ({"nbf": 35}, "token not valid yet"),
        ({"nbf": 3600}, "token not valid yet"),
        ({"iat": 3600}, "token not valid yet"),
    ],
)
def test_time_claims_with_leeway(
    keys: Keys, make_settings: SettingsFactory, offsets: dict[str, int], reason: str | None
) -> None:
    authority = authority_for(make_settings, pem_issuer(keys, "rsa", ["RS256"]), token_leeway_seconds=30)
    now = int(time.time())
    token = sign(claims(**{k: now + v for k, v in offsets.items()}), keys.rsa, "RS256")
    if reason is None:
        assert authority.verify(token).sub == SUB
    else:
        refused(authority, token, reason)


@pytest.mark.parametrize("field", ["exp", "nbf", "iat"])
def test_non_numeric_time_claim_refused(keys: Keys, rs256: TokenAuthority, field: str) -> None:
    token = sign(claims(**{field: "tomorrow"}), keys.rsa, "RS256")
    refused(rs256, token, f"token claim {field!r} must be a JSON number of seconds since 1970, not a string")


# -- JWKS server --------------------------------------------------------------------------------------


class JWKSServer:
    """What the loopback JWKS endpoint serves, and how often it was asked."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.document: Any = None  # served instead of {"keys": self.keys} when set
        self.raw: bytes | None = None  # served as is when set
        self.status = 200
        self.requests = 0
        self.gate = threading.Event()  # the server answers only once this is set
        self.gate.set()
        self.url = ""
        self._lock = threading.Lock()

    def body(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.document if self.document is not None else {"keys": self.keys}).encode()

    def count(self) -> None:
        with self._lock:
            self.requests += 1


@pytest.fixture(scope="module")
def jwks_endpoints() -> Iterator[tuple[str, dict[str, JWKSServer]]]:
    """One loopback HTTP server per module; each test serves its own JWKS under its own path."""
    served: dict[str, JWKSServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state = served.get(self.path)
            if state is None:
                self.send_error(404)
                return
            state.count()
            state.gate.wait(10)
            body = state.body()
            try:
                self.send_response(state.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stops reading after 1 MiB

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        for state in served.values():
            state.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def jwks(jwks_endpoints: tuple[str, dict[str, JWKSServer]]) -> Iterator[JWKSServer]:
    base, served = jwks_endpoints
    path = f"/{uuid.uuid4().hex}/.well-known/jwks.json"
    state = served[path] = JWKSServer()
    state.url = base + path
    yield state
    state.gate.set()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256", **extra}


@dataclass
class JWKSSetup:
    authority: TokenAuthority
    issuer: Issuer
    server: JWKSServer
    mldsa_key: mldsa.PrivateKey
    mldsa_kid: str


def jwks_setup(
    keys: Keys, make_settings: SettingsFactory, server: JWKSServer, cooldown: int = 60, **cfg: Any
) -> JWKSSetup:
    ml_key = mldsa.generate(mldsa.Algorithm.ML_DSA_65)
    ml_jwk = MLDSAJWSAlgorithm.to_jwk(ml_key.public_key(), as_dict=True)
    server.keys[:] = [rsa_jwk(keys.rsa, "k1"), ml_jwk]
    config = IssuerConfig(
        issuer=ISS, algorithms=cfg.pop("algorithms", ["RS256", "ML-DSA-65"]), jwks_url=server.url, **cfg
    )
    authority = authority_for(make_settings, config, jwks_refetch_cooldown_seconds=cooldown)
    return JWKSSetup(authority, authority.issuers[ISS], server, ml_key, ml_jwk["kid"])


@pytest.fixture
def jwks_issuer(keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer) -> JWKSSetup:
    return jwks_setup(keys, make_settings, jwks)


# -- 8. kid values that are path- or SQL-like ---------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "1' OR '1'='1",
        "a;DROP TABLE x",
        "k" * 200,
        "k" * 129,
        "",
        "k1\n",
        "k1 ",
        "k\u00e9y",
        "%2e%2e%2f",
        "k1/../k1",
        "k1\x00",
    ],
)
def test_malformed_kid_refused_without_fetch(keys: Keys, jwks_issuer: JWKSSetup, kid: Any) -> None:
    token = sign_raw({"alg": "RS256", "typ": "JWT", "kid": kid}, claims(), keys.rsa, "RS256")
    refused(jwks_issuer.authority, token, "malformed key id (kid) in the token header")
    assert jwks_issuer.issuer.fetches == 0
    assert jwks_issuer.server.requests == 0


@pytest.mark.parametrize("kid", [7, 0, ["k1"], {"kid": "k1"}, True])
def test_non_string_kid_refused_without_fetch(keys: Keys, jwks_issuer: JWKSSetup, kid: Any) -> None:
    token = sign_raw({"alg": "RS256", "typ": "JWT", "kid": kid}, claims(), keys.rsa, "RS256")
    refused(jwks_issuer.authority, token, "malformed key id (kid) in the token header")
    assert jwks_issuer.issuer.fetches == 0
    assert jwks_issuer.server.requests == 0


def test_longest_plain_kid_is_not_malformed(keys: Keys, jwks_issuer: JWKSSetup) -> None:
    """128 characters of the allowed set pass the kid check (and then find no key)."""
    token = sign(claims(), keys.rsa, "RS256", kid="k" * 128)
    refused(jwks_issuer.authority, token, "no key of the token's issuer matches")
    assert jwks_issuer.issuer.fetches == 1


# -- 9. JWKS: keys, bursts, rotation, failures ------------------------------------------------------


def test_jwks_rsa_and_mldsa_keys_verify(keys: Keys, jwks_issuer: JWKSSetup) -> None:
    rs = jwks_issuer.authority.verify(sign(claims(scope="maml:read"), keys.rsa, "RS256", kid="k1"))
    ml_token = sign(claims(scope="maml:sign"), jwks_issuer.mldsa_key, "ML-DSA-65", kid=jwks_issuer.mldsa_kid)
    ml = jwks_issuer.authority.verify(ml_token)
    assert (rs.sub, rs.issuer, rs.scopes) == (SUB, ISS, frozenset({"maml:read"}))
    assert (ml.sub, ml.issuer, ml.scopes) == (SUB, ISS, frozenset({"maml:sign"}))
    assert jwks_issuer.issuer.fetches == 1
    assert jwks_issuer.server.requests == 1


def test_jwks_kid_of_one_key_with_alg_of_another_refused(keys: Keys, jwks_issuer: JWKSSetup) -> None:
    token = sign(claims(), jwks_issuer.mldsa_key, "ML-DSA-65", kid="k1")
    refused(jwks_issuer.authority, token, "no key of the token's issuer matches its key id and algorithm")


def test_jwks_burst_of_unknown_kids_fetches_at_most_once_more(keys: Keys, jwks_issuer: JWKSSetup) -> None:
    authority, issuer = jwks_issuer.authority, jwks_issuer.issuer
    assert authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB
    assert issuer.fetches == 1
    tokens = [sign(claims(), keys.rsa2, "RS256", kid=secrets.token_hex(8)) for _ in range(200)]

    def attempt(token: str) -> str:
        try:
            authority.verify(token)
        except Unauthenticated as exc:
            return exc.message
        return "accepted"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = set(pool.map(attempt, tokens))
    assert outcomes == {"no key of the token's issuer matches its key id and algorithm"}
    assert issuer.fetches <= 2
    assert jwks_issuer.server.requests == issuer.fetches
    assert authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB


def test_jwks_key_rotation_picked_up_after_cooldown(
    keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer
) -> None:
    setup = jwks_setup(keys, make_settings, jwks, cooldown=1)
    assert setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB
    jwks.keys[:] = [rsa_jwk(keys.rsa2, "k2")]  # the issuer rotates k1 out, k2 in
    new = sign(claims(), keys.rsa2, "RS256", kid="k2")
    refused(setup.authority, new, "no key of the token's issuer matches")  # within the cooldown
    assert setup.issuer.fetches == 1
    time.sleep(1.1)
    assert setup.authority.verify(new).sub == SUB
    assert setup.issuer.fetches == 2
    refused(setup.authority, sign(claims(), keys.rsa, "RS256", kid="k1"), "no key of the token's issuer")
    assert jwks.requests == 2


def test_jwks_failure_after_success_keeps_the_old_keys(
    keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer
) -> None:
    setup = jwks_setup(keys, make_settings, jwks, cooldown=1)
    assert setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB
    jwks.status = 500
    time.sleep(1.1)
    refused(setup.authority, sign(claims(), keys.rsa2, "RS256", kid="k9"), "no key of the token's issuer")
    assert setup.issuer.fetches == 2
    assert setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("failure", ["down", "status 500", "not json", "too large", "not utf-8"])
def test_jwks_unavailable_at_first_use(
    keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer, failure: str
) -> None:
    setup = jwks_setup(keys, make_settings, jwks)
    if failure == "down":
        setup.issuer.jwks_url = f"http://127.0.0.1:{_unused_port()}/jwks.json"
    elif failure == "status 500":
        jwks.status = 500
    elif failure == "not json":
        jwks.raw = b"<html>login</html>"
    elif failure == "too large":
        jwks.raw = b'{"keys": [' + b" " * MAX_JWKS_BYTES + b"]}"
    else:
        jwks.raw = b'{"keys": ["\xff\xfe"]}'
    token = sign(claims(), keys.rsa, "RS256", kid="k1")
    with pytest.raises(BackendUnavailable) as info:
        setup.authority.verify(token)
    assert "cannot fetch the token issuer's keys" in info.value.message
    assert_no_leak(str(info.value), token)
    assert setup.issuer.fetches == 1


@pytest.mark.parametrize("document", [{"keys": []}, {"keys": [{}, 5, "k1", None, {"kty": 7}]}])
def test_jwks_without_usable_keys_refuses(keys: Keys, jwks_issuer: JWKSSetup, document: Any) -> None:
    jwks_issuer.server.document = document
    refused(
        jwks_issuer.authority, sign(claims(), keys.rsa, "RS256", kid="k1"), "no key of the token's issuer"
    )
    assert jwks_issuer.issuer.fetches == 1


@pytest.mark.parametrize("document", [{"nokeys": 1}, [], "keys", {"keys": {"k1": {}}}, {"keys": None}])
def test_jwks_that_is_not_a_key_set_is_a_failed_fetch(
    keys: Keys, jwks_issuer: JWKSSetup, document: Any
) -> None:
    """Not a JWKS at all (an error page in JSON, say): like a fetch that failed, not 'no keys'."""
    jwks_issuer.server.document = document
    with pytest.raises(BackendUnavailable, match="cannot fetch the token issuer's keys"):
        jwks_issuer.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1"))
    assert jwks_issuer.issuer.fetches == 1


@pytest.mark.parametrize("body", [b'{"keys": null}', b'{"keys": 5}', b"[" * 100_000])
def test_jwks_hostile_document_is_handled(keys: Keys, jwks_issuer: JWKSSetup, body: bytes) -> None:
    """A JWKS whose `keys` is not a list, or that nests too deeply to parse, yields no keys."""
    jwks_issuer.server.raw = body
    with pytest.raises((Unauthenticated, BackendUnavailable)):
        jwks_issuer.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1"))


def test_jwks_oct_key_ignored(keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer) -> None:
    """A symmetric key in a JWKS is never trusted, even where HS256 is allowed (with another secret)."""
    jwks_secret = secrets.token_bytes(32)
    setup = jwks_setup(keys, make_settings, jwks, algorithms=["RS256", "HS256"], hs256_secret=SECRET)
    jwks.keys.append({"kty": "oct", "k": b64url(jwks_secret), "kid": "sym", "alg": "HS256", "use": "sig"})
    assert setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB
    assert [k.kid for k in setup.issuer._jwks] == ["k1"]
    token = sign(claims(), jwks_secret, "HS256", kid="sym")
    refused(setup.authority, token, "token signature does not verify")


@pytest.mark.parametrize(
    "entry", ["use enc", "bad kid", "private AKP", "private RSA", "AKP of another variant"]
)
def test_jwks_unfit_entries_ignored(
    keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer, entry: str
) -> None:
    setup = jwks_setup(keys, make_settings, jwks)
    ml_rogue = mldsa.generate(mldsa.Algorithm.ML_DSA_65)
    if entry == "use enc":
        jwks.keys.append(rsa_jwk(keys.rsa2, "k2", use="enc"))
        token = sign(claims(), keys.rsa2, "RS256", kid="k2")
    elif entry == "AKP of another variant":  # ML-DSA-44 is not on the allow-list
        ml44 = mldsa.generate(mldsa.Algorithm.ML_DSA_44)
        jwks.keys.append(MLDSAJWSAlgorithm.to_jwk(ml44, as_dict=True))
        token = sign(claims(), ml44, "ML-DSA-44", kid=MLDSAJWSAlgorithm.to_jwk(ml44, as_dict=True)["kid"])
    elif entry == "bad kid":
        jwks.keys.append(rsa_jwk(keys.rsa2, "../k2"))
        token = sign(claims(), keys.rsa2, "RS256")  # no kid: 'the only RS256 key' must still be k1
    elif entry == "private AKP":
        ml_jwk = MLDSAJWSAlgorithm.to_jwk(ml_rogue, as_dict=True)
        jwks.keys.append({**ml_jwk, "priv": b64url(b"\x00" * 32)})
        token = sign(claims(), ml_rogue, "ML-DSA-65", kid=ml_jwk["kid"])
    else:
        jwks.keys.append({**RSAAlgorithm.to_jwk(keys.rsa2, as_dict=True), "kid": "k2"})
        token = sign(claims(), keys.rsa2, "RS256", kid="k2")
    assert setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB
    assert sorted(k.kid or "" for k in setup.issuer._jwks) == sorted(["k1", setup.mldsa_kid])
    reason = {
        "bad kid": "token signature does not verify",
        "AKP of another variant": "algorithm 'ML-DSA-44' is not allowed",
    }.get(entry, "no key of the token's issuer matches")
    refused(setup.authority, token, reason)


def test_jwks_key_alg_restricts_its_use(keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer) -> None:
    """A JWK with "alg": "RS384" verifies RS384 tokens only, though the issuer allows RS256 too."""
    setup = jwks_setup(keys, make_settings, jwks, algorithms=["RS256", "RS384"])
    jwks.keys.append(rsa_jwk(keys.rsa2, "k2", alg="RS384"))
    assert setup.authority.verify(sign(claims(), keys.rsa2, "RS384", kid="k2")).sub == SUB
    refused(setup.authority, sign(claims(), keys.rsa2, "RS256", kid="k2"), "no key of the token's issuer")
    refused(setup.authority, sign(claims(), keys.rsa, "RS384", kid="k1"), "no key of the token's issuer")


def test_concurrent_first_use_waits_for_the_jwks(keys: Keys, jwks_issuer: JWKSSetup) -> None:
    """A token checked while the first JWKS fetch is under way waits for its keys."""
    server = jwks_issuer.server
    server.gate.clear()
    results: list[object] = []
    first = threading.Thread(
        target=lambda: results.append(
            jwks_issuer.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1"))
        )
    )
    first.start()
    deadline = time.monotonic() + 5
    while server.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    release = threading.Timer(0.3, server.gate.set)
    release.start()
    try:
        second = jwks_issuer.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1"))
    finally:
        first.join(10)
        release.join()
    assert second.sub == SUB
    assert len(results) == 1


# -- 10. Entra ID ---------------------------------------------------------------------------------------

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ENTRA_ISS = f"https://login.microsoftonline.com/{TENANT}/v2.0"
ENTRA_AUD = "api://macroslow-mcp"


def entra(keys: Keys, make_settings: SettingsFactory, roles_as_scopes: bool = False) -> TokenAuthority:
    cfg = IssuerConfig(
        issuer=ENTRA_ISS,
        algorithms=["RS256"],
        audience=[ENTRA_AUD],
        public_key_files=[keys.pem("rsa")],
        tenant_id=TENANT,
        roles_as_scopes=roles_as_scopes,
    )
    return authority_for(make_settings, cfg)


def entra_claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": ENTRA_ISS,
        "aud": ENTRA_AUD,
        "tid": TENANT,
        "scp": "maml:read maml:sign",
        "roles": ["Reader"],
        "azp": "00000000-aaaa-bbbb-cccc-123456789abc",
        "ver": "2.0",
    }
    return claims(**{**base, **overrides})


@pytest.mark.parametrize("roles_as_scopes", [False, True])
def test_entra_token_scopes_and_roles(
    keys: Keys, make_settings: SettingsFactory, roles_as_scopes: bool
) -> None:
    authority = entra(keys, make_settings, roles_as_scopes)
    principal = authority.verify(sign(entra_claims(), keys.rsa, "RS256", kid="entra-kid-1"))
    expected = {"maml:read", "maml:sign"} | ({"Reader"} if roles_as_scopes else set())
    assert principal.scopes == frozenset(expected)
    assert principal.roles == frozenset({"Reader"})
    assert principal.issuer == ENTRA_ISS
    assert principal.client_id == "00000000-aaaa-bbbb-cccc-123456789abc"


@pytest.mark.parametrize("tid", ["11111111-2222-3333-4444-555555555555", DROP, TENANT.upper(), None, 7])
def test_entra_wrong_tenant_refused(keys: Keys, make_settings: SettingsFactory, tid: Any) -> None:
    token = sign(entra_claims(tid=tid), keys.rsa, "RS256")
    refused(entra(keys, make_settings), token, "token is from another Entra ID tenant")


def test_entra_token_for_the_default_audience_refused(keys: Keys, make_settings: SettingsFactory) -> None:
    token = sign(entra_claims(aud=AUD), keys.rsa, "RS256")
    refused(entra(keys, make_settings), token, "token was issued for another audience")


# -- 11. the verified-token cache ------------------------------------------------------------------------


def test_cached_token_is_not_verified_again(
    keys: Keys, rs256: TokenAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = sign(claims(scope="maml:read"), keys.rsa, "RS256")
    first = rs256.verify(token)

    def fail(_token: str) -> Principal:
        raise AssertionError("verified again")

    monkeypatch.setattr(rs256, "_verify", fail)
    assert rs256.verify(token) is first
    assert rs256.cached(token) is first
    with pytest.raises(AssertionError, match="verified again"):
        rs256.verify(sign(claims(), keys.rsa, "RS256"))  # another token is not served from the cache


def test_cached_token_refused_once_expired(
    keys: Keys, rs256: TokenAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = sign(claims(exp=int(time.time()) + 2), keys.rsa, "RS256")
    assert rs256.verify(token).sub == SUB
    later = time.time() + 2 + rs256.leeway + 10
    monkeypatch.setattr(rs256, "_verify", lambda _t: pytest.fail("the cache must decide"))
    monkeypatch.setattr(time, "time", lambda: later)
    refused(rs256, token, "token expired; get a new one")


@pytest.mark.parametrize(("age", "fresh"), [(100, False), (31, False), (5, True)])
def test_cache_entry_expiry_respects_leeway(rs256: TokenAuthority, age: int, fresh: bool) -> None:
    token = "opaque.cached.entry"
    principal = Principal(sub=SUB, issuer=ISS, expires_at=int(time.time()) - age)
    rs256._remember(token, principal)
    if fresh:
        assert rs256.verify(token) is principal
    else:
        refused(rs256, token, "token expired; get a new one")


# -- 12. tampering, size and garbage -------------------------------------------------------------------


def _parts(token: str) -> tuple[str, str, str]:
    header, payload, signature = token.split(".")
    return header, payload, signature


def _edit(part: str, **changes: Any) -> str:
    obj = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return b64json({**obj, **changes})


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


@pytest.fixture
def local_mldsa(make_settings: SettingsFactory) -> tuple[TokenAuthority, str]:
    settings = make_settings(trust_local_issuer=True)
    authority = TokenAuthority.from_settings(settings)
    return authority, local_issuer.mint(settings, sub=SUB, scopes=["maml:read"], ttl=300)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda h, p, s: (h, p, _flip(s, 0)), "token signature does not verify"),
        (lambda h, p, s: (h, p, _flip(s, len(s) // 2)), "token signature does not verify"),
        (lambda h, p, s: (h, p, _flip(s, len(s) - 1)), "token signature does not verify"),
        (lambda h, p, s: (h, p, s[:-4]), "token signature does not verify"),
        (lambda h, p, s: (h, p, s + "AAAA"), "token signature does not verify"),
        (lambda h, p, s: (h, p, ""), "token signature does not verify"),
        (lambda h, p, s: (h, _edit(p, sub="mallory"), s), "token signature does not verify"),
        (lambda h, p, s: (h, _edit(p, scope="maml:read maml:sign"), s), "token signature does not verify"),
        (lambda h, p, s: (h, _edit(p, exp=2**33), s), "token signature does not verify"),
        (lambda h, p, s: (_edit(h, typ="JWT"), p, s), "token signature does not verify"),
        (lambda h, p, s: (h, _flip(p, 0), s), "malformed token: token payload is not JSON"),
        (lambda h, p, s: (_flip(h, 0), p, s), "malformed token: token header is not JSON"),
        (lambda h, p, s: (h, p, s[:10] + "!" + s[11:]), "malformed token: not a signed JWT"),
    ],
)
def test_tampered_mldsa_token_refused(
    local_mldsa: tuple[TokenAuthority, str],
    tamper: Callable[[str, str, str], tuple[str, str, str]],
    reason: str,
) -> None:
    authority, token = local_mldsa
    tampered = ".".join(tamper(*_parts(token)))
    assert tampered != token
    refused(authority, tampered, reason)
    assert authority.verify(token).sub == SUB  # the original still verifies


def test_tampered_token_not_served_from_the_cache(local_mldsa: tuple[TokenAuthority, str]) -> None:
    authority, token = local_mldsa
    assert authority.verify(token).sub == SUB
    header, payload, signature = _parts(token)
    refused(authority, f"{header}.{_edit(payload, sub='mallory')}.{signature}", "does not verify")


def test_token_over_16_kib_refused(keys: Keys, rs256: TokenAuthority) -> None:
    token = sign(claims(pad="x" * MAX_TOKEN_BYTES), keys.rsa, "RS256")
    assert len(token) > MAX_TOKEN_BYTES
    refused(rs256, token, "bearer token missing or longer than 16 KiB")


def test_token_of_exactly_16_kib_is_checked(keys: Keys, rs256: TokenAuthority) -> None:
    payload = claims(pad="")
    pad = (MAX_TOKEN_BYTES - len(sign(payload, keys.rsa, "RS256"))) * 3 // 4
    while len(token := sign({**payload, "pad": "x" * pad}, keys.rsa, "RS256")) > MAX_TOKEN_BYTES:
        pad -= 1
    assert len(token) > MAX_TOKEN_BYTES - 4
    assert rs256.verify(token).sub == SUB


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "bearer token missing or longer than 16 KiB"),
        (None, "bearer token missing or longer than 16 KiB"),
        (b"a.b.c", "bearer token missing or longer than 16 KiB"),
        ("x" * (MAX_TOKEN_BYTES + 1), "bearer token missing or longer than 16 KiB"),
        ("abc", "malformed token: not a signed JWT"),
        ("a.b.c", "malformed token: not a signed JWT"),
        ("..", "malformed token: token header is not JSON"),
        ("a.b.c.d", "malformed token: not a signed JWT"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.", "malformed token: not a signed JWT"),
        ("\u00e9.\u00e9.\u00e9", "malformed token: not a signed JWT"),
        (b64url(b"[]") + "." + b64json({}) + ".", "malformed token: not a signed JWT"),
        (b64url(b"[" * 12_000) + "." + b64json({}) + ".", "token header is nested deeper than 16 levels"),
        (
            b64json({"alg": "RS256"}) + "." + b64url(b"[" * 12_000) + ".",
            "token payload is nested deeper than 16",
        ),
        ("\ud800.x.y", "malformed token: not a signed JWT"),
        ("eyJ\udcff.e30.", "malformed token: not a signed JWT"),
    ],
)
def test_garbage_refused(rs256: TokenAuthority, token: Any, reason: str) -> None:
    refused(rs256, token, reason)


# -- 13. the SDK's TokenVerifier -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sdk_verifier_returns_access_token_with_principal(keys: Keys, rs256: TokenAuthority) -> None:
    token = sign(claims(scope="maml:sign maml:read", client_id="cli-7"), keys.rsa, "RS256")
    access = await SdkTokenVerifier(rs256).verify_token(token)
    assert isinstance(access, PrincipalAccessToken)
    assert access.token == ""
    assert access.principal == rs256.verify(token)
    assert access.principal.sub == SUB
    assert (access.client_id, access.subject, access.scopes) == ("cli-7", SUB, ["maml:read", "maml:sign"])
    assert access.expires_at == access.principal.expires_at + rs256.leeway  # the SDK has no leeway
    assert token not in access.model_dump_json()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["garbage", "forged", "expired in cache"])
async def test_sdk_verifier_returns_none_for_bad_token(keys: Keys, rs256: TokenAuthority, kind: str) -> None:
    token = {"garbage": "a.b.c", "forged": sign(claims(), keys.rsa2, "RS256")}.get(kind, "cached.but.expired")
    if kind == "expired in cache":
        rs256._remember(token, Principal(sub=SUB, issuer=ISS, expires_at=1))
    assert await SdkTokenVerifier(rs256).verify_token(token) is None


@pytest.mark.anyio
async def test_sdk_verifier_returns_none_when_jwks_is_down(keys: Keys, jwks_issuer: JWKSSetup) -> None:
    jwks_issuer.issuer.jwks_url = f"http://127.0.0.1:{_unused_port()}/jwks.json"
    token = sign(claims(), keys.rsa, "RS256", kid="k1")
    assert await SdkTokenVerifier(jwks_issuer.authority).verify_token(token) is None
    assert jwks_issuer.issuer.fetches == 1


# -- 14. registered time claims are JSON numbers (issue 14) -------------------------------------------


@pytest.mark.parametrize("field", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("NOW", "a string"),  # a numeric string: PyJWT's int() would have taken it
        ("NOW.5", "a string"),
        (" NOW", "a string"),
        (True, "a boolean"),
        (False, "a boolean"),
        ([0], "an array"),
        ({"t": 0}, "an object"),
    ],
)
def test_time_claim_of_another_json_type_refused(
    keys: Keys, rs256: TokenAuthority, field: str, value: Any, kind: str
) -> None:
    now = str(int(time.time()))
    if isinstance(value, str):
        value = value.replace("NOW", now)
    token = sign(claims(**{field: value}), keys.rsa, "RS256")
    refused(rs256, token, f"token claim {field!r} must be a JSON number of seconds since 1970, not {kind}")


@pytest.mark.parametrize("field", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [-1, -1.5, 253_402_300_800, 10**30, 1e300])
def test_time_claim_out_of_range_refused(keys: Keys, rs256: TokenAuthority, field: str, value: Any) -> None:
    token = sign(claims(**{field: value}), keys.rsa, "RS256")
    refused(rs256, token, f"token claim {field!r} is out of range (0 to the year 9999)")


@pytest.mark.parametrize(
    ("literal", "reason"),
    [
        ("NaN", "token payload has NaN, which is not a JSON number"),
        ("Infinity", "token payload has Infinity, which is not a JSON number"),
        ("-Infinity", "token payload has -Infinity, which is not a JSON number"),
        ("1e400", "token payload has a number too large to represent"),
    ],
)
def test_time_claim_that_is_not_a_finite_number_refused(
    keys: Keys, rs256: TokenAuthority, literal: str, reason: str
) -> None:
    payload = json.dumps(claims(exp=0)).replace('"exp": 0', f'"exp": {literal}')
    signing_input = f"{b64json({'alg': 'RS256'})}.{b64url(payload.encode())}"
    key = RSAAlgorithm(RSAAlgorithm.SHA256)
    signature = key.sign(signing_input.encode(), keys.rsa)
    refused(rs256, f"{signing_input}.{b64url(signature)}", f"malformed token: {reason}")


def test_float_time_claims_accepted_and_exp_rounded_down(keys: Keys, rs256: TokenAuthority) -> None:
    now = int(time.time())
    principal = rs256.verify(sign(claims(exp=now + 300.9, nbf=now - 0.5, iat=now + 0.25), keys.rsa, "RS256"))
    assert principal.expires_at == now + 300  # as PyJWT compares it: int(exp)


def test_numeric_string_exp_is_not_cached_without_expiry(
    keys: Keys, rs256: TokenAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit's case: `"exp": "<numeric string>"` was accepted, cached with no expiry, and still
    served 45 s after it had expired. It is refused now, and nothing is cached for it."""
    token = sign(claims(exp=str(int(time.time()) + 2)), keys.rsa, "RS256")
    refused(rs256, token, "token claim 'exp' must be a JSON number")
    assert rs256._cache == {}
    later = time.time() + 2 + rs256.leeway + 45
    monkeypatch.setattr(time, "time", lambda: later)
    refused(rs256, token, "token claim 'exp' must be a JSON number")


# -- 15. the cache: never past exp + leeway, and bounded -------------------------------------------


def hs_authority(**cache: int) -> TokenAuthority:
    issuer = Issuer(
        issuer=ISS,
        algorithms={"HS256"},
        audiences=[AUD],
        static_keys=[TrustedKey(None, SECRET.encode(), {"HS256"})],
    )
    return TokenAuthority([issuer], leeway=30, **cache)


def test_cache_serves_until_exp_plus_leeway_and_not_an_instant_longer(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = hs_authority()
    exp = int(time.time()) + 60
    token = sign(claims(exp=exp), SECRET, "HS256")
    principal = authority.verify(token)
    assert authority._cache[authority._cache_key(token)].deadline == exp + 30
    monkeypatch.setattr(authority, "_verify", lambda _t: pytest.fail("the cache must decide"))
    monkeypatch.setattr(time, "time", lambda: exp + 30 - 0.001)
    assert authority.verify(token) is principal
    monkeypatch.setattr(time, "time", lambda: exp + 30)
    refused(authority, token, "token expired; get a new one")
    assert authority._cache == {}  # the expired entry is dropped, not kept until evicted


def test_cache_never_holds_a_principal_without_expiry() -> None:
    authority = hs_authority()
    authority._remember("opaque.no.exp", Principal(sub=SUB, issuer=ISS, expires_at=None))
    assert authority._cache == {}


def test_cache_entry_bound_evicts_the_least_recently_used() -> None:
    authority = hs_authority(cache_entries=20)
    tokens = [sign(claims(), SECRET, "HS256") for _ in range(60)]
    kept = authority.verify(tokens[0])
    for token in tokens[1:]:
        authority.verify(token)
        assert authority.cached(tokens[0]) is kept  # used all along: never the one evicted
    assert len(authority._cache) == 20


def test_cache_memory_bound_holds_for_tokens_with_thousands_of_scopes() -> None:
    """An attacker with a valid identity can mint many tokens, each with ~1,500 short scopes (about
    150 KB of strings once parsed from a 10 KB token): the cache's memory stays within its budget."""
    import tracemalloc

    budget = 1024 * 1024
    authority = hs_authority(cache_bytes=budget)
    scopes = " ".join(f"s{i:04}" for i in range(1500))
    tokens = [sign(claims(scope=scopes, jti=f"j{n}"), SECRET, "HS256") for n in range(40)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for token in tokens:
            assert len(authority.verify(token).scopes) == 1500
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert authority._cache_weight <= budget
    assert 1 <= len(authority._cache) < 40
    assert held < 2 * budget, held


def test_cache_over_its_bound_drops_expired_entries_first(monkeypatch: pytest.MonkeyPatch) -> None:
    authority = hs_authority(cache_entries=10)
    now = time.time()
    short = [sign(claims(exp=int(now) + 5), SECRET, "HS256") for _ in range(5)]
    long = [sign(claims(exp=int(now) + 3600), SECRET, "HS256") for _ in range(5)]
    for token in [*long, *short]:  # the long-lived ones are the oldest entries
        authority.verify(token)
    monkeypatch.setattr(time, "time", lambda: now + 60)
    authority._remember("one.more.entry", Principal(sub=SUB, issuer=ISS, expires_at=int(now) + 3600))
    assert len(authority._cache) == 6  # the 5 expired entries went; the 5 live and the new one stayed
    assert all(authority.cached(token) is not None for token in long)


# -- 16. bounds on what a token or a JWKS makes us parse ----------------------------------------------


def _raw_hs256(header: bytes, payload: bytes) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _payload_with(member: str) -> bytes:
    """Valid claims plus one more member, written as raw JSON text."""
    return json.dumps(claims())[:-1].encode() + b', "x": ' + member.encode() + b"}"


@pytest.mark.parametrize(
    ("header", "payload", "reason"),
    [
        (
            b'{"alg":"HS256"}',
            _payload_with("9" * 5000),
            "token payload has a number longer than 32 characters",
        ),
        (b'{"alg":"HS256"}', _payload_with("-" + "9" * 33), "token payload has a number longer than 32"),
        (b'{"alg":"HS256"}', _payload_with("0." + "1" * 40), "token payload has a number longer than 32"),
        (
            b'{"alg":"HS256"}',
            _payload_with("[" * 1000 + "]" * 1000),
            "token payload is nested deeper than 16",
        ),
        (b'{"alg":"HS256"}', _payload_with('{"a":' * 16 + "1" + "}" * 16), "token payload is nested deeper"),
        (b'{"alg":"HS256","x":' + b"9" * 5000 + b"}", b"{}", "token header has a number longer than 32"),
        (b'{"alg":"HS256","x":' + b"[" * 1000 + b"]" * 1000 + b"}", b"{}", "token header is nested deeper"),
        (b'{"alg":"HS256"}', b"\xff" + json.dumps(claims()).encode(), "token payload is not UTF-8"),
        (b'\xef\xbb\xbf{"alg":"HS256"}', json.dumps(claims()).encode(), "token header is not JSON"),
        (b'{"alg":"HS256","alg":"none"}', b"{}", "token header has the key 'alg' twice"),
        (b'{"alg":"HS256"}', _payload_with('1, "exp": 2'), "token payload has the key 'exp' twice"),
    ],
)
def test_token_json_bombs_refused_with_a_stable_reason(header: bytes, payload: bytes, reason: str) -> None:
    authority = hs_authority()
    error = refused(authority, _raw_hs256(header, payload), f"malformed token: {reason}")
    assert error.code == "unauthenticated"


def test_token_json_at_the_bounds_accepted() -> None:
    """15 levels inside the claims object (16 in all) and a 32-digit number are still fine."""
    authority = hs_authority()
    member = '{"a":' * 14 + "[" + "9" * 32 + "]" + "}" * 14
    assert authority.verify(_raw_hs256(b'{"alg":"HS256"}', _payload_with(member))).sub == SUB


@pytest.mark.parametrize("token", ["\u00e9" * 10, "a.\u00e9.c", "eyJ\u0661.e30.x", "a.b.c\u00a0"])
def test_non_ascii_token_refused_before_decoding(token: str) -> None:
    refused(hs_authority(), token, "malformed token: not a signed JWT", exact=True)


def test_max_token_bytes_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_server.auth import tokens

    authority = hs_authority()
    monkeypatch.setattr(tokens, "_unverified", lambda _t: pytest.fail("decoded an oversized token"))
    refused(authority, "a" * (MAX_TOKEN_BYTES + 1), "bearer token missing or longer than 16 KiB")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"keys": [' + b"[" * 100 + b"]" * 100 + b"]}", "is nested deeper than 16 levels"),
        (b'{"keys": [], "n": ' + b"7" * 5000 + b"}", "has a number longer than 32 characters"),
        (b'{"keys": [], "n": NaN}', "has NaN, which is not a JSON number"),
        (json.dumps({"keys": [{"kty": "RSA"}] * 101}).encode(), "has more than 100 keys"),
        (b"\xef\xbb\xbf" + json.dumps({"keys": []}).encode(), "is not JSON"),
    ],
)
def test_jwks_bombs_are_a_failed_fetch(
    keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer, body: bytes, problem: str, caplog: Any
) -> None:
    setup = jwks_setup(keys, make_settings, jwks)
    jwks.raw = body
    with pytest.raises(BackendUnavailable, match="cannot fetch the token issuer's keys"):
        setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1"))
    assert f"JWKS document {problem}" in caplog.text


def test_jwks_bomb_after_success_keeps_the_old_keys(
    keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer
) -> None:
    setup = jwks_setup(keys, make_settings, jwks, cooldown=1)
    assert setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB
    jwks.raw = b'{"keys": [' + b"[" * 50_000 + b"]}"
    time.sleep(1.1)
    refused(setup.authority, sign(claims(), keys.rsa2, "RS256", kid="k9"), "no key of the token's issuer")
    assert setup.issuer.fetches == 2
    assert setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB


def test_jwks_of_exactly_100_keys_accepted(
    keys: Keys, make_settings: SettingsFactory, jwks: JWKSServer
) -> None:
    setup = jwks_setup(keys, make_settings, jwks)
    jwks.keys.extend(rsa_jwk(keys.rsa2, f"other{n}") for n in range(98))
    assert setup.authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1")).sub == SUB
    assert len(setup.issuer._jwks) == 100


class RawHTTP:
    """A loopback server that answers every connection with `script(conn)`, for broken HTTP."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/jwks.json"
        self.script = script
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                with contextlib.suppress(OSError):
                    self.script(conn)

    def close(self) -> None:
        self.sock.close()


def _short_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + json.dumps({"keys": []}).encode())


def _garbage_status(conn: socket.socket) -> None:
    conn.sendall(b"HELLO THERE\r\n\r\n")


def _trickle(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
    for _ in range(40):
        conn.sendall(b" ")
        time.sleep(0.2)


@pytest.mark.parametrize(
    "script", [_short_body, _garbage_status, _trickle], ids=["short", "status", "trickle"]
)
def test_jwks_broken_http_is_a_failed_fetch(
    keys: Keys, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, script: Any
) -> None:
    """A body shorter than its Content-Length, a garbage status line (http.client.HTTPException, not
    OSError: it used to escape `verify`), or a server trickling a byte at a time past the deadline."""
    from mcp_server.auth import tokens

    monkeypatch.setattr(tokens, "JWKS_FETCH_SECONDS", 1)
    server = RawHTTP(script)
    try:
        cfg = IssuerConfig(issuer=ISS, algorithms=["RS256"], jwks_url=server.url)
        authority = authority_for(make_settings, cfg)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="cannot fetch the token issuer's keys"):
            authority.verify(sign(claims(), keys.rsa, "RS256", kid="k1"))
        assert time.monotonic() - started < 4
    finally:
        server.close()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://idp.example/jwks.json", "jwks.json"])
def test_jwks_url_must_be_http(make_settings: SettingsFactory, url: str) -> None:
    with pytest.raises(ConfigurationError, match="jwks_url must be an http"):
        authority_for(make_settings, IssuerConfig(issuer=ISS, algorithms=["RS256"], jwks_url=url))
