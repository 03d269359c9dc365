"""16 ordinary callers' p99 with and without one hostile caller, side by side (issue 14's target).

    .venv/bin/python bench/hostile.py      (also part of bench/run.py)

One `serve` process over Streamable HTTP (SQLite ledger, no rate limit to trip). The 16 ordinary
callers are bench/replicas.py's lean load generator (separate processes, one keep-alive connection
each, sequential `verify_maml` of a 10 KiB signed document, every answer checked). The hostile
caller, in a process of its own, sends `validate_maml` documents at the 1 MiB size cap built to be
slow to parse (one ~1 MiB sexagesimal scalar, which once kept the event loop busy for a minute, and
~1 MiB of body lines, the costliest shape left), one after another. The two runs alternate
(ordinary alone, then with the hostile caller, `ROUNDS` times) and each configuration's latencies
are pooled. Target: the hostile caller moves the others' p99 by at most 3x.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from replicas import CLIENTS, LOADGEN, Driver, _Connection, _port, _request, _start
from run import UNLIMITED_RATE, BenchError, padded_workflow, report

SECONDS = float(os.environ.get("BENCH_HOSTILE_SECONDS", "6"))
ROUNDS = int(os.environ.get("BENCH_HOSTILE_ROUNDS", "2"))
TARGET = 3.0
CAP = 1024 * 1024
HEAD = '---\nmaml_version: "2.0"\nid: urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f\ntype: workflow\n'
SLOW = (
    HEAD + "x: 1" + ":59" * ((CAP - 200) // 3) + "\n---\n",
    HEAD + "---\n" + "x\n" * ((CAP - 300) // 2),
)


async def _hostile(url: str, seconds: float) -> int:
    """Slow documents back to back for `seconds`; how many were answered."""
    connections = [_Connection(url, *_request("validate_maml", {"document": doc})) for doc in SLOW]
    answered = 0
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            status, _, body = await connections[answered % 2].post()
            if status != 200:
                raise BenchError(f"hostile call: HTTP {status}: {body[:200]!r}")
            answered += 1
    finally:
        for connection in connections:
            await connection.aclose()
    return answered


def _hostile_worker(url: str, seconds: float) -> int:
    return anyio.run(_hostile, url, seconds)


def _p(latencies: list[float], q: int) -> float:
    return statistics.quantiles(latencies, n=100)[q - 1]


async def bench_hostile() -> bool:
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="macroslow-bench-")))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
        env.update(UNLIMITED_RATE, MACROSLOW_HOME=str(home / "home"), MACROSLOW_LOG_LEVEL="WARNING")
        serve = [sys.executable, "-m", "mcp_server", "serve", "--transport", "streamable-http", "--no-auth"]
        port = _port()
        url, pid = _start([*serve, "--port", str(port)], env, port, stack)
        from mcp.client import Client
        from mcp.client.streamable_http import streamable_http_client

        async with Client(streamable_http_client(url)) as client:
            signed = await client.call_tool("sign_maml", {"document": padded_workflow()})
        document = {"document": str(signed.structured_content["signed_document"])}
        spawn = multiprocessing.get_context("spawn")
        pool = stack.enter_context(ProcessPoolExecutor(LOADGEN, mp_context=spawn))
        hostile_pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=spawn))
        drive = Driver(pool).run
        await drive([url], [pid], "verify_maml", document, 2.0)  # warm-up
        alone: list[float] = []
        attacked: list[float] = []
        hostile_calls = 0
        for _ in range(ROUNDS):
            alone += (await drive([url], [pid], "verify_maml", document, SECONDS)).latencies
            attack = hostile_pool.submit(_hostile_worker, url, SECONDS + 1.5)
            attacked += (await drive([url], [pid], "verify_maml", document, SECONDS)).latencies
            hostile_calls += await anyio.to_thread.run_sync(attack.result)
    ratio = _p(attacked, 99) / _p(alone, 99)
    print(
        f"verify_maml over Streamable HTTP, {CLIENTS} ordinary callers, {ROUNDS} x {SECONDS:g} s each way; "
        f"the hostile caller had {hostile_calls} slow 1 MiB documents answered meanwhile:"
    )
    for name, latencies in (("alone", alone), ("with a hostile caller", attacked)):
        report(
            f"  {name}",
            f"{len(latencies) / (ROUNDS * SECONDS):6.0f} calls/s  p50 {_p(latencies, 50) * 1000:6.1f} ms  "
            f"p99 {_p(latencies, 99) * 1000:6.1f} ms",
        )
    return report("  p99 with / without", f"{ratio:.2f}x", f"target <= {TARGET:.0f}x", ratio <= TARGET)


if __name__ == "__main__":
    sys.exit(0 if anyio.run(bench_hostile) else 1)
