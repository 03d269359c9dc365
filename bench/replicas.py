"""verify_maml over Streamable HTTP with 16 concurrent clients: one `serve` process vs two sharing
one database vs the SDK's no-op tool (bench/noop_server.py) served the same way (issue 8's target).

    .venv/bin/python bench/replicas.py      (also part of bench/run.py)

Each configuration runs for the same time with 16 clients (one keep-alive connection each,
sequential calls). The load generator shares the machine's cores with the servers, so two
processes cannot reach 2x; to keep its share small it is lean: the 16 clients are split over
`BENCH_REPLICAS_LOADGEN` (default 2) processes, each POSTing the same `tools/call` request the
official client sends once it has discovered the server (protocol 2026-07-28, the servers are
stateless), and checking that every answer is a successful result (`valid: true` for
verify_maml). `BENCH_REPLICAS_CLIENT=sdk` drives the official client from this process instead.
Client and server CPU per call are printed so the split stays visible.
Targets (issue 15): two processes at least 1.6x one process, on PostgreSQL; server CPU per
verify_maml call at most the no-op tool's plus 2 ms.
The database is a fresh PostgreSQL database on 127.0.0.1:5432 when one answers, else SQLite.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import psutil
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).parent))

from run import NOOP_SERVER, UNLIMITED_RATE, BenchError, padded_workflow, report

CLIENTS = 16
SECONDS = float(os.environ.get("BENCH_REPLICAS_SECONDS", "8"))
LOADGEN = int(os.environ.get("BENCH_REPLICAS_LOADGEN", "2"))
CLIENT = os.environ.get("BENCH_REPLICAS_CLIENT", "raw")  # or "httpx", or "sdk"
TARGET = 1.6
MAX_EXTRA_CPU_MS = 2.0
PROTOCOL = "2026-07-28"  # what the official client adopts after `server/discover` with these servers


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], env: dict[str, str], port: int, stack: ExitStack) -> tuple[str, int]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(lambda: (proc.terminate(), proc.wait(timeout=20)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited: {cmd}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"http://127.0.0.1:{port}/mcp", proc.pid
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


# --- the lean load generator: raw JSON-RPC POSTs, run in LOADGEN worker processes ---------------


def _request(tool: str, args: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """The headers and body of the official client's `tools/call` (the id does not matter)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": PROTOCOL,
        "io.modelcontextprotocol/clientInfo": {"name": "mcp", "version": "0.1.0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": tool, "arguments": args, "_meta": meta},
    }
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": PROTOCOL,
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }
    return headers, json.dumps(body, separators=(",", ":")).encode()


def _check(tool: str, status: int, content_type: str, body: bytes) -> None:
    """A successful `tools/call` result: not an error, `valid: true` for verify_maml, "ok" for noop."""
    text = body.decode()
    if status != 200:
        raise BenchError(f"{tool}: HTTP {status}: {text[:300]}")
    if content_type.startswith("text/event-stream"):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    result = json.loads(text).get("result")
    structured = (result or {}).get("structuredContent") or {}
    expected = structured.get("valid") is True if tool == "verify_maml" else structured.get("result") == "ok"
    if not result or result.get("isError") or not expected:
        raise BenchError(f"{tool} failed: {text[:300]}")


class _Connection:
    """One keep-alive HTTP/1.1 connection sending a prepared POST: the leanest client there is."""

    def __init__(self, url: str, headers: dict[str, str], body: bytes) -> None:
        self.url = httpx2.URL(url)
        head = [f"POST {self.url.raw_path.decode()} HTTP/1.1", f"host: {self.url.netloc.decode()}"]
        head += [f"{k}: {v}" for k, v in headers.items()] + [f"content-length: {len(body)}"]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.buffer = b""
        self.stream: anyio.abc.SocketStream | None = None

    async def _more(self) -> None:
        assert self.stream is not None
        self.buffer += await self.stream.receive()

    async def _until(self, marker: bytes) -> bytes:
        while (at := self.buffer.find(marker)) < 0:
            await self._more()
        line, self.buffer = self.buffer[:at], self.buffer[at + len(marker) :]
        return line

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._more()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def post(self) -> tuple[int, str, bytes]:
        if self.stream is None:
            self.stream = await anyio.connect_tcp(self.url.host, self.url.port or 80)
        await self.stream.send(self.request)
        status_line, *lines = (await self._until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        if "content-length" in headers:
            body = await self._exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            chunks = []
            while size := int((await self._until(b"\r\n")).split(b";")[0], 16):
                chunks.append(await self._exactly(size))
                await self._exactly(2)
            await self._until(b"\r\n")  # no trailers
            body = b"".join(chunks)
        else:
            raise BenchError(f"unexpected response framing: {headers}")
        return int(status_line.split()[1]), headers.get("content-type", ""), body

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


async def _call_httpx(http: httpx2.AsyncClient, url: str, headers: dict[str, str], body: bytes) -> tuple:
    response = await http.post(url, content=body, headers=headers)
    return response.status_code, response.headers.get("content-type", ""), response.content


async def _lean(job: Job) -> tuple[list[float], float]:
    """This worker's clients: `raw` (default) a prepared POST per call, `httpx` a pooled httpx2 client."""
    headers, body = _request(job.tool, job.args)
    latencies: list[float] = []
    limits = httpx2.Limits(max_connections=len(job.clients), max_keepalive_connections=len(job.clients))
    async with httpx2.AsyncClient(limits=limits, timeout=60) as http:

        async def one(i: int) -> None:
            url = job.urls[i % len(job.urls)]
            connection = _Connection(url, headers, body)
            if job.client == "httpx":
                post = partial(_call_httpx, http, url, headers, body)
            else:
                post = connection.post
            try:
                _check(job.tool, *await post())  # connect and check one answer before timing
                await anyio.sleep(max(0.0, job.start - time.time()))
                deadline = time.perf_counter() + job.seconds
                while (now := time.perf_counter()) < deadline:
                    _check(job.tool, *await post())
                    latencies.append(time.perf_counter() - now)
            finally:
                await connection.aclose()

        cpu = time.process_time()
        async with anyio.create_task_group() as tg:
            for i in job.clients:
                tg.start_soon(one, i)
        return latencies, time.process_time() - cpu


@dataclass(frozen=True)
class Job:
    urls: list[str]
    tool: str
    args: dict[str, str]
    client: str  # "raw" or "httpx"
    clients: list[int]  # which of the CLIENTS this worker runs (client i uses urls[i % len(urls)])
    start: float  # time.time() at which every worker starts timing
    seconds: float


def _worker(job: Job) -> tuple[list[float], float]:
    return anyio.run(_lean, job)


# --- the official client, in this process (BENCH_REPLICAS_CLIENT=sdk) ---------------------------


async def _sdk(urls: list[str], tool: str, args: dict[str, str], seconds: float) -> list[float]:
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


@dataclass
class Run:
    latencies: list[float]
    seconds: float
    client_cpu: float  # seconds of load-generator CPU over the run
    server_cpu: float  # seconds of server CPU (user + system) over the run
    busy: float  # the machine's busy share (all processes, all cores) over the run


def _busy(before: Any) -> float:
    after = psutil.cpu_times()
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    return 1 - idle / total if total else 0.0


def _cpu(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


class Driver:
    """16 clients calling a tool for some seconds against some servers; CPU of both sides counted."""

    def __init__(self, pool: ProcessPoolExecutor | None) -> None:
        self.pool = pool

    async def run(
        self, urls: list[str], pids: list[int], tool: str, args: dict[str, Any], seconds: float
    ) -> Run:
        if self.pool is None:
            server, client, machine = _cpu(pids), time.process_time(), psutil.cpu_times()
            latencies = await _sdk(urls, tool, args, seconds)
            client, server = time.process_time() - client, _cpu(pids) - server
            return Run(latencies, seconds, client, server, _busy(machine))
        start = time.time() + 1.0  # time for every worker to connect and check one answer
        jobs = [
            Job(urls, tool, args, CLIENT, list(range(w, CLIENTS, LOADGEN)), start, seconds)
            for w in range(LOADGEN)
        ]
        futures = [self.pool.submit(_worker, job) for job in jobs]
        await anyio.sleep(max(0.0, start - time.time()))
        server, machine = _cpu(pids), psutil.cpu_times()
        results = [await anyio.to_thread.run_sync(future.result) for future in futures]
        server, busy = _cpu(pids) - server, _busy(machine)
        latencies = [x for lat, _ in results for x in lat]
        return Run(latencies, seconds, sum(cpu for _, cpu in results), server, busy)


def _figures(run: Run) -> tuple[float, str, float]:
    rate = len(run.latencies) / run.seconds
    qs = statistics.quantiles(run.latencies, n=100)
    calls = len(run.latencies)
    client, server = run.client_cpu / calls * 1000, run.server_cpu / calls * 1000
    cpu = f"cpu/call client {client:.2f} ms server {server:.2f} ms; machine {run.busy:.0%} busy"
    text = f"{rate:7.0f} calls/s  p50 {qs[49] * 1000:6.1f} ms  p99 {qs[98] * 1000:6.1f} ms  ({cpu})"
    return rate, text, server


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
        first, first_pid = _start([*serve, "--port", str(ports[0])], env, ports[0], stack)
        second, second_pid = _start([*serve, "--port", str(ports[1])], env, ports[1], stack)
        noop_cmd = [sys.executable, str(NOOP_SERVER), "http", str(ports[2])]
        noop, noop_pid = _start(noop_cmd, env, ports[2], stack)
        async with Client(streamable_http_client(first)) as client:
            signed = await client.call_tool("sign_maml", {"document": padded_workflow()})
        document = {"document": str(signed.structured_content["signed_document"])}
        pool = None
        if CLIENT != "sdk":
            spawn = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(LOADGEN, mp_context=spawn))
        drive = Driver(pool).run
        both = [first_pid, second_pid]
        await drive([first, second], both, "verify_maml", document, 2.0)  # warm-up
        await drive([noop], [noop_pid], "noop", document, 1.0)
        one = _figures(await drive([first], [first_pid], "verify_maml", document, SECONDS))
        two = _figures(await drive([first, second], both, "verify_maml", document, SECONDS))
        floor = _figures(await drive([noop], [noop_pid], "noop", document, SECONDS))
    db = "PostgreSQL" if database is not None else "SQLite"
    how = "official client, this process" if pool is None else f"lean {CLIENT} client, {LOADGEN} processes"
    print(f"verify_maml over Streamable HTTP, {CLIENTS} clients ({how}), {SECONDS:g} s each, {db}:")
    report("  SDK no-op tool, one process", floor[1])
    report("  verify_maml, one process", f"{one[1]}  ({one[0] / floor[0]:.2f}x no-op)")
    ratio = two[0] / one[0]
    scales = report(
        "  verify_maml, two processes",
        f"{two[1]}  ({two[0] / floor[0]:.2f}x no-op; {ratio:.2f}x one process)",
        f"target >= {TARGET}x one process",
        ratio >= TARGET,
    )
    extra = one[2] - floor[2]
    lean = report(
        "  server CPU per call, one process",
        f"verify_maml {one[2]:.2f} ms, no-op {floor[2]:.2f} ms: {extra:+.2f} ms",
        f"target <= +{MAX_EXTRA_CPU_MS:g} ms",
        extra <= MAX_EXTRA_CPU_MS,
    )
    return scales and lean


if __name__ == "__main__":
    sys.exit(0 if anyio.run(bench_replicas) else 1)
