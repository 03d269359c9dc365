"""run_quantum_circuit, cancel_job and jobs:// over the in-memory client, on the real local simulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from mcp_server.adapters import error_of
from mcp_server.crypto.keys import KeyStore
from mcp_server.home import initialize, open_keys
from mcp_server.ledger.receipts import json_digest
from mcp_server.server import build_server
from mcp_server.settings import Settings
from mcp_server.signing import sign_document

pytestmark = pytest.mark.anyio

BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0], q[1];
measure q -> c;
"""

GHZ3_QASM3 = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
bit[3] c;
h q[0];
cx q[0], q[1];
cx q[1], q[2];
c = measure q;
"""


def ghz(n: int) -> str:
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{n}];", f"creg c[{n}];", "h q[0];"]
    lines += [f"cx q[{i}], q[{i + 1}];" for i in range(n - 1)]
    return "\n".join([*lines, "measure q -> c;", ""])


def slow_circuit(qubits: int = 24, layers: int = 400) -> str:
    """A statevector run that takes minutes: only cancelling or killing ends it early."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{qubits}];", f"creg c[{qubits}];"]
    for layer in range(layers):
        lines += [f"rx({0.1 + layer * 0.01}) q[{i}];" for i in range(qubits)]
        lines += [f"cx q[{i}], q[{(i + 1) % qubits}];" for i in range(qubits)]
    return "\n".join([*lines, "measure q -> c;", ""])


def low_entanglement(n: int) -> str:
    """A chain of CNOTs with small non-Clifford rotations: wide, but little entanglement."""
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{n}];", f"creg c[{n}];", "h q[0];"]
    for i in range(n - 1):
        lines += [f"cx q[{i}], q[{i + 1}];", f"rz(0.3) q[{i}];"]
    lines.append(f"t q[{n - 1}];")
    return "\n".join([*lines, "measure q -> c;", ""])


async def call(client: Client, name: str, args: dict[str, Any], **kw: Any) -> Any:
    return await client.call_tool(name, args, **kw)


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    return dict(result.structured_content)


def error(result: Any) -> dict[str, Any]:
    assert result.is_error, result.structured_content
    return dict(error_of(result))


async def test_bell_pair_counts_are_correlated_and_balanced(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": BELL, "shots": 4000, "seed": 11}))
    assert job["status"] == "succeeded" and job["backend"] == "local" and job["target"] == "aer"
    assert set(job["counts"]) == {"00", "11"} and sum(job["counts"].values()) == 4000
    # Binomial(4000, 1/2): sd ~ 32, so 5 sd is 160.
    assert abs(job["counts"]["00"] - 2000) < 160
    assert job["qubits"] == 2 and job["gate_counts"] == {"cx": 1, "h": 1, "measure": 2}
    assert job["counts_digest"] == json_digest(job["counts"])
    assert "probabilities" not in job  # derivable from the counts: not sent
    assert job["distinct_outcomes"] == 2 and job["top_counts"] == dict(
        sorted(job["counts"].items(), key=lambda kv: (-kv[1], kv[0]))
    )
    assert job["method"] in ("stabilizer", "statevector")
    assert job["seed"] == 11 and job["circuit_digest"].startswith("sha256:")


async def test_same_seed_same_counts_and_seed_is_recorded(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        a = ok(await call(client, "run_quantum_circuit", {"circuit": ghz(5), "seed": 7}))
        b = ok(await call(client, "run_quantum_circuit", {"circuit": ghz(5), "seed": 7}))
        c = ok(await call(client, "run_quantum_circuit", {"circuit": ghz(5)}))
    assert a["counts"] == b["counts"] and set(a["counts"]) == {"00000", "11111"}
    assert isinstance(c["seed"], int)  # chosen by the server, and recorded, so the run can be repeated
    assert a["shots"] == 1024


async def test_qasm3_ghz(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": GHZ3_QASM3, "shots": 2000, "seed": 3}))
    assert set(job["counts"]) == {"000", "111"}
    assert abs(job["counts"]["000"] - 1000) < 120


async def test_malformed_qasm_names_the_line(make_settings: Callable[..., Settings]) -> None:
    bad = BELL.replace("cx q[0], q[1];", "cx q[0] q[1];")
    async with Client(build_server(make_settings())) as client:
        err = error(await call(client, "run_quantum_circuit", {"circuit": bad}))
    assert err["code"] == "invalid_document" and err["details"]["line"] == 6


async def test_33_qubits_refused_at_the_default_limit(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        err = error(await call(client, "run_quantum_circuit", {"circuit": ghz(33)}))
        receipts = ok(await call(client, "list_receipts", {"limit": 1}))
    assert err["code"] == "request_too_large"
    assert err["details"] == {"requested": 33, "allowed": 32}
    assert receipts["receipts"][0]["decision"] == "denied"


async def test_40_qubit_low_entanglement_circuit_runs_on_mps(make_settings: Callable[..., Settings]) -> None:
    # A 1 GiB statevector budget holds 26 qubits, so 40 cannot be a statevector run here.
    settings = make_settings(max_qubits=64, quantum_memory_mb=1024)
    async with Client(build_server(settings)) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": low_entanglement(40), "seed": 5}))
    assert job["method"] == "matrix_product_state" and job["qubits"] == 40
    assert set(job["counts"]) == {"0" * 40, "1" * 40}


async def test_wide_clifford_circuit_runs_on_the_stabilizer_method(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings(max_qubits=64, quantum_memory_mb=64))) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": ghz(40), "seed": 5}))
    assert job["method"] == "stabilizer" and set(job["counts"]) == {"0" * 40, "1" * 40}


async def test_too_wide_for_any_local_method(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings(max_qubits=100, quantum_memory_mb=64))) as client:
        err = error(await call(client, "run_quantum_circuit", {"circuit": low_entanglement(70)}))
    assert err["code"] == "request_too_large" and err["details"]["requested"] == 70
    assert "matrix-product-state" in err["message"]


async def test_shots_over_the_limit(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings(max_shots=1000))) as client:
        err = error(await call(client, "run_quantum_circuit", {"circuit": BELL, "shots": 1001}))
    assert err["code"] == "request_too_large" and err["details"] == {"requested": 1001, "allowed": 1000}


async def test_bad_backend_is_a_clear_error(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        err = error(await call(client, "run_quantum_circuit", {"circuit": BELL, "backend": "ibm"}))
    assert err["code"] == "invalid_document" and "azure:<target>" in err["message"]


async def test_no_circuit_without_the_scope(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings(local_scopes=["maml:read"]))) as client:
        err = error(await call(client, "run_quantum_circuit", {"circuit": BELL}))
    assert err["code"] == "forbidden" and err["details"]["required_scope"] == "quantum:run"


# -- workflows ---------------------------------------------------------------------------------


def _signed(settings: Settings, text: str) -> str:
    initialize(settings, example=False)
    keys: KeyStore = open_keys(settings)
    return sign_document(text, keys).signed_document


async def test_signed_ghz_workflow_runs_and_attests(
    make_settings: Callable[..., Settings], example_text: str
) -> None:
    settings = make_settings()
    signed = _signed(settings, example_text)
    async with Client(build_server(settings)) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": signed, "seed": 1}))
        receipts = ok(await call(client, "list_receipts", {"limit": 5}))
    assert job["shots"] == 1024  # the workflow's requires.shots
    assert set(job["counts"]) == {"000", "111"}
    assert job["document_id"] == "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
    call_receipt = next(r for r in receipts["receipts"] if r["tool"] == "run_quantum_circuit")
    assert call_receipt["action"] == "execute" and call_receipt["backend_job_id"] == job["job_id"]
    attested = json.loads(call_receipt["attestation"])
    assert attested == {
        "job_id": job["job_id"],
        "backend": "local",
        "target": "aer",
        "remote_id": None,
        "circuit_digest": job["circuit_digest"],
        "shots": 1024,
        "seed": 1,
        "method": job["method"],
        "status": "succeeded",
        "counts_digest": json_digest(job["counts"]),
    }
    # The call that waited for the result attests it: no separate job receipt.
    assert not [r for r in receipts["receipts"] if r["tool"] == "quantum_job"]


async def test_a_job_that_ends_after_its_call_gets_its_own_receipt(
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings())) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": BELL, "seed": 4, "wait_seconds": 0}))
        done = await wait_for(client, job["job_id"], "succeeded")
        receipts = ok(await call(client, "list_receipts", {"tool": "quantum_job"}))["receipts"]
    assert len(receipts) == 1 and receipts[0]["backend_job_id"] == job["job_id"]
    attested = json.loads(receipts[0]["attestation"])
    assert attested["status"] == "succeeded" and attested["counts_digest"] == json_digest(done["counts"])
    assert attested["circuit_digest"] == job["circuit_digest"] and attested["seed"] == 4


async def test_unsigned_workflow_is_refused(
    make_settings: Callable[..., Settings], example_text: str
) -> None:
    async with Client(build_server(make_settings())) as client:
        err = error(await call(client, "run_quantum_circuit", {"circuit": example_text}))
        jobs = json.loads((await client.read_resource("jobs://")).contents[0].text)
    assert err["code"] == "signature_invalid"
    assert jobs["jobs"] == []  # nothing ran


async def test_workflow_requires_bounds_the_circuit(
    make_settings: Callable[..., Settings], example_text: str
) -> None:
    settings = make_settings()
    four_wide = example_text.replace("qreg q[3];", "qreg q[4];").replace("creg c[3];", "creg c[4];")
    signed_wide = _signed(settings, four_wide)
    signed = _signed(settings, example_text)
    async with Client(build_server(settings)) as client:
        wide = error(await call(client, "run_quantum_circuit", {"circuit": signed_wide}))
        many = error(await call(client, "run_quantum_circuit", {"circuit": signed, "shots": 2048}))
    assert wide["code"] == "request_too_large" and wide["details"] == {"requested": 4, "allowed": 3}
    assert "requires.qubits" in wide["message"]
    assert many["code"] == "request_too_large" and many["details"] == {"requested": 2048, "allowed": 1024}


# -- jobs --------------------------------------------------------------------------------------


async def read_job(client: Client, job_id: str) -> dict[str, Any]:
    return dict(json.loads((await client.read_resource(f"jobs://{job_id}")).contents[0].text))


async def wait_for(client: Client, job_id: str, status: str, seconds: float = 60) -> dict[str, Any]:
    with anyio.fail_after(seconds):
        while (job := await read_job(client, job_id))["status"] != status:
            await anyio.sleep(0.1)
    return job


async def test_long_job_is_tracked_then_cancelled(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        started = ok(
            await call(client, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0})
        )
        assert started["status"] in ("queued", "running") and "jobs://" in started["message"]
        job_id = started["job_id"]
        running = await wait_for(client, job_id, "running")
        assert running["counts"] is None
        listed = json.loads((await client.read_resource("jobs://")).contents[0].text)["jobs"]
        assert [j["job_id"] for j in listed] == [job_id]
        with anyio.fail_after(15):
            cancelled = ok(await call(client, "cancel_job", {"job_id": job_id}))
        assert (
            cancelled["status"] == "cancelled"
            and "cancelled by agent://local" in cancelled["error"]["message"]
        )
        assert (await read_job(client, job_id))["status"] == "cancelled"
        # Cancelling again changes nothing; the server still runs circuits afterwards.
        assert ok(await call(client, "cancel_job", {"job_id": job_id}))["status"] == "cancelled"
        assert ok(await call(client, "run_quantum_circuit", {"circuit": BELL}))["status"] == "succeeded"


async def test_wait_reports_progress(make_settings: Callable[..., Settings]) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(build_server(make_settings())) as client:
        job = ok(
            await client.call_tool(
                "run_quantum_circuit",
                {"circuit": slow_circuit(), "wait_seconds": 2.5},
                progress_callback=on_progress,
            )
        )
        assert job["status"] in ("queued", "running")
        ok(await call(client, "cancel_job", {"job_id": job["job_id"]}))
    assert seen and all(total == 2.5 for _, total, _ in seen)
    assert any(job["job_id"] in (message or "") for _, _, message in seen)


async def test_another_callers_job_looks_like_no_job(make_settings: Callable[..., Settings]) -> None:
    first = make_settings()
    async with Client(build_server(first)) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": BELL}))
    scopes = ["quantum:run", "quantum:read"]  # not receipts:audit, which may see every job
    other = Settings(**{**first.model_dump(), "local_subject": "someone-else", "local_scopes": scopes})
    async with Client(build_server(other)) as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource(f"jobs://{job['job_id']}")
        assert info.value.data["code"] == "not_found"
        err = error(await call(client, "cancel_job", {"job_id": job["job_id"]}))
        assert err["code"] == "not_found"
        assert json.loads((await client.read_resource("jobs://")).contents[0].text)["jobs"] == []


async def test_a_job_outlives_its_server_as_a_record(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with Client(build_server(settings)) as client:
        done = ok(await call(client, "run_quantum_circuit", {"circuit": BELL, "seed": 2}))
        slow = ok(await call(client, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}))
        await wait_for(client, slow["job_id"], "running")
    # The server stopped with the slow job running: it is recorded as interrupted, never lost.
    async with Client(build_server(settings)) as client:
        again = await read_job(client, done["job_id"])
        stopped = await read_job(client, slow["job_id"])
    assert again["status"] == "succeeded" and again["counts"] == done["counts"]
    assert stopped["status"] == "interrupted" and stopped["error"]["code"] == "interrupted"


async def test_concurrent_jobs_are_bounded(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(quantum_workers=1, quantum_max_queued=1)
    async with Client(build_server(settings)) as client:
        a = ok(await call(client, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}))
        await wait_for(client, a["job_id"], "running")
        b = ok(await call(client, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0.5}))
        assert b["status"] == "queued"  # one worker, busy: b waits its turn
        c = error(await call(client, "run_quantum_circuit", {"circuit": BELL, "wait_seconds": 0}))
        assert c["code"] == "rate_limited" and c["details"]["retry_after"] > 0
        ok(await call(client, "cancel_job", {"job_id": b["job_id"]}))
        assert (await read_job(client, b["job_id"]))["status"] == "cancelled"
        ok(await call(client, "cancel_job", {"job_id": a["job_id"]}))
        # With the worker free again, a small job runs.
        assert ok(await call(client, "run_quantum_circuit", {"circuit": BELL}))["status"] == "succeeded"


async def test_listen_hears_job_status_changes(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}))
        uri = f"jobs://{job['job_id']}"
        async with client.listen(resource_subscriptions=[uri]) as sub:
            ok(await call(client, "cancel_job", {"job_id": job["job_id"]}))
            with anyio.fail_after(10):
                async for event in sub:
                    if getattr(event, "uri", None) == uri:
                        break
        assert (await read_job(client, job["job_id"]))["status"] == "cancelled"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_legacy_subscribe_gets_resource_updated(make_settings: Callable[..., Settings]) -> None:
    updates: list[str] = []

    async def handler(message: Any) -> None:
        params = getattr(getattr(message, "params", None), "uri", None)
        if getattr(message, "method", "") == "notifications/resources/updated" and params:
            updates.append(str(params))

    async with Client(build_server(make_settings()), mode="legacy", message_handler=handler) as client:
        job = ok(await call(client, "run_quantum_circuit", {"circuit": slow_circuit(), "wait_seconds": 0}))
        uri = f"jobs://{job['job_id']}"
        await client.session.subscribe_resource(uri)
        ok(await call(client, "cancel_job", {"job_id": job["job_id"]}))
        with anyio.fail_after(10):
            while uri not in updates:
                await anyio.sleep(0.05)


async def test_a_large_result_comes_as_a_summary_and_a_link_to_every_count(
    make_settings: Callable[..., Settings],
) -> None:
    """12 qubits in superposition, 20,000 shots: about 4,000 distinct outcomes, whose JSON is over
    the inline budget (8 KiB here). The result holds the top counts and a resource_link; the pages
    read from it add up to every count, whose digest is the one the job (and its receipt) binds."""
    circuit = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[12];\ncreg c[12];\n'
    circuit += "".join(f"h q[{i}];\n" for i in range(12)) + "measure q -> c;\n"
    async with Client(build_server(make_settings(max_result_bytes=8192))) as client:
        result = await call(client, "run_quantum_circuit", {"circuit": circuit, "shots": 20000, "seed": 3})
        job = ok(result)
        links = [c for c in result.content if c.type == "resource_link"]
        pages, uri = [], links[0].uri if links else None
        while uri is not None:
            page = json.loads((await client.read_resource(str(uri))).contents[0].text)
            pages.append(page)
            uri = page["next"]
    assert job["counts"] is None and job["distinct_outcomes"] > 3000
    assert len(job["top_counts"]) == 16 and job["counts_resource"] == f"jobs://{job['job_id']}/counts"
    assert str(links[0].uri) == job["counts_resource"]
    text = result.content[0].text
    assert len(text) < 1000 and job["counts_resource"] in text and "distinct outcomes" in text
    every: dict[str, int] = {}
    for page in pages:
        every.update(page["counts"])
    assert len(pages) == pages[0]["pages"] > 1 and sum(every.values()) == 20000
    assert len(every) == job["distinct_outcomes"] and json_digest(every) == job["counts_digest"]
    assert all(job["top_counts"][k] == every[k] for k in job["top_counts"])
