"""RFC 9728 metadata, the scope named in 401/403 challenges, and the resource URL a server derives
from the address it serves, over real HTTP (a `serve` subprocess on a free port, not 8000)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from mcp_server.auth import local_issuer
from mcp_server.policy.operations import ALL_SCOPES, OPERATIONS
from mcp_server.settings import Settings
from tests.server.test_transports import INITIALIZE, SERVE, _env, _free_port, mint, start_server

pytestmark = [pytest.mark.subprocess]

HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
READ_ONLY_BASELINE = ["maml:read", "maml:encrypt", "maml:decrypt", "receipts:read", "quantum:read"]


def call(name: str, arguments: dict[str, object] | None = None) -> dict[str, object]:
    params = {"name": name, "arguments": arguments or {}}
    return {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}


def post(url: str, body: object, token: str | None = None) -> httpx2.Response:
    extra = {"Authorization": f"Bearer {token}", "mcp-protocol-version": "2025-06-18"} if token else {}
    return httpx2.post(f"{url}/mcp", content=json.dumps(body), headers={**HEADERS, **extra}, timeout=10)


def challenge(response: httpx2.Response) -> dict[str, str]:
    """The parameters of a `Bearer` challenge (quoted values without quotes or commas inside)."""
    value = response.headers["www-authenticate"]
    assert value.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


@pytest.fixture
def derived(tmp_path: Path) -> Iterator[str]:
    """A server without MACROSLOW_RESOURCE_URL, on a free port."""
    yield from start_server(tmp_path, "streamable-http", resource_url=None)


def test_metadata_and_challenge_name_the_address_served(derived: str, tmp_path: Path) -> None:
    port = int(derived.rsplit(":", 1)[1])
    assert port != 8000
    refused = post(derived, INITIALIZE)
    assert refused.status_code == 401
    params = challenge(refused)
    assert params["resource_metadata"] == f"{derived}/.well-known/oauth-protected-resource/mcp"
    # initialize needs no particular scope: the read-only baseline, least privilege to start with
    assert params["scope"].split() == READ_ONLY_BASELINE
    metadata = httpx2.get(params["resource_metadata"], timeout=10)
    assert metadata.status_code == 200
    doc = metadata.json()
    assert doc["resource"] == f"{derived}/mcp"
    assert doc["scopes_supported"] == list(ALL_SCOPES)  # every operation's scope, and the audit scope
    assert {op.scope for op in OPERATIONS.values()} < set(doc["scopes_supported"])
    assert doc["authorization_servers"] and doc["resource_name"] == "MacroSlow MCP"
    # the audience is the derived URL too: a token for it is accepted, one for port 8000 is not
    home = tmp_path / "home"
    served = Settings(home=home, port=port, _env_file=None)  # type: ignore[call-arg]
    assert served.expected_audience == f"{derived}/mcp"
    token = local_issuer.mint(served, sub="alice", scopes=["maml:read"], ttl=300)
    assert post(derived, INITIALIZE, token).status_code == 200
    assert post(derived, INITIALIZE, mint(home)).status_code == 401  # aud http://127.0.0.1:8000/mcp
    # one start-up line says so, and how to override it
    log = (tmp_path / "server.log").read_text()
    [line] = [x for x in log.splitlines() if "resource URL" in x]
    assert f"token audience {derived}/mcp" in line and "MACROSLOW_RESOURCE_URL overrides it" in line


def test_401_for_a_tool_call_names_that_tools_scope(derived: str) -> None:
    for name, scope in [("sign_maml", "maml:sign"), ("query_openai", "openai:query")]:
        refused = post(derived, call(name, {"document": "x"}))
        assert refused.status_code == 401
        named = challenge(refused)["scope"].split()
        assert named == [s for s in ALL_SCOPES if s in {*READ_ONLY_BASELINE, scope}]  # table order
    # a bad token is the same 401; a resource read names the resource family's scope
    read = {"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "jobs://x"}}
    assert "quantum:read" in challenge(post(derived, read, "garbage"))["scope"].split()
    # an unknown tool adds nothing; a streamable GET (no body) names the baseline
    assert challenge(post(derived, call("no_such_tool")))["scope"].split() == READ_ONLY_BASELINE
    stream = httpx2.get(f"{derived}/mcp", headers={"Accept": "text/event-stream"}, timeout=10)
    assert stream.status_code == 401 and challenge(stream)["scope"].split() == READ_ONLY_BASELINE


def test_403_names_the_granted_scopes_and_the_missing_one(derived: str, tmp_path: Path) -> None:
    port = int(derived.rsplit(":", 1)[1])
    served = Settings(home=tmp_path / "home", port=port, _env_file=None)  # type: ignore[call-arg]
    token = local_issuer.mint(
        served, sub="reader", scopes=["receipts:read", "maml:read", "other:api"], ttl=300
    )
    refused = post(derived, call("sign_maml", {"document": "x"}), token)
    assert refused.status_code == 403
    params = challenge(refused)
    assert params["error"] == "insufficient_scope"
    # step-up: what the token holds of this server's scopes plus the one missing, in table order
    assert params["scope"].split() == ["maml:read", "maml:sign", "receipts:read"]
    assert params["resource_metadata"] == f"{derived}/.well-known/oauth-protected-resource/mcp"
    assert refused.json()["scope"] == "maml:sign"


def test_metadata_lists_only_what_is_offered(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, "streamable-http", "--read-only", resource_url="https://mcp.example.com/mcp"
    )
    url = next(server)
    try:
        refused = post(url, INITIALIZE)
        params = challenge(refused)
        # configured: the metadata is where the configured URL says, also served here
        assert (
            params["resource_metadata"] == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        )
        doc = httpx2.get(f"{url}/.well-known/oauth-protected-resource/mcp", timeout=10).json()
        assert doc["resource"] == "https://mcp.example.com/mcp"
        # read-only mode: nothing that signs or spends, so neither their scopes
        assert doc["scopes_supported"] == [*READ_ONLY_BASELINE, "receipts:audit"]
        assert "maml:sign" not in challenge(post(url, call("sign_maml")))["scope"]
        log = (tmp_path / "server.log").read_text()
        assert "resource URL and token audience https://mcp.example.com/mcp (MACROSLOW_RESOURCE_URL)" in log
    finally:
        server.close()


def _until_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx2.TransportError:
            time.sleep(0.05)
    raise AssertionError("server did not start listening")


def test_the_start_up_line_goes_to_stderr_not_stdout(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*SERVE, "--transport", "streamable-http", "--port", str(port)],
        env=_env(tmp_path / "home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _until_listening(proc, port)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert out == b""
    lines = [x for x in err.decode().splitlines() if "resource URL" in x]
    assert len(lines) == 1 and f"http://127.0.0.1:{port}/mcp" in lines[0]


def test_stdio_says_nothing_about_a_resource_url(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SERVE, "--transport", "stdio"],
        input=(json.dumps(INITIALIZE) + "\n").encode(),
        env=_env(tmp_path / "home"),
        capture_output=True,
        timeout=60,
    )
    [reply] = done.stdout.decode().splitlines()
    assert json.loads(reply)["result"]["serverInfo"]["title"] == "MacroSlow MCP"
    assert "resource URL" not in done.stderr.decode()
