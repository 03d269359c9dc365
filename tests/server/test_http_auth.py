"""Authentication and scopes over real HTTP (a server subprocess) and stdio, with real clients."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from sqlalchemy import text

from mcp_server.adapters import error_of
from mcp_server.auth import local_issuer
from mcp_server.db import open_engine
from mcp_server.home import example_workflow
from mcp_server.settings import Settings
from tests.server.test_transports import INITIALIZE, SERVE, _env, mint, start_server

pytestmark = [pytest.mark.subprocess]


HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def call(name: str, arguments: dict[str, object], id_: int = 2) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": id_,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from start_server(tmp_path, "streamable-http", env={"MACROSLOW_TOKEN_LEEWAY_SECONDS": "0"})


def post(url: str, body: object, token: str | None = None, **headers: str) -> httpx2.Response:
    extra = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.post(
        f"{url}/mcp", content=json.dumps(body), headers={**HEADERS, **extra, **headers}, timeout=10
    )


def test_no_token_gets_401_with_resource_metadata(server: str) -> None:
    response = post(server, INITIALIZE)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    metadata_url = challenge.split('resource_metadata="')[1].split('"')[0]
    assert metadata_url == "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"
    # The metadata document is served (RFC 9728) and names this resource.
    path = metadata_url.removeprefix("http://127.0.0.1:8000")
    metadata = httpx2.get(f"{server}{path}", timeout=10).json()
    assert metadata["resource"] == "http://127.0.0.1:8000/mcp"
    assert metadata["authorization_servers"]


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."],
    ids=["garbage", "three-parts", "alg-none"],
)
def test_bad_tokens_get_401(server: str, token: str) -> None:
    assert post(server, INITIALIZE, token).status_code == 401


def test_expired_and_foreign_audience_tokens_get_401(server: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    foreign = local_issuer.mint(
        settings, sub="eve", scopes=["maml:read"], ttl=300, audience="https://other.example/mcp"
    )
    assert post(server, INITIALIZE, foreign).status_code == 401
    # Long enough to be used once on a loaded machine (minting and the request take time), then waited out.
    short = local_issuer.mint(settings, sub="eve", scopes=["maml:read"], ttl=4)
    assert post(server, INITIALIZE, short).status_code == 200
    time.sleep(5.1)
    assert post(server, INITIALIZE, short).status_code == 401


def test_missing_scope_gets_403_naming_the_scope(server: str, tmp_path: Path) -> None:
    token = mint(tmp_path / "home", sub="reader", scope="maml:read")
    init = post(server, INITIALIZE, token)
    assert init.status_code == 200
    assert "mcp-session-id" not in init.headers  # stateless: any replica answers the next request
    session = {"mcp-protocol-version": "2025-06-18"}
    refused = post(server, call("sign_maml", {"document": example_workflow()}), token, **session)
    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    # step-up: the scopes the token holds and the one missing (tests/server/test_resource_metadata.py)
    assert 'error="insufficient_scope"' in challenge and 'scope="maml:read maml:sign"' in challenge
    assert "resource_metadata=" in challenge
    assert refused.json()["scope"] == "maml:sign"
    allowed = post(server, call("verify_maml", {"document": "x"}), token, **session)
    assert allowed.status_code == 200
    # Refused at the door, receipted as if the tool had refused: one receipt per call.
    engine = open_engine(Settings(home=tmp_path / "home", _env_file=None).database)  # type: ignore[call-arg]
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tool, principal, decision, outcome FROM receipts ORDER BY seq")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("sign_maml", "agent://reader", "denied", "forbidden"),
        ("verify_maml", "agent://reader", "allowed", "ok"),
    ]


def test_body_over_the_limit_gets_413_before_parsing(tmp_path: Path) -> None:
    server = start_server(tmp_path, "streamable-http", env={"MACROSLOW_MAX_REQUEST_BYTES": "4096"})
    url = next(server)
    try:
        token = mint(tmp_path / "home")
        big = call("verify_maml", {"document": "x" * 10_000})
        assert post(url, big, token).status_code == 413
        # Not even JSON: refused by size alone, no parse error.
        raw = httpx2.post(f"{url}/mcp", content=b"{" * 5000, headers={**HEADERS}, timeout=10)
        assert raw.status_code == 413
    finally:
        server.close()


@pytest.mark.anyio
async def test_tools_list_shows_only_the_callers_tools_over_http(server: str, tmp_path: Path) -> None:
    from mcp.client.streamable_http import streamable_http_client

    token = mint(tmp_path / "home", sub="reader", scope="maml:read")
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(f"{server}/mcp", http_client=http)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert names == {"validate_maml", "verify_maml"}


def test_no_auth_refuses_non_loopback_bind(tmp_path: Path) -> None:
    out = subprocess.run(
        [*SERVE, "--transport", "streamable-http", "--no-auth", "--host", "0.0.0.0", "--port", "1"],
        env=_env(tmp_path / "home"),
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert b"refusing to serve HTTP without authentication on 0.0.0.0" in out.stderr


def test_no_auth_on_loopback_serves_the_local_principal(tmp_path: Path) -> None:
    server = start_server(tmp_path, "streamable-http", "--no-auth")
    url = next(server)
    try:
        assert post(url, INITIALIZE).status_code == 200
    finally:
        server.close()


def _stdio(home: Path, **env: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=SERVE[0], args=[*SERVE[1:], "--transport", "stdio"], env={**_env(home), **env}
    )


@pytest.mark.anyio
async def test_stdio_token_from_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    reader = mint(home, sub="reader", scope="maml:read")
    async with Client(_stdio(home, MACROSLOW_TOKEN=reader)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        refused = await client.call_tool("sign_maml", {"document": example_workflow()})
    assert names == {"validate_maml", "verify_maml"}
    assert refused.is_error and error_of(refused)["code"] == "forbidden"
    assert "maml:sign" in error_of(refused)["message"]
    async with Client(_stdio(home, MACROSLOW_TOKEN="not-a-token")) as client:
        assert (await client.list_tools()).tools == []
        result = await client.call_tool("verify_maml", {"document": "x"})
    assert result.is_error and error_of(result)["code"] == "unauthenticated"
    assert "not-a-token" not in result.content[0].text


async def shared_rate_level(url: str, at_most: float) -> None:
    """Wait (10 s at most) until the shared rate bucket's level is `at_most` or lower: the processes
    have reported their calls at a sync (every MACROSLOW_RATE_SYNC_SECONDS)."""
    engine = open_engine(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            with engine.connect() as conn:
                level = conn.execute(text("SELECT min(tokens) FROM rate_buckets")).scalar()
            if level is not None and level <= at_most:
                return
            assert time.monotonic() < deadline, f"no sync reported the calls (level {level})"
            await anyio.sleep(0.02)
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_rate_limit_is_shared_by_two_server_processes(tmp_path: Path) -> None:
    """Two stdio servers on one home (one SQLite database) spend one bucket: once the second has
    synced it refuses what the first spent. Before its first sync it decides from its own bucket
    (the bounded overshoot of docs/security.md "Quotas")."""
    home = tmp_path / "home"
    limits = {
        "MACROSLOW_RATE_PER_MINUTE": "1",
        "MACROSLOW_RATE_BURST": "3",
        "MACROSLOW_RATE_SYNC_SECONDS": "0.05",
    }
    async with Client(_stdio(home, **limits)) as first, Client(_stdio(home, **limits)) as second:
        outcomes = []
        for client in (first, first, first, second):
            result = await client.call_tool("verify_maml", {"document": "x"})
            outcomes.append((error_of(result) or {}).get("code", "ok"))
        await shared_rate_level(f"sqlite:///{home / 'ledger.db'}", at_most=-0.9)  # 3 + 1 of 3
        await anyio.sleep(0.3)  # the one that synced first reads it at its next sync (every 0.05 s)
        for client in (second, first):
            result = await client.call_tool("verify_maml", {"document": "x"})
            outcomes.append((error_of(result) or {}).get("code", "ok"))
    assert outcomes == ["ok", "ok", "ok", "ok", "rate_limited", "rate_limited"]
    assert error_of(result)["details"]["retry_after"] > 30


def test_sse_messages_get_the_same_scope_gate(tmp_path: Path) -> None:
    server = start_server(tmp_path, "sse")
    url = next(server)
    try:
        token = mint(tmp_path / "home", sub="reader", scope="maml:read")
        body = json.dumps(call("sign_maml", {"document": "x"}))
        headers = {**HEADERS, "Authorization": f"Bearer {token}"}
        refused = httpx2.post(f"{url}/messages/?session_id=0", content=body, headers=headers, timeout=10)
        assert refused.status_code == 403
        assert 'scope="maml:read maml:sign"' in refused.headers["www-authenticate"]
        anonymous = httpx2.post(f"{url}/messages/?session_id=0", content=body, headers=HEADERS, timeout=10)
        assert anonymous.status_code == 401
    finally:
        server.close()
