"""Cancelling: a request that waits for a job stops waiting, the job runs on; `cancel_job` stops it;
on a finished job `cancel_job` says nothing was cancelled; another caller's job is not_found. Over
the in-memory client, on the real local simulator (docs/quantum.md, "Cancelling")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp.client import Client

from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.quantum.test_run_tool import BELL, call, error, ok, read_job, slow_circuit, wait_for

pytestmark = pytest.mark.anyio

FEW_SECONDS = slow_circuit(qubits=20, layers=30)  # a statevector run of a few seconds


async def newest_job(client: Client) -> dict[str, Any] | None:
    jobs = json.loads((await client.read_resource("jobs://")).contents[0].text)["jobs"]
    return dict(jobs[0]) if jobs else None


async def abandon_wait(client: Client, circuit: str) -> str:
    """Call run_quantum_circuit waiting up to 60 s; once its job runs, cancel the request (the client
    abandons it: `notifications/cancelled` in legacy mode, the awaiting scope in-process otherwise).
    Returns the job's id, which the cancelled call never answered with."""
    answered: list[Any] = []

    async def run() -> None:
        answered.append(await call(client, "run_quantum_circuit", {"circuit": circuit, "wait_seconds": 60}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(60):
            while (job := await newest_job(client)) is None or job["status"] != "running":
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert not answered
    return str(job["job_id"])


async def job_receipts(client: Client, job_id: str) -> list[dict[str, Any]]:
    receipts = ok(await call(client, "list_receipts", {"tool": "quantum_job"}))["receipts"]
    return [r for r in receipts if r["backend_job_id"] == job_id]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_cancelling_the_wait_leaves_the_job_running(
    make_settings: Callable[..., Settings], mode: str
) -> None:
    async with Client(build_server(make_settings()), mode=mode) as client:
        job_id = await abandon_wait(client, FEW_SECONDS)
        assert (await read_job(client, job_id))["status"] == "running"
        done = await wait_for(client, job_id, "succeeded")
        receipts = await job_receipts(client, job_id)
    assert sum(done["counts"].values()) == 1024
    # Nobody waited for the end any more, so the job got its own receipt, attesting the result.
    assert len(receipts) == 1 and json.loads(receipts[0]["attestation"])["status"] == "succeeded"


async def test_a_job_whose_wait_was_cancelled_is_stopped_with_cancel_job(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings()), mode="legacy") as client:
        job_id = await abandon_wait(client, slow_circuit())
        with anyio.fail_after(15):
            cancelled = ok(await call(client, "cancel_job", {"job_id": job_id}))
        assert cancelled["status"] == "cancelled" and cancelled["message"] is None
        assert (await read_job(client, job_id))["status"] == "cancelled"
        receipts = await job_receipts(client, job_id)
    assert len(receipts) == 1 and json.loads(receipts[0]["attestation"])["status"] == "cancelled"


async def test_cancel_job_on_a_finished_job_says_nothing_was_cancelled(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings())) as client:
        done = ok(await call(client, "run_quantum_circuit", {"circuit": BELL, "seed": 5}))
        result = await call(client, "cancel_job", {"job_id": done["job_id"]})
        answer = ok(result)
        again = await read_job(client, done["job_id"])
    expected = f"job {done['job_id']} had already ended (succeeded); nothing was cancelled"
    assert answer["status"] == "succeeded" and answer["counts"] == done["counts"]
    assert answer["message"] == expected and result.content[0].text.startswith(expected)
    assert again["status"] == "succeeded" and again["counts"] == done["counts"]


async def test_cancel_job_twice_says_the_second_time_it_had_ended(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings())) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}))
        with anyio.fail_after(15):
            first = ok(await call(client, "cancel_job", {"job_id": job["job_id"]}))
        second = ok(await call(client, "cancel_job", {"job_id": job["job_id"]}))
    assert first["status"] == second["status"] == "cancelled" and first["message"] is None
    assert "had already ended (cancelled)" in second["message"]


async def test_another_callers_running_job_is_not_found_and_not_cancelled(
    make_settings: Callable[..., Settings],
) -> None:
    owner = make_settings()
    scopes = ["quantum:run", "quantum:read"]  # not receipts:audit, which may see every job
    other = Settings(**{**owner.model_dump(), "local_subject": "someone-else", "local_scopes": scopes})
    async with Client(build_server(owner)) as mine, Client(build_server(other)) as theirs:
        job = ok(await call(mine, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}))
        await wait_for(mine, job["job_id"], "running")
        err = error(await call(theirs, "cancel_job", {"job_id": job["job_id"]}))
        assert err["code"] == "not_found"
        still = await read_job(mine, job["job_id"])
        assert still["status"] == "running"
        with anyio.fail_after(15):
            assert ok(await call(mine, "cancel_job", {"job_id": job["job_id"]}))["status"] == "cancelled"
