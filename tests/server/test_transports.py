"""The real server in a child process, over stdio, Streamable HTTP and SSE, with the official client."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mcp_server.home import example_workflow

pytestmark = [pytest.mark.subprocess]

SERVE = [sys.executable, "-m", "mcp_server", "serve"]
# A raw handshake-era `initialize` request, for tests that speak JSON-RPC without the client.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
    env["MACROSLOW_HOME"] = str(home)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mint(home: Path, sub: str = "alice", scope: str = "maml:read maml:sign", ttl: int = 300) -> str:
    """A token from the home's local issuer, through the real CLI (the token is stdout's last line)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcp_server",
            "token",
            "mint",
            "--sub",
            sub,
            "--scope",
            scope,
            "--ttl",
            str(ttl),
        ],
        env=_env(home),
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip().splitlines()[-1]


# The resource URL (and so token audience) the test servers are given: tokens from `mint` and from
# `Settings(home=...)` are for it. Unset, a server derives it from the port it serves (a free one
# here); `start_server(..., resource_url=None)` tests that.
PINNED_RESOURCE_URL = "http://127.0.0.1:8000/mcp"


def start_server(
    tmp_path: Path,
    transport: str,
    *args: str,
    env: dict[str, str] | None = None,
    resource_url: str | None = PINNED_RESOURCE_URL,
) -> Iterator[str]:
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    pinned = {"MACROSLOW_RESOURCE_URL": resource_url} if resource_url else {}
    proc = subprocess.Popen(
        [*SERVE, "--transport", transport, "--port", str(port), *args],
        env={**_env(tmp_path / "home"), **pinned, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {(tmp_path / 'server.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("server did not start listening")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def http_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from start_server(tmp_path, request.param)


@pytest.mark.anyio
async def test_stdio_subprocess_signs_and_verifies(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=SERVE[0], args=[*SERVE[1:], "--transport", "stdio"], env=_env(tmp_path / "home")
    )
    async with Client(params) as client:
        signed = await client.call_tool("sign_maml", {"document": example_workflow()})
        verified = await client.call_tool(
            "verify_maml", {"document": signed.structured_content["signed_document"]}
        )
    assert verified.structured_content["valid"] is True and verified.structured_content["trusted"] is True
    # keys were created on first use (the signing key and the ledger's log key), private parts 0600
    keys = list((tmp_path / "home" / "keys").glob("*.key.pem"))
    assert len(keys) == 2 and all(key.stat().st_mode & 0o777 == 0o600 for key in keys)


def test_stdio_stdout_carries_only_json_rpc(tmp_path: Path) -> None:
    """A fresh home logs a key-creation warning: it must go to stderr, never stdout."""
    calls = [
        INITIALIZE,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "verify_maml", "arguments": {"document": "garbage"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "sign_maml", "arguments": {"document": "---\n---\n"}},
        },
    ]
    proc = subprocess.Popen(
        [*SERVE, "--transport", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(tmp_path / "home"),
    )
    assert proc.stdin is not None and proc.stdout is not None
    for call in calls:
        proc.stdin.write((json.dumps(call) + "\n").encode())
    proc.stdin.flush()
    messages = []
    while len([m for m in messages if "id" in m]) < 3:
        line = proc.stdout.readline()
        assert line, "server closed stdout early"
        messages.append(json.loads(line))  # every stdout line is one JSON-RPC message
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    rest = proc.stdout.read()
    stderr = proc.stderr.read() if proc.stderr else b""
    messages += [json.loads(line) for line in rest.decode().splitlines()]
    assert all(m.get("jsonrpc") == "2.0" for m in messages)
    by_id = {m["id"]: m for m in messages if "id" in m}
    assert by_id[2]["result"]["structuredContent"]["valid"] is False
    assert by_id[3]["result"]["isError"] is True
    assert b"created signing key" in stderr


@pytest.mark.anyio
@pytest.mark.parametrize("http_server", ["streamable-http"], indirect=True)
async def test_streamable_http_subprocess(http_server: str, tmp_path: Path) -> None:
    token = mint(tmp_path / "home")
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(f"{http_server}/mcp", http_client=http)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("validate_maml", {"document": example_workflow()})
    assert {"sign_maml", "verify_maml", "validate_maml"} == names
    assert result.structured_content["valid"] is True


@pytest.mark.anyio
@pytest.mark.parametrize("http_server", ["sse"], indirect=True)
async def test_sse_subprocess(http_server: str, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {mint(tmp_path / 'home', scope='maml:read')}"}
    async with Client(sse_client(f"{http_server}/sse", headers=headers), mode="legacy") as client:
        result = await client.call_tool("validate_maml", {"document": example_workflow()})
    assert result.structured_content["valid"] is True


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")  # the client's note; the point here
async def test_job_notifications_over_stdio_sse_and_streamable_http(tmp_path: Path) -> None:
    """stdio and SSE keep a channel per client: `resources/subscribe` gets
    `notifications/resources/updated`. Stateless Streamable HTTP keeps none: the same request is
    refused (-32601), naming what works. `subscriptions/listen` is heard over stdio and Streamable
    HTTP (docs/deploy.md, "Notifications")."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import METHOD_NOT_FOUND

    from tests.quantum.test_run_tool import slow_circuit

    updates: list[str] = []

    async def handler(message: object) -> None:
        uri = getattr(getattr(message, "params", None), "uri", None)
        if getattr(message, "method", "") == "notifications/resources/updated" and uri:
            updates.append(str(uri))

    async def subscribe_and_cancel(client: Client) -> None:
        job = await client.call_tool("run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0})
        uri = f"jobs://{job.structured_content['job_id']}"
        await client.session.subscribe_resource(uri)
        await client.call_tool("cancel_job", {"job_id": job.structured_content["job_id"]})
        with anyio.fail_after(20):
            while uri not in updates:
                await anyio.sleep(0.05)

    async def listen_and_cancel(client: Client) -> None:
        job = await client.call_tool("run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0})
        uri = f"jobs://{job.structured_content['job_id']}"
        async with client.listen(resource_subscriptions=[uri]) as sub:
            await client.call_tool("cancel_job", {"job_id": job.structured_content["job_id"]})
            with anyio.fail_after(20):
                async for event in sub:
                    if getattr(event, "uri", None) == uri:
                        break

    stdio = StdioServerParameters(
        command=SERVE[0], args=[*SERVE[1:], "--transport", "stdio"], env=_env(tmp_path / "home")
    )
    async with Client(stdio, mode="legacy", message_handler=handler) as client:
        await subscribe_and_cancel(client)
    async with Client(stdio) as client:
        await listen_and_cancel(client)
    serve = contextlib.contextmanager(start_server)
    with serve(tmp_path, "sse", "--no-auth") as url:
        async with Client(sse_client(f"{url}/sse"), mode="legacy", message_handler=handler) as client:
            await subscribe_and_cancel(client)
    assert len(set(updates)) >= 2
    with serve(tmp_path, "streamable-http", "--no-auth") as url:
        async with Client(streamable_http_client(f"{url}/mcp"), mode="legacy") as client:
            with pytest.raises(MCPError) as refused:
                await client.session.subscribe_resource("jobs://anything")
        async with Client(streamable_http_client(f"{url}/mcp")) as client:
            await listen_and_cancel(client)
    assert refused.value.code == METHOD_NOT_FOUND
    assert refused.value.message.startswith("resources/subscribe cannot deliver updates")


@pytest.mark.parametrize("http_server", ["streamable-http"], indirect=True)
def test_http_refuses_foreign_origin(http_server: str, tmp_path: Path) -> None:
    """Even with a valid token, a browser page from another origin is refused (DNS rebinding)."""
    body = json.dumps(INITIALIZE)
    request = urllib.request.Request(
        f"{http_server}/mcp",
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Origin": "http://evil.example",
            "Authorization": f"Bearer {mint(tmp_path / 'home')}",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403


UNREACHABLE_DATABASE = {"MACROSLOW_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:9/none"}


def test_http_does_not_start_without_its_database(tmp_path: Path) -> None:
    """Over HTTP the services open before the first request is accepted: no database, no server."""
    done = subprocess.run(
        [*SERVE, "--transport", "streamable-http", "--port", str(_free_port())],
        env={**_env(tmp_path / "home"), **UNREACHABLE_DATABASE},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"cannot start: backend_unavailable" in done.stderr


@pytest.mark.anyio
async def test_stdio_answers_the_handshake_without_its_database(tmp_path: Path) -> None:
    """Over stdio the handshake does not wait for the database; calls then say what is wrong."""
    params = StdioServerParameters(
        command=SERVE[0],
        args=[*SERVE[1:], "--transport", "stdio"],
        env={**_env(tmp_path / "home"), **UNREACHABLE_DATABASE},
    )
    async with Client(params) as client:
        assert len((await client.list_tools()).tools) == 10
        result = await client.call_tool("validate_maml", {"document": "x"})
    assert result.is_error and result.content[0].text.startswith("backend_unavailable: the database")
