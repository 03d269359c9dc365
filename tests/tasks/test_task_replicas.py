"""A task made through one replica is read and cancelled through another: two real `serve`
processes on one PostgreSQL database, the SDK client over Streamable HTTP at 2026-07-28 with the
tasks extension declared (tests/tasks/client.py)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.quantum.test_run_tool import BELL, slow_circuit
from tests.server.test_replicas import read_job, replicas  # noqa: F401 - the fixture
from tests.tasks.client import TasksRequester, call, get, send, settle

pytestmark = pytest.mark.subprocess


def tasks_client(url: str) -> Client:
    return Client(streamable_http_client(f"{url}/mcp"), extensions=[TasksRequester()])  # type: ignore[arg-type]


def test_a_task_made_via_one_replica_is_read_and_cancelled_via_the_other(
    replicas: Any,  # noqa: F811
    postgres_url: str,
) -> None:
    a, b = replicas(2, postgres_url)

    async def scenario() -> None:
        async with tasks_client(a.url) as ca, tasks_client(b.url) as cb:
            assert ca.protocol_version == "2026-07-28"
            # A short run, made on A, followed to its counts on B.
            bell = await call(ca, "run_quantum_circuit", {"circuit": BELL, "seed": 9})
            done = await settle(cb, bell.task_id)
            assert done["status"] == "completed"
            assert sum(done["result"]["structuredContent"]["counts"].values()) == 1024
            # A long run, made on A, seen working and cancelled on B; A's process stops it.
            slow = await call(ca, "run_quantum_circuit", {"circuit": slow_circuit()})
            job_id = slow.status_message.split()[1]
            with anyio.fail_after(60):
                while (await read_job(cb, job_id))["status"] != "running":
                    await anyio.sleep(0.1)
            assert (await get(cb, slow.task_id))["status"] == "working"
            await send(cb, "tasks/cancel", slow.task_id)
            final = await settle(cb, slow.task_id, 20)
            assert final["status"] == "cancelled"
            assert (await read_job(ca, job_id))["status"] == "cancelled"
            assert (await get(ca, slow.task_id))["status"] == "cancelled"
            # Unknown ids are refused alike on both.
            for c in (ca, cb):
                with pytest.raises(MCPError) as raised:
                    await get(c, "unknown-task-id")
                assert raised.value.error.code == -32602

    anyio.run(scenario)
