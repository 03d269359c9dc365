"""No call can stall another: while callers send documents at the size cap built to be slow to
parse, the server's health check and another caller's `verify_maml` still answer promptly.

The documents: one sexagesimal scalar of ~1 MiB (YAML 1.1 resolution of it once kept the event loop
busy for about a minute: /healthz answered after 58 s) and ~1 MiB of body lines (the costliest shape
the linear parser has left, a few hundred ms of CPU). Parsing runs in the CPU pool, off the event
loop, so it costs its own callers and not everyone. Bounds are generous for a loaded 2-core machine;
what they catch is stalls of seconds.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from mcp_server.home import example_workflow, initialize, open_keys
from mcp_server.settings import Settings
from mcp_server.signing import sign_document
from tests.server.test_http_auth import HEADERS, call
from tests.server.test_transports import mint, start_server

pytestmark = [pytest.mark.subprocess]

CAP = 1024 * 1024
HEAD = '---\nmaml_version: "2.0"\nid: urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f\ntype: workflow\n'
SLOW = [
    HEAD + "x: 1" + ":59" * ((CAP - 200) // 3) + "\n---\n",
    HEAD + "---\n" + "x\n" * ((CAP - 300) // 2),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    initialize(settings)
    signed = sign_document(example_workflow(), open_keys(settings)).signed_document
    running = start_server(tmp_path, "streamable-http")
    url = next(running)
    try:
        yield url, mint(tmp_path / "home", scope="maml:read"), signed
    finally:
        running.close()


def test_slow_documents_cost_their_callers_not_everyone(server: tuple[str, str, str]) -> None:
    url, token, signed = server
    headers = {**HEADERS, "Authorization": f"Bearer {token}", "mcp-protocol-version": "2025-06-18"}
    stop = threading.Event()
    hostile_calls: list[int] = []

    def hostile(document: str) -> None:
        with httpx2.Client(timeout=120) as http:
            while not stop.is_set():
                http.post(f"{url}/mcp", json=call("validate_maml", {"document": document}), headers=headers)
                hostile_calls.append(1)

    attackers = [threading.Thread(target=hostile, args=(doc,), daemon=True) for doc in SLOW * 2]
    for thread in attackers:
        thread.start()
    time.sleep(1.0)  # the attackers' first documents are being parsed
    health: list[float] = []
    verify: list[float] = []
    try:
        with httpx2.Client(timeout=60) as http:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                started = time.perf_counter()
                assert http.get(f"{url}/healthz").status_code == 200
                health.append(time.perf_counter() - started)
                started = time.perf_counter()
                answer = http.post(
                    f"{url}/mcp", json=call("verify_maml", {"document": signed}), headers=headers
                )
                verify.append(time.perf_counter() - started)
                assert answer.status_code == 200 and '\\"valid\\": true' in answer.text
                time.sleep(0.1)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=120)
    assert sum(hostile_calls) >= 4  # the slow documents were really being parsed meanwhile
    assert max(health) < 2.0, f"/healthz: {max(health):.2f} s at worst"
    assert statistics.median(verify) < 2.0 and max(verify) < 5, f"verify_maml: {sorted(verify)}"
