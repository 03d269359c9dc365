"""What `run_quantum_circuit` runs: from the caller's text to a checked circuit, a backend and a
shot count, within every limit, before anything is recorded.

Rules, in order:
- the backend is `local` or `azure:<target>` (`service.parse_backend`);
- a signed workflow (the policy already checked its signature and `permissions.execute`) runs its
  one circuit block; OpenQASM text runs as it is;
- a workflow's `requires.qubits` and `requires.shots` bound its run; shots default to the
  workflow's `requires.shots`, else `DEFAULT_SHOTS`;
- the circuit's qubits and the shots are within the server's limits, and the circuit fits the
  backend (simulation method and memory locally, the target remotely).
Going over a limit is a refusal (`Call.refuse`: receipt `denied`); a malformed circuit is a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread

from mcp_server.errors import RequestTooLarge
from mcp_server.policy.guard import Request
from mcp_server.quantum import circuits
from mcp_server.quantum.jobs import BackendChoice, parse_backend

if TYPE_CHECKING:
    from mcp_server.calls import Call
    from mcp_server.quantum.service import JobService

DEFAULT_SHOTS = 1024


@dataclass(frozen=True)
class RunPlan:
    circuit: circuits.Circuit
    choice: BackendChoice
    shots: int
    document_id: str | None


async def plan_run(
    call: Call, jobs: JobService, *, source: str, shots: int | None, backend: str, max_bytes: int
) -> RunPlan:
    """`source` is the circuit text, or the workflow the policy parsed (`call.document`)."""
    from mcp_server.quantum import import_qiskit

    choice = parse_backend(backend)
    import_qiskit()  # on the event loop's thread (see its docstring); once, ~1 s
    document = call.document
    if document is not None:
        requires = document.front_matter.requires
        circuit = await anyio.to_thread.run_sync(lambda: circuits.load_document(document))
        for name, value, bound in (
            ("qubits", circuit.qubits, requires.qubits),
            ("shots", shots, requires.shots),
        ):
            if value is not None and bound is not None and value > bound:
                raise call.refuse(
                    RequestTooLarge(
                        f"{name} over what the workflow's requires.{name} allows",
                        requested=value,
                        allowed=bound,
                    )
                )
        shots = shots or requires.shots or DEFAULT_SHOTS
    else:
        circuit = await anyio.to_thread.run_sync(lambda: circuits.load_text(source, max_bytes=max_bytes))
        shots = shots or DEFAULT_SHOTS
    call.check_request(Request(qubits=circuit.qubits, shots=shots))
    try:
        jobs.plan(circuit, choice)
    except RequestTooLarge as exc:
        raise call.refuse(exc) from None
    return RunPlan(circuit, choice, shots, document.id if document is not None else None)
