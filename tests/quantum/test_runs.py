"""`plan_run`: the rules of `run_quantum_circuit`'s arguments, tested without a client."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mcp_server.calls import Call
from mcp_server.errors import InvalidDocument, RequestTooLarge
from mcp_server.home import open_keys
from mcp_server.policy.operations import OPERATIONS
from mcp_server.quantum.circuits import Circuit, load_text
from mcp_server.quantum.runs import DEFAULT_SHOTS, PARSED, ParsedCircuits, plan_run
from mcp_server.server import build_server
from mcp_server.services import Services
from mcp_server.settings import Settings
from mcp_server.signing import sign_document

pytestmark = pytest.mark.anyio
MAX = 10_000

BELL = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n'
)


def admitted(services: Services, settings: Settings) -> Call:
    """A call the adapter admitted: identified (the local principal), with the open services."""
    call = Call("run_quantum_circuit", {})
    call.attach(services)
    call.principal = build_server(settings).admission.local_principal
    call.operation = OPERATIONS["run_quantum_circuit"]
    return call


async def test_text_defaults_and_limits(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(max_shots=5000)
    async with build_server(settings).host.open() as host:
        services = await host.ready()
        plan = await plan_run(
            admitted(services, settings),
            services.jobs,
            source=BELL,
            shots=None,
            backend="local",
            max_bytes=MAX,
        )
        assert (plan.shots, plan.circuit.qubits, plan.choice.backend, plan.document_id) == (
            DEFAULT_SHOTS,
            2,
            "local",
            None,
        )
        over = admitted(services, settings)
        with pytest.raises(RequestTooLarge):
            await plan_run(over, services.jobs, source=BELL, shots=5001, backend="local", max_bytes=MAX)
        assert over.denial is not None  # a limit is a refusal: the receipt will say denied
        bad = admitted(services, settings)
        with pytest.raises(InvalidDocument, match="backend"):
            await plan_run(bad, services.jobs, source=BELL, shots=None, backend="moon", max_bytes=MAX)
        assert bad.denial is None  # a malformed argument is a failure, not a refusal


async def test_a_workflow_brings_its_shots_and_bounds_its_run(
    make_settings: Callable[..., Settings], example_text: str
) -> None:
    settings = make_settings()
    signed = sign_document(example_text, open_keys(settings)).signed_document
    async with build_server(settings).host.open() as host:
        services = await host.ready()
        call = admitted(services, settings)
        await call.decide(document=signed)
        plan = await plan_run(call, services.jobs, source=signed, shots=None, backend="local", max_bytes=MAX)
        assert plan.shots == 1024 and plan.document_id == "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
        greedy = admitted(services, settings)
        await greedy.decide(document=signed)
        with pytest.raises(RequestTooLarge, match=r"requires\.shots"):
            await plan_run(greedy, services.jobs, source=signed, shots=2048, backend="local", max_bytes=MAX)
        assert greedy.denial is not None


GHZ3 = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\nh q[0];\ncx q[0],q[1];\ncx q[1],q[2];\n'
    "measure q -> c;\n"
)


async def test_a_circuit_read_again_comes_from_the_cache_and_only_for_its_own_text(
    make_settings: Callable[..., Settings],
) -> None:
    PARSED.clear()
    settings = make_settings()
    async with build_server(settings).host.open() as host:
        services = await host.ready()

        async def plan(source: str, max_bytes: int = MAX) -> Circuit:
            call = admitted(services, settings)
            return (
                await plan_run(
                    call, services.jobs, source=source, shots=None, backend="local", max_bytes=max_bytes
                )
            ).circuit

        bell, ghz = await plan(BELL), await plan(GHZ3)
        again = await plan(BELL)
        assert again.circuit is bell.circuit  # served from the cache, not read again
        assert again.gate_counts == bell.gate_counts and again.gate_counts is not bell.gate_counts
        assert (again.digest, again.qubits) == (bell.digest, 2)
        assert ghz.digest != bell.digest and ghz.qubits == 3 and ghz.circuit is not bell.circuit
        # One character more is another text: read afresh, never the cached circuit.
        other = await plan(BELL + "\n")
        assert other.circuit is not bell.circuit and other.digest != bell.digest
        # The size limit is part of the key: a text cached under a larger limit is still refused.
        with pytest.raises(RequestTooLarge):
            await plan(BELL, max_bytes=len(BELL) - 1)
        # A refused text is not cached; the checks after the read still run on a cached circuit.
        over = admitted(services, settings)
        with pytest.raises(RequestTooLarge):
            await plan_run(over, services.jobs, source=BELL, shots=10**9, backend="local", max_bytes=MAX)
        assert over.denial is not None


def test_the_parsed_cache_is_bounded_and_skips_large_inputs() -> None:
    cache = ParsedCircuits(size=2, max_chars=len(GHZ3))
    texts = [BELL, GHZ3, BELL.replace("h q[0]", "x q[0]")]
    for text in texts:
        key = cache.key(text, MAX)
        cache.put(key, load_text(text, max_bytes=MAX))
    assert cache.get(cache.key(texts[0], MAX)) is None  # least recently used: out
    assert cache.get(cache.key(texts[1], MAX)) is not None
    assert cache.get(cache.key(texts[2], MAX)) is not None
    assert cache.key(GHZ3 + " ", MAX) is None  # longer than max_chars: not hashed, not cached
    assert cache.key("\ud800", MAX) is None  # not UTF-8: load_text reports it
    # A circuit is only stored under the key of its own text.
    cache.put(cache.key(texts[0], MAX), load_text(texts[1], max_bytes=MAX))
    assert cache.get(cache.key(texts[0], MAX)) is None
