"""Fuzzing the token verifier and the JWKS parser (issue 14): whatever comes in, what comes out is a
`Principal`, a list of keys, or a `MacroslowError` — never ValueError, RecursionError, KeyError,
TypeError, OverflowError or anything else a parser underneath might raise.

Tokens are signed for real (HS256, the configured secret), so hostile headers and claims get past
the signature into PyJWT's own claim checks and ours. Deterministic (derandomized, no example
database) and quick: a few seconds for the module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from mcp_server.auth.jws_mldsa import MLDSAJWSAlgorithm
from mcp_server.auth.principal import Principal
from mcp_server.auth.tokens import (
    MAX_TIMESTAMP,
    Issuer,
    SdkTokenVerifier,
    TokenAuthority,
    TrustedKey,
    _key_from_jwk,
)
from mcp_server.crypto import mldsa
from mcp_server.errors import MacroslowError

ISS = "https://fuzz.test.example"
AUD = "https://mcp.test.example/mcp"
SECRET = b"fuzz-shared-secret-" + b"0123456789abcdef" * 2

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def authority() -> TokenAuthority:
    issuer = Issuer(
        issuer=ISS,
        algorithms={"HS256", "RS256", "ML-DSA-65"},
        audiences=[AUD],
        static_keys=[TrustedKey(None, SECRET, {"HS256"})],
    )
    return TokenAuthority([issuer], leeway=30)


def hs256(header: bytes, payload: bytes) -> str:
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    return f"{signing_input}.{b64url(hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest())}"


def outcome(verifier: TokenAuthority, token: Any) -> Principal | MacroslowError:
    """`verify(token)`: a Principal or a MacroslowError; anything else fails the test as raised."""
    try:
        return verifier.verify(token)
    except MacroslowError as exc:
        assert exc.code in {"unauthenticated", "backend_unavailable"}, exc.code
        return exc


# -- strategies ----------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=16,
)
# JSON text no well-behaved encoder writes: bombs of depth and length, non-numbers, odd escapes.
hostile_json = st.one_of(
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 2000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.integers(1, 6000).map(lambda n: "-0." + "1" * n + "e-5"),
    st.integers(1, 400).map(lambda n: "1e" + "9" * n),
    st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "-1e400",
            "1e-400",
            '"\\ud800"',
            '"\\u0000"',
            '"' + "\\" * 3,
            '"unterminated',
            "[" * 5000,
            "]" * 10,
            "true",
            "null",
            "{}",
            "[1,]",
            "01",
            '"\\x41"',
        ]
    ),
)
now = int(time.time())
time_values = st.one_of(
    st.integers(now - 100, now + 100),
    st.floats(now - 100, now + 100),
    st.integers(-(2**64), 2**64),
    st.just(MAX_TIMESTAMP) | st.just(MAX_TIMESTAMP + 1) | st.just(0) | st.just(-1),
    st.integers(now - 100, now + 100).map(str),
    json_values,
)


def member(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A member's fuzzed value: one from `values`, any JSON value, or `...` (leave it out)."""
    return st.one_of(values, json_values, st.just(...))


@st.composite
def mutated(
    draw: st.DrawFn, valid: dict[str, Any], fuzzed: dict[str, st.SearchStrategy[Any]]
) -> dict[str, Any]:
    """`valid` with up to three of its members (or new ones) fuzzed: most of a well-formed token,
    so examples get past the early checks into PyJWT and the claim checks."""
    obj = dict(valid)
    for name in draw(st.lists(st.sampled_from(sorted(fuzzed)), max_size=3, unique=True)):
        value = draw(member(fuzzed[name]))
        if value is ...:
            obj.pop(name, None)
        else:
            obj[name] = value
    return obj


VALID_HEADER = {"alg": "HS256", "typ": "JWT"}
HEADER_FUZZ = {
    "alg": st.sampled_from(["HS256", "none", "RS256", "ML-DSA-65", "HS512", ""]),
    "kid": st.sampled_from(["k1", "../k", "k" * 129]),
    "typ": st.just("JWT"),
    "crit": st.just(["b64"]),
    "b64": st.booleans(),
}
VALID_CLAIMS = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 300, "iat": now, "nbf": now}
CLAIM_FUZZ = {
    "iss": st.just(ISS),
    "aud": st.sampled_from([AUD, [AUD], ["x", AUD]]),
    "sub": st.sampled_from(["alice", "", "s" * 300]),
    "exp": time_values,
    "nbf": time_values,
    "iat": time_values,
    "jti": st.text(max_size=8),
    "scope": st.text(max_size=30),
    "scp": st.lists(st.text(max_size=6), max_size=4),
    "roles": st.lists(st.text(max_size=6), max_size=4),
    "client_id": st.text(max_size=8),
}
headers = mutated(VALID_HEADER, HEADER_FUZZ)
claims = mutated(VALID_CLAIMS, CLAIM_FUZZ)


def json_object(members: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Every member fuzzed (or left out)."""
    fuzzed = {name: member(values) for name, values in members.items()}
    return st.fixed_dictionaries(fuzzed).map(lambda d: {k: v for k, v in d.items() if v is not ...})


def with_raw_member(obj: dict[str, Any], raw: str) -> bytes:
    """`obj` as JSON text with one more member whose value is the raw (possibly invalid) `raw`."""
    text = json.dumps(obj)
    body = text[:-1] + (", " if len(text) > 2 else "") + '"zz": ' + raw + "}"
    return body.encode()


# -- tokens ---------------------------------------------------------------------------------------------


@FUZZ
@given(header=headers, payload=claims)
def test_signed_tokens_with_arbitrary_headers_and_claims(
    header: dict[str, Any], payload: dict[str, Any]
) -> None:
    verifier = authority()
    token = hs256(json.dumps(header).encode(), json.dumps(payload).encode())
    result = outcome(verifier, token)
    event("accepted" if isinstance(result, Principal) else str(result)[:60])
    if isinstance(result, Principal):
        for name in ("exp", "nbf", "iat"):  # accepted only with JSON numbers in range
            if name in payload:
                value = payload[name]
                assert not isinstance(value, bool) and isinstance(value, int | float), (name, value)
                assert 0 <= value <= MAX_TIMESTAMP
        assert isinstance(result.expires_at, int)
        deadline = verifier.deadline(result)
        assert deadline == result.expires_at + 30
        assert [entry.deadline for entry in verifier._cache.values()] == [deadline]
        # the SDK is told the same deadline, as the int it compares with time.time()
        access = anyio.run(SdkTokenVerifier(verifier).verify_token, token)
        assert access is not None and access.expires_at == deadline


@FUZZ
@given(
    header=headers,
    payload=claims,
    raw=hostile_json,
    where=st.sampled_from(["header", "payload"]),
)
def test_signed_tokens_with_hostile_json(
    header: dict[str, Any], payload: dict[str, Any], raw: str, where: str
) -> None:
    header_bytes = with_raw_member(header, raw) if where == "header" else json.dumps(header).encode()
    payload_bytes = with_raw_member(payload, raw) if where == "payload" else json.dumps(payload).encode()
    outcome(authority(), hs256(header_bytes, payload_bytes))


@FUZZ
@given(header=st.binary(max_size=200), payload=st.binary(max_size=400), signature=st.binary(max_size=80))
def test_tokens_of_arbitrary_bytes(header: bytes, payload: bytes, signature: bytes) -> None:
    verifier = authority()
    outcome(verifier, f"{b64url(header)}.{b64url(payload)}.{b64url(signature)}")
    outcome(verifier, hs256(header, payload))


@FUZZ
@given(
    token=st.one_of(
        st.text(max_size=300),
        st.lists(st.text(alphabet="AZaz09-_=.+/!\\ \u00e9\ud800", max_size=40), max_size=6).map(".".join),
        st.binary(max_size=100),
        json_values,
    )
)
def test_arbitrary_values_as_tokens(token: Any) -> None:
    outcome(authority(), token)


# -- JWKS ------------------------------------------------------------------------------------------------


def _real_jwks() -> list[dict[str, Any]]:
    """One real public JWK of each kind, as a base for mutation (to reach past the first check)."""
    return [
        RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048).public_key(), as_dict=True),
        ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True),
        OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True),
        MLDSAJWSAlgorithm.to_jwk(mldsa.generate(mldsa.Algorithm.ML_DSA_65), as_dict=True),
    ]


REAL_JWKS = _real_jwks()
b64_values = st.binary(max_size=80).map(b64url)
JWK_FUZZ = {
    "kty": st.sampled_from(["RSA", "EC", "OKP", "AKP", "oct", "rsa"]),
    "kid": st.sampled_from(["k1", "k/1"]),
    "use": st.sampled_from(["sig", "enc"]),
    "alg": st.sampled_from(["RS256", "ES256", "EdDSA", "ML-DSA-65", "ML-DSA-44", "HS256", "none"]),
    "crv": st.sampled_from(["P-256", "P-384", "P-521", "Ed25519", "X25519", "secp256k1"]),
    "n": b64_values,
    "e": st.sampled_from(["AQAB", "AA", "Aw", ""]) | b64_values,
    "x": b64_values,
    "y": b64_values,
    "pub": b64_values,
    "d": b64_values,
    "k": b64_values,
    "priv": b64_values,
}
jwk_entries = st.one_of(
    st.sampled_from(REAL_JWKS).flatmap(lambda real: mutated(real, JWK_FUZZ)),  # a real key, altered
    json_object(JWK_FUZZ),
    json_values,
)


def jwks_issuer() -> Issuer:
    return Issuer(
        issuer=ISS,
        algorithms={"RS256", "ES256", "EdDSA", "ML-DSA-65"},
        audiences=[AUD],
        jwks_url="http://127.0.0.1:9/unused",
    )


def parse(body: bytes) -> list[TrustedKey] | MacroslowError:
    try:
        keys = jwks_issuer()._parse_jwks(body)
    except MacroslowError as exc:
        assert exc.code in {"invalid_document", "request_too_large"}, exc.code
        return exc
    assert all(isinstance(k, TrustedKey) and k.algorithms for k in keys)
    return keys


@settings(FUZZ, max_examples=100)
@given(entries=st.lists(jwk_entries, max_size=6))
def test_jwks_documents_with_arbitrary_keys(entries: list[Any]) -> None:
    for entry in entries:
        key = _key_from_jwk(entry)  # an entry is a key or None, never an exception
        assert key is None or isinstance(key, TrustedKey)
        event("a key" if key is not None else "not a key")
    parse(json.dumps({"keys": entries}).encode())


def test_jwks_real_keys_are_all_read() -> None:
    """The mutation base is sound: unmutated, every real key is usable."""
    keys = parse(json.dumps({"keys": REAL_JWKS}).encode())
    assert isinstance(keys, list) and len(keys) == len(REAL_JWKS)


@FUZZ
@given(
    document=st.one_of(json_values, st.dictionaries(st.sampled_from(["keys", "k"]), json_values)),
    raw=hostile_json,
    where=st.sampled_from(["alone", "member", "key"]),
)
def test_jwks_hostile_documents(document: Any, raw: str, where: str) -> None:
    parse(json.dumps(document).encode())
    if where == "alone":
        parse(raw.encode())
    elif where == "member":
        parse(with_raw_member({"keys": []}, raw))
    else:
        parse(b'{"keys": [' + with_raw_member(REAL_JWKS[0], raw) + b"]}")


@FUZZ
@given(body=st.binary(max_size=300))
def test_jwks_of_arbitrary_bytes(body: bytes) -> None:
    parse(body)
