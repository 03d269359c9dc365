"""run_quantum_circuit on `azure:<target>` end to end: the MCP tool, the job service and the real
Azure adapter and SDK, against the loopback Azure Quantum fake (tests/quantum/azure_fake.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from mcp.client import Client

from mcp_server.ledger.receipts import json_digest
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.quantum.azure_fake import AzureQuantumFake, azure_fake
from tests.quantum.test_azure import AZURE_ENV
from tests.quantum.test_run_tool import BELL, error, ok, read_job

pytestmark = pytest.mark.anyio
FAST_POLL = {
    "azure_poll_initial_seconds": 0.05,
    "azure_poll_max_seconds": 0.2,
    "azure_quantum_timeout_seconds": 5,
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureQuantumFake]:
    for name in AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    with azure_fake(monkeypatch) as f:
        yield f
    assert not f.refused_hosts, f"the SDK tried to leave the fake: {f.refused_hosts}"


def azure_settings(make_settings: Callable[..., Settings], fake: AzureQuantumFake, **extra: Any) -> Settings:
    return make_settings(**fake.settings_overrides, **FAST_POLL, **extra)


async def test_ionq_simulator_job_end_to_end(
    make_settings: Callable[..., Settings], fake: AzureQuantumFake
) -> None:
    fake.auto_advance = True
    fake.counts = {"00": 61, "11": 39}
    async with Client(build_server(azure_settings(make_settings, fake))) as client:
        job = ok(
            await client.call_tool(
                "run_quantum_circuit",
                {"circuit": BELL, "shots": 100, "backend": "azure:ionq.simulator", "wait_seconds": 60},
            )
        )
        receipts = ok(await client.call_tool("list_receipts", {"tool": "run_quantum_circuit"}))["receipts"]
    assert job["status"] == "succeeded" and job["backend"] == "azure" and job["target"] == "ionq.simulator"
    assert job["counts"] == {"00": 61, "11": 39} and job["seed"] is None
    [remote] = list(fake.jobs)
    attested = json.loads(receipts[0]["attestation"])
    assert attested["remote_id"] == remote and attested["target"] == "ionq.simulator"
    assert attested["counts_digest"] == json_digest(job["counts"])
    assert any(line.startswith("PUT ") and "/jobs/" in line for line in fake.lines())


async def test_paid_hardware_is_refused_before_any_request(
    make_settings: Callable[..., Settings], fake: AzureQuantumFake
) -> None:
    async with Client(build_server(azure_settings(make_settings, fake))) as client:
        err = error(
            await client.call_tool(
                "run_quantum_circuit", {"circuit": BELL, "backend": "azure:ionq.qpu.aria-1"}
            )
        )
        jobs = json.loads((await client.read_resource("jobs://")).contents[0].text)["jobs"]
    assert err["code"] == "forbidden" and "QPU" in err["message"].upper()
    assert jobs == [] and fake.requests == []


async def test_quota_at_submit_is_rate_limited_with_the_azure_code(
    make_settings: Callable[..., Settings], fake: AzureQuantumFake
) -> None:
    fake.fail("job.create", 429, code="QuotaExceeded", retry_after=7)
    async with Client(build_server(azure_settings(make_settings, fake))) as client:
        err = error(
            await client.call_tool(
                "run_quantum_circuit", {"circuit": BELL, "backend": "azure:ionq.simulator"}
            )
        )
        jobs = json.loads((await client.read_resource("jobs://")).contents[0].text)["jobs"]
    assert err["code"] == "rate_limited" and err["details"]["retry_after"] == pytest.approx(7)
    assert "QuotaExceeded" in json.dumps(err["details"])
    assert [j["status"] for j in jobs] == ["failed"]  # recorded, not lost


async def test_failed_azure_job_reports_its_code(
    make_settings: Callable[..., Settings], fake: AzureQuantumFake
) -> None:
    async with Client(build_server(azure_settings(make_settings, fake))) as client:
        job = ok(
            await client.call_tool(
                "run_quantum_circuit", {"circuit": BELL, "backend": "azure:ionq.simulator", "wait_seconds": 0}
            )
        )
        fake.set_job_status(fake.last_job_id, "Failed", error_code="InvalidInputData", error_message="bad")
        with anyio.fail_after(30):
            while (done := await read_job(client, job["job_id"]))["status"] != "failed":
                await anyio.sleep(0.05)
    assert done["error"]["code"] == "backend_unavailable"
    assert "InvalidInputData" in json.dumps(done["error"])


async def test_cancel_an_azure_job(make_settings: Callable[..., Settings], fake: AzureQuantumFake) -> None:
    async with Client(build_server(azure_settings(make_settings, fake))) as client:
        job = ok(
            await client.call_tool(
                "run_quantum_circuit", {"circuit": BELL, "backend": "azure:ionq.simulator", "wait_seconds": 0}
            )
        )
        with anyio.fail_after(30):
            cancelled = ok(await client.call_tool("cancel_job", {"job_id": job["job_id"]}))
    assert cancelled["status"] == "cancelled"
    assert any(":cancel" in line for line in fake.lines())
    assert fake.jobs[fake.last_job_id].details["status"] == "Cancelled"


async def test_azure_job_is_polled_again_after_a_restart(
    make_settings: Callable[..., Settings], fake: AzureQuantumFake
) -> None:
    settings = azure_settings(make_settings, fake, quantum_heartbeat_seconds=0.1)
    async with Client(build_server(settings)) as client:
        job = ok(
            await client.call_tool(
                "run_quantum_circuit", {"circuit": BELL, "backend": "azure:ionq.simulator", "wait_seconds": 0}
            )
        )
    # The server stopped; the job kept running at the service and finished there.
    fake.set_job_status(fake.last_job_id, "Succeeded", counts={"00": 3, "11": 5})
    await anyio.sleep(0.6)  # its poller's heartbeat is stale now
    async with Client(build_server(settings)) as client:
        with anyio.fail_after(30):
            while (done := await read_job(client, job["job_id"]))["status"] != "succeeded":
                await anyio.sleep(0.05)
        receipts = ok(await client.call_tool("list_receipts", {"tool": "quantum_job"}))["receipts"]
    assert done["counts"] == {"00": 3, "11": 5}
    assert json.loads(receipts[0]["attestation"])["counts_digest"] == json_digest(done["counts"])


async def test_not_configured_is_a_clear_error(
    make_settings: Callable[..., Settings], fake: AzureQuantumFake
) -> None:
    async with Client(build_server(make_settings())) as client:
        err = error(
            await client.call_tool(
                "run_quantum_circuit", {"circuit": BELL, "backend": "azure:ionq.simulator"}
            )
        )
    assert err["code"] == "backend_unavailable" and "AZURE_QUANTUM" in err["message"]
