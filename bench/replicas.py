"""verify_maml over Streamable HTTP with 16 concurrent clients: one `serve` process vs two sharing
one database vs the SDK's no-op tool (bench/noop_server.py) served the same way (issue 8's target).

    .venv/bin/python bench/replicas.py      (also part of bench/run.py)

Each configuration runs for the same time with 16 clients (official client, one connection each,
sequential calls); the load generator is this process and shares the machine's cores with the
servers, so two processes cannot reach 2x. Target: two processes at least 1.3x one process.
The database is a fresh PostgreSQL database on 127.0.0.1:5432 when one answers, else SQLite.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import anyio
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).parent))

from run import NOOP_SERVER, UNLIMITED_RATE, BenchError, padded_workflow, report

CLIENTS = 16
SECONDS = float(os.environ.get("BENCH_REPLICAS_SECONDS", "8"))
TARGET = 1.3


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], env: dict[str, str], port: int, stack: ExitStack) -> str:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(lambda: (proc.terminate(), proc.wait(timeout=20)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited: {cmd}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.05)
    raise BenchError("server did not start")


def _database(stack: ExitStack) -> str | None:
    try:
        import psycopg

        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        name = f"macroslow_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception:
        return None

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    stack.callback(drop)
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


async def _drive(urls: list[str], tool: str, args: dict[str, str], seconds: float) -> list[float]:
    """16 clients calling `tool` for `seconds`; the latency of every call finished in time."""
    latencies: list[float] = []

    async def one(i: int, deadline: float) -> None:
        async with Client(streamable_http_client(urls[i % len(urls)])) as client:
            while (now := time.perf_counter()) < deadline:
                result = await client.call_tool(tool, args)
                if result.is_error:
                    raise BenchError(f"{tool} failed: {result.content}")
                latencies.append(time.perf_counter() - now)

    async with anyio.create_task_group() as tg:
        deadline = time.perf_counter() + seconds
        for i in range(CLIENTS):
            tg.start_soon(one, i, deadline)
    return latencies


def _figures(latencies: list[float], seconds: float) -> tuple[float, str]:
    rate = len(latencies) / seconds
    qs = statistics.quantiles(latencies, n=100)
    return rate, f"{rate:7.0f} calls/s  p50 {qs[49] * 1000:6.1f} ms  p99 {qs[98] * 1000:6.1f} ms"


async def bench_replicas() -> bool:
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="macroslow-bench-")))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MACROSLOW_")}
        env.update(UNLIMITED_RATE, MACROSLOW_HOME=str(home / "home"), MACROSLOW_LOG_LEVEL="WARNING")
        database = _database(stack)
        if database is not None:
            env["MACROSLOW_DATABASE_URL"] = database
        serve = [sys.executable, "-m", "mcp_server", "serve", "--transport", "streamable-http", "--no-auth"]
        ports = [_port(), _port(), _port()]
        first = _start([*serve, "--port", str(ports[0])], env, ports[0], stack)
        second = _start([*serve, "--port", str(ports[1])], env, ports[1], stack)
        noop = _start([sys.executable, str(NOOP_SERVER), "http", str(ports[2])], env, ports[2], stack)
        async with Client(streamable_http_client(first)) as client:
            signed = await client.call_tool("sign_maml", {"document": padded_workflow()})
        document = {"document": str(signed.structured_content["signed_document"])}
        await _drive([first, second], "verify_maml", document, 2.0)  # warm-up
        await _drive([noop], "noop", document, 1.0)
        one = _figures(await _drive([first], "verify_maml", document, SECONDS), SECONDS)
        two = _figures(await _drive([first, second], "verify_maml", document, SECONDS), SECONDS)
        floor = _figures(await _drive([noop], "noop", document, SECONDS), SECONDS)
    db = "PostgreSQL" if database is not None else "SQLite"
    print(f"verify_maml over Streamable HTTP, {CLIENTS} clients, {SECONDS:g} s each, {db}:")
    report("  SDK no-op tool, one process", floor[1])
    report("  verify_maml, one process", f"{one[1]}  ({one[0] / floor[0]:.2f}x no-op)")
    ratio = two[0] / one[0]
    return report(
        "  verify_maml, two processes",
        f"{two[1]}  ({two[0] / floor[0]:.2f}x no-op; {ratio:.2f}x one process)",
        f"target >= {TARGET}x one process",
        ratio >= TARGET,
    )


if __name__ == "__main__":
    sys.exit(0 if anyio.run(bench_replicas) else 1)
