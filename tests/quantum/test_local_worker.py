"""The Aer worker's transpiled-circuit cache: a circuit run again is not transpiled again, and a
cached circuit is only ever run for the exact circuit it came from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mcp_server.quantum import local
from mcp_server.quantum.backends import Submission
from mcp_server.quantum.local import LocalSimulator, RunHandle


@pytest.fixture
def simulator() -> Iterator[LocalSimulator]:
    sim = LocalSimulator(workers=1, max_queued=4, memory_bytes=2**28, max_qubits=20, timeout=60)
    try:
        yield sim
    finally:
        sim.close()


def run(sim: LocalSimulator, circuit: object, method: str = "automatic") -> dict[str, int]:
    sim.admit()
    return sim.run(Submission("test", circuit, 256, 7, ""), method, RunHandle()).counts


def test_one_worker_runs_each_circuit_as_itself(simulator: LocalSimulator) -> None:
    from qiskit import QuantumCircuit

    def prepared(flip: int | None) -> QuantumCircuit:
        qc = QuantumCircuit(3, 3)
        if flip is not None:
            qc.x(flip)
        qc.measure(range(3), range(3))
        return qc

    # The same shape, gate count and width, different circuits, all on the same (one) worker,
    # interleaved with runs of the same circuits again (served from its cache).
    for _ in range(2):
        assert run(simulator, prepared(0)) == {"001": 256}
        assert run(simulator, prepared(1)) == {"010": 256}
        assert run(simulator, prepared(2)) == {"100": 256}
        assert run(simulator, prepared(None)) == {"000": 256}
    # Another method is another entry: the same circuit runs under the method asked for.
    assert run(simulator, prepared(2), "matrix_product_state") == {"100": 256}
    assert len(simulator._all) == 1


def test_the_cache_keeps_only_recent_circuits(simulator: LocalSimulator) -> None:
    from qiskit import QuantumCircuit

    assert local.TRANSPILED_CACHE >= 1
    # More distinct circuits than the cache holds, then the first again: still right.
    circuits = []
    for n in range(local.TRANSPILED_CACHE + 2):
        qc = QuantumCircuit(1, 1)
        for _ in range(n):
            qc.id(0)
        qc.x(0)
        qc.measure(0, 0)
        circuits.append(qc)
    for qc in circuits + circuits[:1]:
        assert run(simulator, qc) == {"1": 256}
