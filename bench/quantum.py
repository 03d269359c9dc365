"""run_quantum_circuit against calling AerSimulator directly, in the same run (issue 5's target).

    .venv/bin/python bench/quantum.py      (also part of bench/run.py)

For GHZ-5 and a 20-qubit random circuit (depth 10, seed 7), 1024 shots, fixed seed: the tool over
the in-memory client (parse, policy, job record, a worker process, receipt) against the same
circuit run directly on `AerSimulator` in this process with a pass manager built once (the
cheapest honest way to call Aer: transpile + run + counts). Targets, after warm-up: GHZ-5 at most
2x (a small run: the job row's two commits, the worker process hop and the signed receipt are
fixed costs next to a few ms of Aer, issue 5), the 20-qubit circuit at most 1.2x.
The first quantum call in a fresh server (importing qiskit, starting a worker process) is reported
apart, as information.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp.client import Client

sys.path.insert(0, str(Path(__file__).parent))

from run import UNLIMITED_RATE, BenchError, Rounds, async_sampler, report, side_by_side, sync_sampler

from mcp_server.server import build_server
from mcp_server.settings import Settings

MAX_TOOL_RATIO = {"GHZ-5": 2.0, "random-20": 1.2}
SHOTS = 1024
SEED = 1234
GHZ_ROUNDS = Rounds(warmup=20, rounds=20, per_round=5)
RANDOM_ROUNDS = Rounds(warmup=2, rounds=7, per_round=1)


def circuits() -> dict[str, Any]:
    from qiskit import QuantumCircuit
    from qiskit.circuit.random import random_circuit

    ghz = QuantumCircuit(5, 5)
    ghz.h(0)
    for i in range(4):
        ghz.cx(i, i + 1)
    ghz.measure(range(5), range(5))
    return {"GHZ-5": ghz, "random-20": random_circuit(20, 10, measure=True, seed=7)}


def settings(home: Path) -> Settings:
    return Settings(
        home=home,
        rate_per_minute=float(UNLIMITED_RATE["MACROSLOW_RATE_PER_MINUTE"]),
        rate_burst=int(UNLIMITED_RATE["MACROSLOW_RATE_BURST"]),
        _env_file=None,  # type: ignore[call-arg]
    )


async def first_call(home: Path, qasm: str) -> float:
    t0 = time.perf_counter()
    async with Client(build_server(settings(home))) as client:
        t1 = time.perf_counter()
        result = await client.call_tool("run_quantum_circuit", {"circuit": qasm, "seed": SEED})
        elapsed = time.perf_counter() - t1
    if result.is_error:
        raise BenchError(f"first quantum call failed: {result.content}")
    del t0
    return elapsed


async def bench_quantum(home: Path | None = None) -> bool:
    from qiskit import qasm2
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator

    from mcp_server.quantum import import_qiskit

    import_qiskit()
    with tempfile.TemporaryDirectory(prefix="macroslow-bench-q-") as tmp:
        home = home or Path(tmp) / "home"
        cases = circuits()
        texts = {name: qasm2.dumps(c) for name, c in cases.items()}
        cold = await first_call(Path(tmp) / "cold-home", texts["GHZ-5"])
        report("run_quantum_circuit first call (cold)", f"{cold * 1000:.0f} ms incl. worker start + imports")
        sim = AerSimulator()
        pm = generate_preset_pass_manager(optimization_level=1, backend=sim)
        ok = True
        async with Client(build_server(settings(home))) as client:
            for name, circuit in cases.items():
                text = texts[name]

                def direct(c: Any = circuit) -> None:
                    counts = sim.run(pm.run(c), shots=SHOTS, seed_simulator=SEED).result().get_counts()
                    if sum(counts.values()) != SHOTS:
                        raise BenchError("direct run lost shots")

                async def tool(t: str = text) -> None:
                    r = await client.call_tool(
                        "run_quantum_circuit", {"circuit": t, "shots": SHOTS, "seed": SEED}
                    )
                    sc = r.structured_content or {}
                    if r.is_error or sc.get("status") != "succeeded":
                        raise BenchError(f"tool call failed: {sc}")

                plan = GHZ_ROUNDS if name == "GHZ-5" else RANDOM_ROUNDS
                t = await side_by_side({"direct": sync_sampler(direct), "tool": async_sampler(tool)}, plan)
                ratio = t["tool"] / t["direct"]
                ok &= report(
                    f"run_quantum_circuit {name}, {SHOTS} shots",
                    f"{t['tool'] * 1000:.1f} ms = {ratio:.2f}x AerSimulator direct "
                    f"({t['direct'] * 1000:.1f} ms)",
                    f"target <= {MAX_TOOL_RATIO[name]:.1f}x",
                    ratio <= MAX_TOOL_RATIO[name],
                )
    return ok


if __name__ == "__main__":
    sys.exit(0 if anyio.run(bench_quantum) else 1)
