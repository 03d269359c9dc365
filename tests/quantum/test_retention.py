"""Retention: jobs that ended more than MACROSLOW_JOB_RETENTION_SECONDS ago are deleted by the job
service's heartbeat (a bounded batch a pass); queued and running jobs are never; receipts stay and
the ledger still verifies (docs/quantum.md, "Retention")."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from mcp_server.cli import main
from mcp_server.db import open_engine
from mcp_server.quantum import service
from mcp_server.quantum.backends import JobStatus
from mcp_server.quantum.jobs import Job
from mcp_server.quantum.service import JobService
from mcp_server.quantum.store import JobStore
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.quantum.test_run_tool import BELL, call, ok, read_job, slow_circuit, wait_for

DAY = 86_400.0
NOW = 1_800_000_000.0


def job(job_id: str, status: JobStatus, *, finished_at: float | None) -> Job:
    """A job row as the service writes it, created a week before it finished (or before NOW)."""
    created = (finished_at or NOW) - 7 * DAY
    return Job(
        id=job_id,
        principal="agent://local",
        issuer="local",
        backend="local",
        target="aer",
        status=status,
        created_at=created,
        updated_at=finished_at or created,
        started_at=created,
        finished_at=finished_at,
        qubits=2,
        depth=2,
        shots=10,
        seed=1,
        gate_counts={"h": 1},
        circuit_digest="sha256:" + "0" * 64,
        document_id=None,
        method="automatic",
        remote_id=None,
        runner="elsewhere",
        heartbeat_at=NOW,
        cancel_requested=False,
        result=None,
        error=None,
    )


def service_with(settings: Settings, *jobs: Job) -> JobService:
    """A job service (not started: no heartbeat thread) over a store holding `jobs`."""
    store = JobStore(open_engine(settings.database))
    for row in jobs:
        store.create(**row.fields())
    return JobService(settings, store)


def remaining(jobs: JobService) -> set[str]:
    return {j.id for j in jobs.store.recent(None, limit=100)}


def test_finished_jobs_past_retention_are_deleted_and_others_kept(
    make_settings: Callable[..., Settings],
) -> None:
    jobs = service_with(
        make_settings(job_retention_seconds=DAY),
        job("old-succeeded", JobStatus.succeeded, finished_at=NOW - 2 * DAY),
        job("old-failed", JobStatus.failed, finished_at=NOW - DAY - 1),
        job("old-cancelled", JobStatus.cancelled, finished_at=NOW - 3 * DAY),
        job("old-interrupted", JobStatus.interrupted, finished_at=NOW - 3 * DAY),
        job("recent", JobStatus.succeeded, finished_at=NOW - DAY + 1),
        job("queued", JobStatus.queued, finished_at=None),
        job("running", JobStatus.running, finished_at=None),
    )
    assert jobs.expire_finished(now=NOW) == 4
    assert remaining(jobs) == {"recent", "queued", "running"}
    assert jobs.expire_finished(now=NOW) == 0
    # A day later the recent one has expired too; unfinished jobs never do.
    assert jobs.expire_finished(now=NOW + DAY) == 1
    assert remaining(jobs) == {"queued", "running"}


def test_retention_zero_keeps_every_job(make_settings: Callable[..., Settings]) -> None:
    jobs = service_with(
        make_settings(job_retention_seconds=0),
        job("ancient", JobStatus.succeeded, finished_at=1.0),
    )
    assert jobs.expire_finished(now=NOW) == 0 and remaining(jobs) == {"ancient"}


def test_a_pass_deletes_a_bounded_batch_oldest_first(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "EXPIRE_BATCH", 2)
    jobs = service_with(
        make_settings(job_retention_seconds=DAY),
        *(job(f"old-{i}", JobStatus.succeeded, finished_at=NOW - (10 - i) * DAY) for i in range(3)),
    )
    assert jobs.expire_finished(now=NOW) == 2 and remaining(jobs) == {"old-2"}
    assert jobs.expire_finished(now=NOW) == 1 and remaining(jobs) == set()


def test_the_default_retention_is_a_week(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().job_retention_seconds == 7 * DAY


@pytest.mark.anyio
async def test_expired_jobs_vanish_from_jobs_resources_and_their_receipts_verify(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(job_retention_seconds=1, quantum_heartbeat_seconds=0.1)
    async with Client(build_server(settings)) as client:
        done = ok(await call(client, "run_quantum_circuit", {"circuit": BELL, "seed": 3}))
        later = ok(await call(client, "run_quantum_circuit", {"circuit": BELL, "wait_seconds": 0}))
        await wait_for(client, later["job_id"], "succeeded")
        slow = ok(await call(client, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}))
        await wait_for(client, slow["job_id"], "running")
        # The heartbeat (every 0.1 s) deletes each finished job about a second after it ended.
        with anyio.fail_after(10):
            for expired in (done["job_id"], later["job_id"]):
                while True:
                    try:
                        await read_job(client, expired)
                    except MCPError as exc:
                        assert exc.data["code"] == "not_found"
                        break
                    await anyio.sleep(0.1)
        with pytest.raises(MCPError) as counts:
            await client.read_resource(f"jobs://{done['job_id']}/counts")
        assert counts.value.data["code"] == "not_found"
        listed = json.loads((await client.read_resource("jobs://")).contents[0].text)["jobs"]
        assert [j["job_id"] for j in listed] == [slow["job_id"]]
        assert (await read_job(client, slow["job_id"]))["status"] == "running"  # never expired
        receipts = ok(await call(client, "list_receipts", {"limit": 50}))["receipts"]
        ok(await call(client, "cancel_job", {"job_id": slow["job_id"]}))
    # The receipts of the expired jobs are still in the ledger, which verifies whole.
    bound = {r["backend_job_id"] for r in receipts}
    assert {done["job_id"], later["job_id"]} <= bound
    monkeypatch.chdir(tmp_path)  # no stray .env
    with pytest.raises(SystemExit) as exit_info:
        main(["receipts", "verify", "--home", str(settings.home)])
    assert exit_info.value.code in (0, None)
