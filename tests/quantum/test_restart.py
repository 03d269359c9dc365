"""A real server process killed (SIGKILL) mid-job: the job stays a record, marked interrupted by the
next process, and the finished jobs keep their results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.quantum.test_run_tool import BELL, slow_circuit
from tests.server.test_transports import SERVE, _env, _free_port

pytestmark = pytest.mark.subprocess
HEARTBEAT = {"MACROSLOW_QUANTUM_HEARTBEAT_SECONDS": "0.2"}  # stale after 1 s


def serve(home: Path, port: int, log: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*SERVE, "--transport", "streamable-http", "--no-auth", "--port", str(port)],
        env={**_env(home), **HEARTBEAT},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    import socket

    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start listening")


async def read_job(client: Client, job_id: str) -> dict[str, Any]:
    return dict(json.loads((await client.read_resource(f"jobs://{job_id}")).contents[0].text))


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


async def start_jobs(port: int) -> tuple[dict[str, Any], str]:
    """A finished job and a long one, running when this returns."""
    async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp")) as client:
        done = await client.call_tool("run_quantum_circuit", {"circuit": BELL, "seed": 9})
        slow = await client.call_tool("run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0})
        job_id = slow.structured_content["job_id"]
        with anyio.fail_after(60):
            while (await read_job(client, job_id))["status"] != "running":
                await anyio.sleep(0.1)
    return dict(done.structured_content), job_id


async def read_jobs(port: int, *job_ids: str) -> list[dict[str, Any]]:
    async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp")) as client:
        return [await read_job(client, job_id) for job_id in job_ids]


def test_sigkill_mid_job_leaves_an_interrupted_record(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = serve(home, port, log)
        try:
            done, job_id = anyio.run(start_jobs, port)
            workers = children(proc.pid)
            assert workers, "the job runs in a worker process"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        # The worker dies with its server: no simulation outlives it.
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in workers:
            status = Path(f"/proc/{pid}/status")
            assert not status.exists() or "zombie" in status.read_text(), f"worker {pid} outlived the server"
        time.sleep(1.5)  # five missed heartbeats
        port = _free_port()
        proc = serve(home, port, log)
        try:
            stopped, kept = anyio.run(read_jobs, port, job_id, done["job_id"])
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    assert stopped["status"] == "interrupted" and stopped["counts"] is None
    assert kept["status"] == "succeeded" and kept["counts"] == done["counts"]


def test_sigterm_stops_cleanly_and_records_running_jobs_as_interrupted(tmp_path: Path) -> None:
    """Graceful shutdown: the server exits on SIGTERM, its running job is recorded interrupted at
    once (no heartbeat wait), and the ledger it leaves verifies."""
    home = tmp_path / "home"
    port = _free_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = serve(home, port, log)
        try:
            done, job_id = anyio.run(start_jobs, port)
        finally:
            proc.terminate()
            # A clean shutdown exits 0 (tests/server/test_shutdown.py).
            assert proc.wait(timeout=30) == 0
    from mcp_server.db import open_engine
    from mcp_server.home import open_keys
    from mcp_server.ledger.store import Ledger
    from mcp_server.quantum.store import JobStore
    from mcp_server.settings import Settings

    settings = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    engine = open_engine(settings.database)
    try:
        stopped = JobStore(engine).get(job_id)
        kept = JobStore(engine).get(done["job_id"])
        report = Ledger(engine, open_keys(settings)).verify()
    finally:
        engine.dispose()
    # Read straight from the database: only the server's own shutdown can have written this.
    assert stopped.status.value == "interrupted" and kept.status.value == "succeeded"
    assert report.ok, report.problems


SERVER_WITH_A_BUSY_WORKER = """
import multiprocessing, sys, time
from mcp_server.quantum.local import _die_with_parent

def busy():
    _die_with_parent()
    sum(range(10**13))  # one C call: holds the GIL, as some Aer simulation methods do, for hours

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=busy, daemon=True)
    child.start()
    print(child.pid, flush=True)
    time.sleep(600)
"""


def test_a_worker_holding_the_gil_still_dies_with_its_server(tmp_path: Path) -> None:
    """The watcher of a worker is a process of its own: it acts even while the worker's Python is
    stuck in one long C call (a watching thread needs the GIL, and once left a worker burning two
    cores for good after its server was gone)."""
    script = tmp_path / "server.py"
    script.write_text(SERVER_WITH_A_BUSY_WORKER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        worker = int(proc.stdout.readline())
        time.sleep(1.0)  # the worker is in its long C call
        assert Path(f"/proc/{worker}").exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    status = Path(f"/proc/{worker}/status")
    assert not status.exists() or "zombie" in status.read_text(), "the worker outlived its server"
