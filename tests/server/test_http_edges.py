"""Hostile HTTP peers against the real server in a child process (issue 14): JSON bombs at the scope
gate, Origin and Host forms that slipped past the SDK's prefix matching, `Content-Length` together
with `Transfer-Encoding`, and idle, slow-header and slow-body connections that must not deny
service to other peers.

Peers: Linux routes all of 127.0.0.0/8 to the loopback interface, so an attacker's sockets are
bound to 127.0.0.2 (and up) before connecting while the well-behaved client uses 127.0.0.1; the
server sees them as different peers."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.server.test_http_auth import HEADERS, call
from tests.server.test_transports import INITIALIZE, mint, start_server

pytestmark = [pytest.mark.subprocess]

TIGHT = {
    "http_header_timeout_seconds": 2.0,
    "http_keep_alive_seconds": 1,
    "http_body_timeout_seconds": 1.0,
    "http_max_connections": 64,
    "http_max_connections_per_peer": 16,
}


def launch(base: Path, transport: str, overrides: dict[str, Any]) -> Iterator[str]:
    """`serve` with the given settings, through the environment as an operator would set them."""
    env = {f"MACROSLOW_{name.upper()}": str(value) for name, value in overrides.items()}
    return start_server(base, transport, env=env)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def exchange(port: int, data: bytes, source: str = "127.0.0.1", wait: float = 5.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes, or until `wait` runs out."""
    with connect(port, source) as sock:
        sock.sendall(data)
        sock.settimeout(wait)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def closed_by_server(sock: socket.socket) -> tuple[bool, bytes]:
    """(whether the server has closed it, what it sent), without waiting."""
    sock.setblocking(False)
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
    except BlockingIOError:
        return False, received
    except OSError:
        return True, received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture(scope="module")
def streamable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    base = tmp_path_factory.mktemp("edges-streamable")
    server = start_server(base, "streamable-http")
    url = next(server)
    try:
        yield url, mint(base / "home"), base / "server.log"
    finally:
        server.close()


# -- 1. JSON bombs at the scope gate --------------------------------------------------------------

DEEP = b"[" * 1000 + b"]" * 1000
DEEP_CALL = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sign_maml","arguments":{"document":'
    + b"[" * 1000
    + b"]" * 1000
    + b"}}}"
)
LONG_NUMBER = (
    b'{"jsonrpc":"2.0","id":'
    + b"9" * 100_000
    + b',"method":"tools/call","params":{"name":"sign_maml","arguments":{}}}'
)
BOMBS = {"deep": DEEP, "deep-call": DEEP_CALL, "long-number": LONG_NUMBER}


@pytest.mark.parametrize("token", ["none", "garbage", "valid"])
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_json_bombs_are_answered_cleanly(streamable: tuple[str, str, Path], bomb: str, token: str) -> None:
    url, valid, log = streamable
    headers = dict(HEADERS)
    if token != "none":
        headers["Authorization"] = f"Bearer {valid if token == 'valid' else 'garbage'}"
    response = httpx2.post(f"{url}/mcp", content=BOMBS[bomb], headers=headers, timeout=10)
    if token == "valid":  # the gate passes it on unjudged; the SDK's parser refuses it
        assert response.status_code == 400
        assert response.json()["error"]["code"] == -32700  # JSON-RPC parse error
    else:
        assert response.status_code == 401  # authentication first, whatever the body
    assert b"Traceback" not in response.content
    text = log.read_text()
    assert "RecursionError" not in text and "Traceback" not in text
    assert httpx2.get(f"{url}/healthz", timeout=10).status_code == 200


def test_json_bombs_at_the_sse_message_endpoint(tmp_path: Path) -> None:
    server = start_server(tmp_path, "sse")
    url = next(server)
    try:
        token = mint(tmp_path / "home")
        auth = {"Authorization": f"Bearer {token}"}
        with httpx2.stream("GET", f"{url}/sse", headers=auth, timeout=10) as stream:
            lines = stream.iter_lines()
            endpoint = next(line for line in lines if line.startswith("data: /messages/"))[6:]
            for body in BOMBS.values():
                for headers, expected in (({}, 401), ({"Authorization": "Bearer garbage"}, 401), (auth, 400)):
                    response = httpx2.post(
                        f"{url}{endpoint}", content=body, headers={**HEADERS, **headers}, timeout=10
                    )
                    assert response.status_code == expected, (len(body), headers.keys())
            # the session still works after them
            response = httpx2.post(
                f"{url}{endpoint}", content=json.dumps(INITIALIZE), headers={**HEADERS, **auth}, timeout=10
            )
            assert response.status_code == 202
            answer = next(line for line in lines if line.startswith("data: {"))
            assert json.loads(answer[6:])["id"] == 1
        assert "RecursionError" not in (tmp_path / "server.log").read_text()
    finally:
        server.close()


def test_bounded_json() -> None:
    from mcp_server.http_app import _bounded_json as bounded

    def _bounded_json(body: bytes, limit: int = 4 * 1024 * 1024 + 16) -> object:
        return bounded(body, limit)

    assert _bounded_json(DEEP) is None
    assert _bounded_json(b"[" * 4_000_000) is None
    assert _bounded_json(b"[" * 257 + b"]" * 257) is None
    assert _bounded_json(b"[" * 256 + b"]" * 256) is not None
    assert _bounded_json(b"[]" * 100_000) is None  # not JSON: many values one after another
    assert _bounded_json(b"[" + b"[]," * 100_000 + b"[]]") == [[]] * 100_001  # wide but shallow: judged
    assert _bounded_json(LONG_NUMBER) is None
    assert _bounded_json(b'{"a": "' + b"[" * 10_000 + b'"}') == {"a": "[" * 10_000}  # strings don't nest
    assert _bounded_json(b'{"a": "\\"[[[", "b": [[1]]}') == {"a": '"[[[', "b": [[1]]}
    assert _bounded_json(b'{"a": "unterminated [[[') is None
    assert _bounded_json(b"\xff\xfe") is None
    # 4 MiB hostile bodies cost about what json.loads costs: no quadratic scan (a digit-run search
    # tried at every offset took ~20 s on the first one)
    for body in (
        (b"[" + b"9" * 4300 + b",") * 975,
        b"[]" * 2_000_000,
        b'["' + b"[" * 4_000_000,
        b'"",' * 1_400_000,
    ):
        started = time.perf_counter()
        _bounded_json(body)
        assert time.perf_counter() - started < 1.5


# -- 2. Origin and Host: exactly scheme://host[:port] ---------------------------------------------

HOSTILE_ORIGINS = [
    "http://localhost:1@evil.example",
    "http://localhost:80@evil.example:80",
    "http://localhost.evil.example",
    "http://localhost:8000.evil.example",
    "http://127.0.0.1:8000/..",
    "http://127.0.0.1:8000/",
    "http://localhost:8000?x=1",
    "http://localhost:8000#x",
    "http://localhost:abc",
    "http://localhost:99999",
    "http://[::1]:1@evil.example",
    "HTTP://LOCALHOST:8000",
    "http://LOCALHOST:8000",
    "https://localhost:8000",
    "null",
    "",
]
GOOD_ORIGINS = [
    "http://localhost:8000",
    "http://127.0.0.1:8000",
    "http://[::1]:8000",
    "http://localhost:5173",
]


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
def test_hostile_origins_are_refused(streamable: tuple[str, str, Path], origin: str) -> None:
    url, token, _ = streamable
    headers = {**HEADERS, "Authorization": f"Bearer {token}", "Origin": origin}
    response = httpx2.post(f"{url}/mcp", content=json.dumps(INITIALIZE), headers=headers, timeout=10)
    assert response.status_code == 403


@pytest.mark.parametrize("origin", [None, *GOOD_ORIGINS])
def test_loopback_origins_are_allowed(streamable: tuple[str, str, Path], origin: str | None) -> None:
    url, token, _ = streamable
    headers = {**HEADERS, "Authorization": f"Bearer {token}", **({"Origin": origin} if origin else {})}
    response = httpx2.post(f"{url}/mcp", content=json.dumps(INITIALIZE), headers=headers, timeout=10)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "host", ["localhost:1@evil.example", "127.0.0.1:80@evil.example:80", "127.0.0.1:8000.evil.example"]
)
def test_hostile_hosts_are_refused(streamable: tuple[str, str, Path], host: str) -> None:
    url, token, _ = streamable
    body = json.dumps(INITIALIZE).encode()
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    assert status_of(exchange(port_of(url), request)) == 421


def test_origin_forms_in_process() -> None:
    from mcp_server.http_app import OriginGate

    gate = OriginGate(lambda *_: None, ("/mcp",), ["https://app.example.com"])  # type: ignore[arg-type]
    for origin in HOSTILE_ORIGINS:
        assert not gate.origin_ok(origin), origin
    for origin in [*GOOD_ORIGINS, "http://localhost", "https://app.example.com"]:
        assert gate.origin_ok(origin), origin
    assert not gate.origin_ok("https://app.example.com:443")
    assert not gate.origin_ok("http://127.0.0.1:0")
    assert not gate.origin_ok("http://127.0.0.1:08000")
    assert not gate.origin_ok("http://localhost:8000\n")
    assert gate.host_ok("localhost:8000") and gate.host_ok("[::1]:1") and gate.host_ok("127.0.0.1")
    assert not gate.host_ok("localhost:8000@evil.example") and not gate.host_ok("evil.example:8000")


# -- 3. Content-Length with Transfer-Encoding ------------------------------------------------------


@pytest.mark.parametrize("path", ["/mcp", "/healthz"])
def test_content_length_with_transfer_encoding_is_refused(
    streamable: tuple[str, str, Path], path: str
) -> None:
    """One 400 and the connection closed: the smuggled request after the chunked body is not served."""
    url, token, _ = streamable
    port = port_of(url)
    method = "POST" if path == "/mcp" else "GET"
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    ).encode()
    response = exchange(port, request)
    assert status_of(response) == 400
    assert response.count(b"HTTP/1.1 ") == 1
    assert b"transfer-encoding" in response.lower()  # the body says why


# -- 4. Idle, slow-header and slow-body peers ------------------------------------------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    base = tmp_path_factory.mktemp("edges-tight")
    server = launch(base, "streamable-http", TIGHT)
    url = next(server)
    try:
        yield url, mint(base / "home")
    finally:
        server.close()


def serves_a_good_client(url: str, token: str) -> float:
    """/healthz and a tools/call from 127.0.0.1 both succeed; how long that took."""
    started = time.monotonic()
    assert httpx2.get(f"{url}/healthz", timeout=10).status_code == 200
    headers = {**HEADERS, "Authorization": f"Bearer {token}", "mcp-protocol-version": "2025-06-18"}
    response = httpx2.post(
        f"{url}/mcp", content=json.dumps(call("verify_maml", {"document": "x"})), headers=headers, timeout=10
    )
    assert response.status_code == 200
    data = next(line for line in response.text.splitlines() if line.startswith("data: "))
    assert json.loads(data[6:])["result"]["structuredContent"]["valid"] is False
    return time.monotonic() - started


def test_idle_and_slow_header_peer_does_not_deny_service(tight: tuple[str, str]) -> None:
    url, token = tight
    port = port_of(url)
    slow: list[socket.socket] = []
    idle: list[socket.socket] = []
    try:
        opened = time.monotonic()
        for _ in range(100):
            sock = connect(port, "127.0.0.2")
            with contextlib.suppress(OSError):  # refused at once: may be closed already
                sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(sock)
        idle.extend(connect(port, "127.0.0.2") for _ in range(300))
        assert serves_a_good_client(url, token) < 5
        # The slow peer keeps trickling header lines; the server closes every one of its connections:
        # beyond its share at once (503), the rest when the request head is overdue (408).
        answers: dict[socket.socket, bytes] = {}
        while time.monotonic() - opened < TIGHT["http_header_timeout_seconds"] + 3:
            for sock in slow + idle:
                if sock in answers:
                    continue
                done, received = closed_by_server(sock)
                if done:
                    answers[sock] = received
                elif sock in slow:
                    try:
                        sock.send(b"X-Slow: 1\r\n")
                    except OSError:
                        answers[sock] = received
            if len(answers) == len(slow) + len(idle):
                break
            time.sleep(0.5)
        assert len(answers) == len(slow) + len(idle), "connections the server left open"
        statuses = [status_of(a) for a in answers.values()]
        assert all(s in (0, 408, 503) for s in statuses) and 503 in statuses
        assert statuses.count(408) <= TIGHT["http_max_connections_per_peer"]
        assert 408 in [status_of(answers[s]) for s in slow]
        assert serves_a_good_client(url, token) < 5
    finally:
        for sock in slow + idle:
            sock.close()


def test_kept_alive_connection_is_closed_when_idle_or_slow(tight: tuple[str, str]) -> None:
    url, _ = tight
    port = port_of(url)
    healthz = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for trickle in (True, False):
        with connect(port, "127.0.0.3") as sock:
            sock.sendall(healthz)
            assert status_of(sock.recv(65536)) == 200
            sent = time.monotonic()
            if trickle:
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            while time.monotonic() - sent < 6:
                done, _ = closed_by_server(sock)
                if done:
                    break
                if trickle:
                    try:
                        sock.send(b"X-Slow: 1\r\n")
                    except OSError:
                        break
                time.sleep(0.25)
            waited = time.monotonic() - sent
            limit = TIGHT["http_header_timeout_seconds"] if trickle else TIGHT["http_keep_alive_seconds"]
            assert limit - 0.5 < waited < limit + 1.5, (trickle, waited)


def test_slow_body_gets_408(tight: tuple[str, str]) -> None:
    url, _ = tight
    port = port_of(url)
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 100\r\n\r\n" + '{"jsonrpc":'
    ).encode()
    started = time.monotonic()
    response = exchange(port, request, wait=5)
    assert status_of(response) == 408
    assert time.monotonic() - started < TIGHT["http_body_timeout_seconds"] + 2


def test_idle_flood_from_many_peers_with_default_limits(tmp_path: Path) -> None:
    """The real `serve`, default limits: 5 peers x 80 idle connections (more than each peer's 64 and
    than the server's 256). Newcomers take the place of idle connections of the heaviest peers."""
    server = start_server(tmp_path, "streamable-http")
    url = next(server)
    sockets: list[socket.socket] = []
    try:
        token = mint(tmp_path / "home")
        port = port_of(url)
        for peer in range(2, 7):
            sockets.extend(connect(port, f"127.0.0.{peer}") for _ in range(80))
        assert serves_a_good_client(url, token) < 5
        time.sleep(0.5)
        open_ones = [s for s in sockets if not closed_by_server(s)[0]]
        assert len(open_ones) <= 256  # the default http_max_connections
    finally:
        for sock in sockets:
            sock.close()
        server.close()


def test_peer_key() -> None:
    from mcp_server.http_limits import peer_key

    assert peer_key(("10.1.2.3", 5000)) == "10.1.2.3"
    assert peer_key(("::ffff:10.1.2.3", 5000, 0, 0)) == "10.1.2.3"
    assert peer_key(("2001:db8:1:2:3:4:5:6", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert peer_key(("2001:db8:1:2:ffff::1", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert peer_key(("fe80::1%eth0", 1, 0, 0)) == "fe80::/64"
    assert peer_key("") == "local" and peer_key(None) == "local"
