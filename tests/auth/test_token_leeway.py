"""The token leeway (`MACROSLOW_TOKEN_LEEWAY_SECONDS`) holds the same over HTTP and stdio.

The SDK's bearer middleware refuses a token once `AccessToken.expires_at < time.time()`, with no
leeway of its own; `SdkTokenVerifier` reports exp + leeway there, so a token the `TokenAuthority`
accepts (stdio, the HTTP scope gate) is not refused by the SDK a moment later, and the reverse.

Real servers in child processes; tokens from an HS256 issuer configured through the environment, so
`exp` can be set in the past (`token mint` refuses that). Margins are 5 s or more either side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from mcp_server.adapters import error_of
from tests.server.test_transports import INITIALIZE, SERVE, _env, start_server

pytestmark = [pytest.mark.subprocess]

ISS = "https://leeway.test.example"
AUD = "http://127.0.0.1:8000/mcp"  # the default resource URL, hence the default audience
SECRET = "leeway-test-shared-secret-" + "0123456789abcdef" * 2
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
VERIFY = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "verify_maml", "arguments": {"document": "x"}},
}


def _issuer_env(leeway: int) -> dict[str, str]:
    issuer = {"issuer": ISS, "algorithms": ["HS256"], "hs256_secret": SECRET}
    return {"MACROSLOW_ISSUERS": json.dumps([issuer]), "MACROSLOW_TOKEN_LEEWAY_SECONDS": str(leeway)}


def token(exp_offset: int) -> str:
    """A token of the configured issuer whose `exp` is `exp_offset` seconds from now."""
    now = int(time.time())
    claims = {"iss": ISS, "sub": "lee", "aud": AUD, "iat": now - 600, "exp": now + exp_offset}
    return jwt.encode({**claims, "scope": "maml:read"}, SECRET, algorithm="HS256")


def _post(url: str, body: object, bearer: str) -> httpx2.Response:
    headers = {**HEADERS, "Authorization": f"Bearer {bearer}", "mcp-protocol-version": "2025-06-18"}
    return httpx2.post(f"{url}/mcp", content=json.dumps(body), headers=headers, timeout=10)


def _http_status(url: str, bearer: str) -> tuple[int, int]:
    """(initialize, tools/call verify_maml) status codes: the SDK's check, then the scope gate's too."""
    return _post(url, INITIALIZE, bearer).status_code, _post(url, VERIFY, bearer).status_code


@pytest.fixture
def http_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from start_server(tmp_path, "streamable-http", env=_issuer_env(request.param))


@pytest.mark.parametrize("http_server", [30], indirect=True)
def test_http_honours_the_leeway(http_server: str) -> None:
    assert _http_status(http_server, token(-5)) == (200, 200)  # expired 5 s ago: within 30 s
    assert _http_status(http_server, token(-40)) == (401, 401)  # past exp + leeway
    assert _http_status(http_server, token(300)) == (200, 200)


@pytest.mark.parametrize("http_server", [0], indirect=True)
def test_http_without_leeway_refuses_right_after_exp(http_server: str) -> None:
    assert _http_status(http_server, token(-1)) == (401, 401)
    assert _http_status(http_server, token(300)) == (200, 200)


@pytest.mark.parametrize("http_server", [30], indirect=True)
def test_http_cached_token_refused_at_exp_plus_leeway(http_server: str) -> None:
    """Accepted (and cached) inside the leeway, refused once exp + leeway passes: no cache outlives it."""
    bearer = token(-24)  # 6 s of leeway left
    assert _http_status(http_server, bearer) == (200, 200)
    time.sleep(7)
    assert _http_status(http_server, bearer) == (401, 401)


async def _stdio_outcome(home: Path, bearer: str, leeway: int) -> str:
    env: dict[str, Any] = {**_env(home), **_issuer_env(leeway), "MACROSLOW_TOKEN": bearer}
    params = StdioServerParameters(command=SERVE[0], args=[*SERVE[1:], "--transport", "stdio"], env=env)
    async with Client(params) as client:
        result = await client.call_tool("verify_maml", {"document": "x"})
    error = error_of(result)
    return "ok" if not result.is_error else str((error or {}).get("code"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("leeway", "exp_offset", "outcome"),
    [(30, -5, "ok"), (30, -40, "unauthenticated"), (0, -1, "unauthenticated")],
    ids=["30s-leeway-5s-late", "30s-leeway-40s-late", "no-leeway-1s-late"],
)
async def test_stdio_honours_the_leeway(tmp_path: Path, leeway: int, exp_offset: int, outcome: str) -> None:
    assert await _stdio_outcome(tmp_path / "home", token(exp_offset), leeway) == outcome
