"""The tasks extension (`io.modelcontextprotocol/tasks`) over the in-memory client at protocol
2026-07-28, on the real simulator and the loopback OpenAI server (docs/tasks.md): a job-backed task
followed to its result, cancelled, refused inline; a deferred `query_openai` task; only the creator
sees a task; a client without the extension (or on an older protocol) is answered as before; an
expired task is gone while its receipts verify."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult
from sqlalchemy import update

from mcp_server.ledger.store import Ledger
from mcp_server.server import build_server
from mcp_server.settings import Settings
from mcp_server.tasks.store import TaskRow
from tests.llm.openai_fake import FakeOpenAI, Fault
from tests.quantum.test_cancellation import newest_job
from tests.quantum.test_run_tool import BELL, read_job, slow_circuit, wait_for
from tests.tasks.client import TasksRequester, call, get, send, settle

pytestmark = pytest.mark.anyio


def tasks_client(settings: Settings, **kw: Any) -> Client:
    return Client(build_server(settings), extensions=[TasksRequester()], **kw)


async def receipts(client: Client, tool: str) -> list[dict[str, Any]]:
    result = await client.call_tool("list_receipts", {"tool": tool})
    return list(result.structured_content["receipts"])


async def test_a_quantum_run_is_answered_with_a_task_that_ends_with_the_counts(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    async with tasks_client(settings) as client:
        assert client.protocol_version == "2026-07-28"
        assert "io.modelcontextprotocol/tasks" in (client.server_capabilities.extensions or {})
        handle = await call(client, "run_quantum_circuit", {"circuit": BELL, "seed": 5, "wait_seconds": 30})
        assert not isinstance(handle, CallToolResult)  # a task, although it asked to wait 30 s
        assert handle.status in ("working", "completed")
        assert handle.ttl_ms == int(settings.job_retention_seconds * 1000) and handle.poll_interval_ms == 1000
        assert len(handle.task_id) >= 32
        assert "macroslow-mcp/receipt" in (handle.meta or {})  # the call that made the task has its receipt
        task = await settle(client, handle.task_id)
        assert task["status"] == "completed" and task["resultType"] == "complete"
        result = task["result"]
        assert result["isError"] is False
        job = result["structuredContent"]
        assert job["status"] == "succeeded" and sum(job["counts"].values()) == 1024
        assert set(job["counts"]) <= {"00", "11"}
        assert (await read_job(client, job["job_id"]))["counts"] == job["counts"]  # the same job
        # One receipt for the call (the job queued), one for the job's end, attesting the counts.
        [submitted] = await receipts(client, "run_quantum_circuit")
        [ended] = await receipts(client, "quantum_job")
    assert submitted["backend_job_id"] == ended["backend_job_id"] == job["job_id"]
    assert json.loads(ended["attestation"])["status"] == "succeeded"


async def test_a_client_without_the_extension_is_answered_as_before(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    for client in (Client(build_server(settings)), tasks_client(settings, mode="legacy")):
        async with client:
            arguments = {"circuit": BELL, "seed": 5, "wait_seconds": 60}
            result = await client.session.call_tool("run_quantum_circuit", arguments)
            assert isinstance(result, CallToolResult) and not result.is_error
            assert result.structured_content["status"] == "succeeded"


async def test_task_methods_need_the_extension_declared(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with tasks_client(settings) as client:
        handle = await call(client, "run_quantum_circuit", {"circuit": BELL})
    async with Client(build_server(settings)) as plain:
        with pytest.raises(MCPError) as raised:
            await get(plain, handle.task_id)
    assert raised.value.error.code == -32021
    assert raised.value.error.data["requiredCapabilities"]["extensions"] == {
        "io.modelcontextprotocol/tasks": {}
    }


async def test_a_refusal_is_answered_inline_without_a_task(make_settings: Callable[..., Settings]) -> None:
    async with tasks_client(make_settings(max_shots=100)) as client:
        result = await call(client, "run_quantum_circuit", {"circuit": BELL, "shots": 1000})
        assert isinstance(result, CallToolResult) and result.is_error
        assert result.content[0].text.startswith("request_too_large")


async def test_only_the_creator_sees_a_task(make_settings: Callable[..., Settings]) -> None:
    owner = make_settings()
    other = Settings(**{**owner.model_dump(), "local_subject": "someone-else"})  # same scopes, even audit
    async with tasks_client(owner) as mine, tasks_client(other) as theirs:
        handle = await call(mine, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0})
        for method in ("tasks/get", "tasks/cancel", "tasks/update"):
            with pytest.raises(MCPError) as raised:
                await send(
                    theirs, method, handle.task_id, **({"inputResponses": {}} if "update" in method else {})
                )
            assert raised.value.error.code == -32602 and "not found" in raised.value.error.message
        with pytest.raises(MCPError) as unknown:
            await get(theirs, "no-such-task")
        assert unknown.value.error.message == raised.value.error.message  # the same answer
        assert (await get(mine, handle.task_id))["status"] == "working"
        await send(mine, "tasks/cancel", handle.task_id)
        assert (await settle(mine, handle.task_id, 20))["status"] == "cancelled"


async def test_tasks_cancel_stops_the_job_and_its_receipt_says_so(
    make_settings: Callable[..., Settings],
) -> None:
    async with tasks_client(make_settings()) as client:
        handle = await call(client, "run_quantum_circuit", {"circuit": slow_circuit()})
        job = await newest_job(client)
        assert job is not None and handle.status_message in (
            f"job {job['job_id']} {s}" for s in ("queued", "running")
        )
        job_id = str(job["job_id"])
        await wait_for(client, job_id, "running")
        # tasks/update has nothing outstanding to answer (responses are ignored); both acknowledge.
        for method, params in (("tasks/update", {"inputResponses": {}}), ("tasks/cancel", {})):
            acknowledged = await send(client, method, handle.task_id, **params)
            assert acknowledged["resultType"] == "complete"
            assert set(acknowledged) <= {"resultType", "_meta"}
        task = await settle(client, handle.task_id, 20)
        assert task["status"] == "cancelled" and "result" not in task
        assert (await read_job(client, job_id))["status"] == "cancelled"
        [ended] = await receipts(client, "quantum_job")
    assert json.loads(ended["attestation"])["status"] == "cancelled"


async def test_a_model_call_runs_as_a_deferred_task(
    llm_settings: Callable[..., Settings], fake: FakeOpenAI
) -> None:
    async with tasks_client(llm_settings()) as client:
        handle = await call(client, "query_openai", {"prompt": "Say hello"})
        assert handle.status in ("working", "completed") and "macroslow-mcp/receipt" not in (
            handle.meta or {}
        )
        task = await settle(client, handle.task_id)
        assert task["status"] == "completed"
        result = task["result"]
        assert result["structuredContent"]["text"] == "Hello from the loopback model."
        # Its receipt was written when the answer came, and the stored result carries it.
        [receipt] = await receipts(client, "query_openai")
        assert result["_meta"]["macroslow-mcp/receipt"]["id"] == receipt["id"] and receipt["outcome"] == "ok"
    assert len(fake.requests) == 1


@pytest.mark.parametrize("via", ["the process running it", "another process"])
async def test_a_deferred_task_cancelled_records_a_cancelled_receipt(
    llm_settings: Callable[..., Settings], fake: FakeOpenAI, via: str
) -> None:
    """Cancelled through the server running the model call, it stops at once; through another server
    on the same database (which does not run it), it is flagged and stops at the runner's next
    heartbeat."""
    fake.always = Fault(delay=5.0)
    settings = llm_settings(quantum_heartbeat_seconds=0.1)
    async with tasks_client(settings) as a, tasks_client(settings) as b:
        handle = await call(a, "query_openai", {"prompt": "Say hello slowly"})
        with anyio.fail_after(10):
            while not fake.requests:
                await anyio.sleep(0.02)
        canceller = a if via == "the process running it" else b
        await send(canceller, "tasks/cancel", handle.task_id)
        task = await settle(canceller, handle.task_id, 10)
        assert task["status"] == "cancelled"
        [receipt] = await receipts(a, "query_openai")
    assert receipt["outcome"] == "cancelled"


async def test_an_expired_task_is_gone_and_its_receipts_still_verify(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(job_retention_seconds=60)
    server = build_server(settings)
    async with Client(server, extensions=[TasksRequester()]) as client:
        handle = await call(client, "run_quantum_circuit", {"circuit": BELL, "seed": 1})
        assert handle.ttl_ms == 60_000
        assert (await settle(client, handle.task_id))["status"] == "completed"
        services = server.host.current()
        await services.tasks.beat(now=time.time() + 61)
        with pytest.raises(MCPError) as raised:
            await get(client, handle.task_id)
        assert raised.value.error.code == -32602
        ledger: Ledger = services.ledger
        report = await anyio.to_thread.run_sync(ledger.verify)
    assert report.receipts >= 2 and not report.uncovered


async def test_a_task_whose_process_stopped_beating_fails(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(quantum_heartbeat_seconds=0.1)
    server = build_server(settings)
    async with Client(server, extensions=[TasksRequester()]) as client:
        await client.call_tool("validate_maml", {"document": "x"})  # the services are open
        tasks = server.host.current().tasks
        principal = await server.admission.identify()
        # A task a process that has since died was running: its heartbeat is a minute old.
        record = tasks.store.create(
            "orphan-task", principal=principal.uri, tool="query_openai", ttl_seconds=None
        )
        assert record.runner is None
        with tasks.store.engine.begin() as conn:
            conn.execute(
                update(TaskRow)
                .where(TaskRow.id == "orphan-task")
                .values(runner="gone", heartbeat_at=time.time() - 60)
            )
        assert (await get(client, "orphan-task"))["status"] == "working"
        await tasks.beat()
        task = await get(client, "orphan-task")
    assert task["status"] == "failed"
    assert task["error"] == {
        "code": -32603,
        "message": "the server process running this task stopped before it ended",
    }
