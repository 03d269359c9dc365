"""Serving many: real `serve` processes on loopback sharing one PostgreSQL database, real clients.

Two replicas: a job submitted via one is read and cancelled via the other, a `subscriptions/listen`
stream on one hears a job run on the other, a rate limit spent via one holds via the other, the
ledger stays one log, /metrics counts the calls, /healthz and /readyz answer. A bounded load
across both (zero protocol errors, one receipt per call), then one replica killed with SIGKILL
mid-load (the other keeps serving; its running job is marked interrupted). A PostgreSQL server of
our own stopped mid-run: calls fail with backend_unavailable and /readyz says 503, then both
recover when it is back.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psycopg
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import METHOD_NOT_FOUND

from mcp_server.adapters import error_of
from mcp_server.home import example_workflow
from tests.quantum.test_run_tool import BELL, slow_circuit
from tests.server.test_transports import SERVE, _env, _free_port

pytestmark = pytest.mark.subprocess

LOAD_CLIENTS, LOAD_SECONDS = 32, 20.0
PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Replica:
    def __init__(self, home: Path, log: Path, env: dict[str, str], *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*SERVE, "--transport", "streamable-http", "--no-auth", "--port", str(self.port), *args],
            env={**_env(home), **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {Path(self.log.name).read_text()}"
            try:
                if httpx2.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Any]:
    started: list[Replica] = []

    def start(n: int, database_url: str, **env: str) -> list[Replica]:
        common = {"MACROSLOW_DATABASE_URL": database_url, "MACROSLOW_QUANTUM_HEARTBEAT_SECONDS": "0.2", **env}
        made = [
            Replica(tmp_path / "home", tmp_path / f"server{len(started) + i}.log", common) for i in range(n)
        ]
        started.extend(made)
        for r in made:
            r.wait_ready()
        return made

    try:
        yield start
    finally:
        for r in started:
            r.stop()


def client(url: str, mode: str = "auto") -> Client:
    return Client(streamable_http_client(f"{url}/mcp"), mode=mode)  # type: ignore[arg-type]


async def read_job(c: Client, job_id: str) -> dict[str, Any]:
    return dict(json.loads((await c.read_resource(f"jobs://{job_id}")).contents[0].text))


def verify_ledger(home: Path, database_url: str) -> dict[str, Any]:
    out = subprocess.run(
        [*SERVE[:-1], "receipts", "verify", "--json"],
        env={**_env(home), "MACROSLOW_DATABASE_URL": database_url},
        capture_output=True,
        check=False,
    )
    report = json.loads(out.stdout)
    assert report["ok"] is True, out
    return dict(report)


def receipts_by_tool(database_url: str) -> Counter[str]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT tool, count(*) FROM receipts GROUP BY tool").fetchall()
    return Counter({tool: n for tool, n in rows})


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx2.get(f"{url}/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_job_is_read_and_cancelled_via_the_other_replica(
    replicas: Any, postgres_url: str, tmp_path: Path
) -> None:
    a, b = replicas(2, postgres_url)
    health = httpx2.get(f"{a.url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with client(a.url) as ca, client(b.url, mode="legacy") as cb:  # modern and handshake-era
            submitted = await ca.call_tool(
                "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}
            )
            job_id = submitted.structured_content["job_id"]
            seen = await read_job(cb, job_id)
            assert seen["status"] in ("queued", "running")
            with anyio.fail_after(60):
                while (await read_job(cb, job_id))["status"] != "running":
                    await anyio.sleep(0.1)
            cancelled = await cb.call_tool("cancel_job", {"job_id": job_id})
            assert not cancelled.is_error, cancelled
            with anyio.fail_after(20):  # the owner acts on the flag at its next heartbeat (0.2 s)
                while (final := await read_job(ca, job_id))["status"] not in (
                    "cancelled",
                    "failed",
                    "interrupted",
                ):
                    await anyio.sleep(0.1)
            bell = await cb.call_tool("run_quantum_circuit", {"circuit": BELL, "seed": 3})
            return final, dict(bell.structured_content)

    final, bell = anyio.run(scenario)
    assert final["status"] == "cancelled"
    assert bell["status"] == "succeeded"
    assert metric(a.url, "macroslow_tool_calls_total", tool="run_quantum_circuit", outcome="ok") == 1
    assert metric(b.url, "macroslow_tool_calls_total", tool="run_quantum_circuit", outcome="ok") == 1
    assert metric(b.url, "macroslow_tool_calls_total", tool="cancel_job", outcome="ok") == 1
    assert metric(b.url, "macroslow_tool_call_seconds_count", tool="cancel_job") == 1
    assert metric(a.url, "macroslow_ledger_append_seconds_count") >= 1
    # MCP responses carry the security headers and no session (stateless).
    raw = httpx2.post(
        f"{a.url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
        headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"},
        timeout=10,
    )
    assert raw.status_code == 200
    assert raw.headers["x-content-type-options"] == "nosniff" and raw.headers["cache-control"] == "no-store"
    assert "mcp-session-id" not in raw.headers and "access-control-allow-origin" not in raw.headers
    time.sleep(0.5)  # the job's own receipt (quantum_job) is written when it ends
    report = verify_ledger(tmp_path / "home", postgres_url)
    assert receipts_by_tool(postgres_url)["run_quantum_circuit"] == 2
    assert report["receipts"] == sum(receipts_by_tool(postgres_url).values())


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")  # the client's note; the point here
def test_a_listener_on_one_replica_hears_a_job_run_on_the_other(replicas: Any, postgres_url: str) -> None:
    """The job runs (and is cancelled) on B only; the listen stream is on A: the announcement crossed
    over PostgreSQL LISTEN/NOTIFY. Over Streamable HTTP the handshake-era `resources/subscribe` is
    refused on either replica, saying what to use instead."""
    a, b = replicas(2, postgres_url)

    async def scenario() -> None:
        async with client(a.url) as ca, client(b.url) as cb, client(a.url, mode="legacy") as legacy:
            submitted = await cb.call_tool(
                "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}
            )
            uri = f"jobs://{submitted.structured_content['job_id']}"
            with pytest.raises(MCPError) as refused:
                await legacy.session.subscribe_resource(uri)
            assert refused.value.code == METHOD_NOT_FOUND
            assert "subscriptions/listen" in refused.value.message and "SSE" in refused.value.message
            async with ca.listen(resource_subscriptions=[uri]) as sub:
                cancelled = await cb.call_tool("cancel_job", {"job_id": uri.removeprefix("jobs://")})
                assert not cancelled.is_error, cancelled
                with anyio.fail_after(30):
                    async for event in sub:
                        if getattr(event, "uri", None) == uri:
                            break

    anyio.run(scenario)
    assert metric(a.url, "macroslow_tool_calls_total", tool="run_quantum_circuit", outcome="ok") == 0


def wait_for_rate_level(url: str, at_most: float) -> None:
    """Until the shared rate bucket's level is `at_most` or lower (10 s at most): the replicas have
    reported their calls at a sync (every MACROSLOW_RATE_SYNC_SECONDS)."""
    deadline = time.monotonic() + 10
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT min(tokens) FROM rate_buckets").fetchone()
            if row is not None and row[0] is not None and row[0] <= at_most:
                return
            assert time.monotonic() < deadline, f"no sync reported the calls ({row})"
            time.sleep(0.02)


def test_a_rate_limit_spent_via_one_replica_holds_via_the_other(replicas: Any, postgres_url: str) -> None:
    """Once b has synced it refuses what a spent; before its first sync it decides from its own
    bucket (the bounded overshoot of docs/security.md "Quotas")."""
    a, b = replicas(
        2,
        postgres_url,
        MACROSLOW_RATE_PER_MINUTE="1",
        MACROSLOW_RATE_BURST="3",
        MACROSLOW_RATE_SYNC_SECONDS="0.05",
    )

    async def calls(c: Any, n: int) -> list[str]:
        codes = []
        for _ in range(n):
            r = await c.call_tool("verify_maml", {"document": "x"})
            codes.append(error_of(r)["code"] if r.is_error else "ok")
        return codes

    async def scenario() -> list[str]:
        async with client(a.url) as ca, client(b.url) as cb:
            codes = await calls(ca, 3) + await calls(cb, 1)
            await anyio.to_thread.run_sync(wait_for_rate_level, postgres_url, -0.9)  # 3 + 1 of 3
            await anyio.sleep(0.3)  # the one that synced first reads it at its next sync (every 0.05 s)
            return codes + await calls(cb, 2) + await calls(ca, 1)

    assert anyio.run(scenario) == ["ok", "ok", "ok", "ok", "rate_limited", "rate_limited", "rate_limited"]
    assert metric(b.url, "macroslow_denials_total", reason="rate_limited") == 2
    assert metric(b.url, "macroslow_tool_calls_total", tool="verify_maml", outcome="rate_limited") == 2


async def _load(
    urls: list[str], clients: int, seconds: float, signed: str, errors: list[str], calls: Counter[str]
) -> None:
    deadline = time.monotonic() + seconds

    async def one(i: int) -> None:
        rng = random.Random(i)
        try:
            async with client(urls[i % len(urls)], mode="legacy" if i % 4 == 0 else "auto") as c:
                while time.monotonic() < deadline:
                    tool = rng.choice(["verify_maml", "verify_maml", "run_quantum_circuit", "list_receipts"])
                    args: dict[str, Any] = {
                        "verify_maml": {"document": signed},
                        "run_quantum_circuit": {"circuit": BELL, "shots": 64},
                        "list_receipts": {"limit": 5},
                    }[tool]
                    calls[tool] += 1
                    result = await c.call_tool(tool, args)
                    if result.is_error:
                        errors.append(f"{tool}: {result.content[0]}")
        except Exception as exc:
            errors.append(f"client {i}: {exc!r}")

    async with anyio.create_task_group() as tg:
        for i in range(clients):
            tg.start_soon(one, i)


def _signed(url: str) -> str:
    async def sign() -> str:
        async with client(url) as c:
            return str(
                (await c.call_tool("sign_maml", {"document": example_workflow()})).structured_content[
                    "signed_document"
                ]
            )

    return anyio.run(sign)


def test_load_across_two_replicas_then_one_killed(replicas: Any, postgres_url: str, tmp_path: Path) -> None:
    a, b = replicas(2, postgres_url, MACROSLOW_RATE_PER_MINUTE="0", MACROSLOW_LOG_LEVEL="WARNING")
    signed = _signed(a.url)
    errors: list[str] = []
    calls: Counter[str] = Counter({"sign_maml": 1})
    started = time.monotonic()
    anyio.run(_load, [a.url, b.url], LOAD_CLIENTS, LOAD_SECONDS, signed, errors, calls)
    elapsed = time.monotonic() - started
    assert errors == []
    receipts = receipts_by_tool(postgres_url)
    del receipts["quantum_job"]  # jobs that end after the call get a receipt of their own
    assert receipts == calls, (receipts, calls)
    total = sum(calls.values())
    print(f"load: {total} calls in {elapsed:.1f} s ({total / elapsed:.0f}/s), {dict(calls)}")
    served = sum(
        metric(r.url, "macroslow_tool_calls_total", tool=t, outcome="ok") for r in (a, b) for t in calls
    )
    assert served == total
    verify_ledger(tmp_path / "home", postgres_url)

    # A slow job on b, then b killed with SIGKILL while a serves load.
    async def submit() -> str:
        async with client(b.url) as cb:
            r = await cb.call_tool("run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0})
            job_id = str(r.structured_content["job_id"])
            with anyio.fail_after(60):
                while (await read_job(cb, job_id))["status"] != "running":
                    await anyio.sleep(0.1)
            return job_id

    job_id = submit_id = anyio.run(submit)

    async def load_and_kill() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_load, [a.url], 8, 6.0, signed, errors, Counter())
            await anyio.sleep(2)
            os.kill(b.proc.pid, signal.SIGKILL)

    anyio.run(load_and_kill)
    assert errors == []
    assert httpx2.get(f"{a.url}/readyz", timeout=5).status_code == 200

    async def read_after() -> dict[str, Any]:
        async with client(a.url) as ca:
            with anyio.fail_after(20):
                while (job := await read_job(ca, submit_id))["status"] not in ("interrupted", "failed"):
                    await anyio.sleep(0.2)
            return job

    assert anyio.run(read_after)["status"] == "interrupted", job_id
    verify_ledger(tmp_path / "home", postgres_url)


# -- PostgreSQL stopped mid-run -------------------------------------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Any]]:
    """A PostgreSQL 15 cluster of our own (initdb as the postgres user), with stop/start controls."""
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL 15 binaries or runuser not available")
    if os.geteuid() != 0:
        pytest.skip("needs root to run initdb as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="macroslow-pg-"))
    shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()

    def pg(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True)

    def start() -> None:
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-o", opts, "-w", "start")

    def stop() -> None:
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")

    pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    start()
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", (start, stop)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            stop()
        shutil.rmtree(root, ignore_errors=True)


def test_database_down_then_back(replicas: Any, own_postgres: tuple[str, Any]) -> None:
    url, (start, stop) = own_postgres
    [a] = replicas(1, url)

    async def verify() -> str:
        async with client(a.url) as c:
            r = await c.call_tool("verify_maml", {"document": "x"})
            return str(error_of(r)["code"]) if r.is_error else "ok"

    assert anyio.run(verify) == "ok"
    stop()
    assert anyio.run(verify) == "backend_unavailable"
    ready = httpx2.get(f"{a.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["reason"] == "database_unavailable"
    assert httpx2.get(f"{a.url}/healthz", timeout=5).status_code == 200
    assert metric(a.url, "macroslow_tool_calls_total", tool="verify_maml", outcome="backend_unavailable") == 1
    start()
    deadline = time.monotonic() + 20
    while httpx2.get(f"{a.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "not ready again after the database came back"
        time.sleep(0.2)
    assert anyio.run(verify) == "ok"
    # The call refused while the database was down left no receipt (no receipt, no result): the
    # ledger holds the two answered calls only, nothing queued.
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        stored = conn.execute("SELECT count(*) FROM receipts WHERE tool = 'verify_maml'").fetchone()
        queued = conn.execute("SELECT count(*) FROM receipt_queue").fetchone()
    assert stored == (2,) and queued == (0,), (stored, queued)


def test_serve_workers_share_one_port_and_sum_metrics(tmp_path: Path, postgres_url: str) -> None:
    """`serve --workers 2`: two uvicorn worker processes; /metrics sums them (multi-process mode)."""
    env = {"MACROSLOW_DATABASE_URL": postgres_url, "MACROSLOW_LOG_FORMAT": "json"}
    r = Replica(tmp_path / "home", tmp_path / "workers.log", env, "--workers", "2")
    try:
        r.wait_ready()

        async def calls() -> None:
            for _ in range(6):  # a fresh connection each time, so both workers get some
                async with client(r.url) as c:
                    assert not (await c.call_tool("verify_maml", {"document": "x"})).is_error

        anyio.run(calls)
        assert metric(r.url, "macroslow_tool_calls_total", tool="verify_maml", outcome="ok") == 6
    finally:
        r.stop()
    lines = [
        json.loads(x) for x in Path(tmp_path / "workers.log").read_text().splitlines() if x.startswith("{")
    ]
    served = [x for x in lines if x.get("tool") == "verify_maml"]
    assert len(served) == 6 and all(x["sub"] == "local" and x["request_id"] for x in served)
