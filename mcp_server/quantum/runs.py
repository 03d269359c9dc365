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

OpenQASM text that was already read (same text, same `max_bytes`) comes from `PARSED`, a small
cache keyed by the text's SHA-256, on the event loop's thread; reading a circuit is a pure function
of its text and the limits, so a hit is the circuit a fresh read would give. Every check after the
read (the policy's request, the workflow's bounds, the backend's fit) still runs on every call.
Only successful reads of texts up to `ParsedCircuits.max_chars` characters and circuits up to
`ParsedCircuits.max_operations` operations are kept, and only for the local backend (a local run
sends the worker a pickled copy; a remote provider is handed the circuit object itself).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
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


class ParsedCircuits:
    """Circuits read from OpenQASM text, by (SHA-256 of the text, max_bytes); least recently used
    out first. Used from the event loop's thread only (no lock)."""

    def __init__(self, size: int = 64, max_chars: int = 65_536, max_operations: int = 10_000) -> None:
        self.size = size
        self.max_chars = max_chars  # hashing is on the event loop's thread: keep it short
        self.max_operations = max_operations
        self._entries: OrderedDict[tuple[str, int], circuits.Circuit] = OrderedDict()

    def key(self, text: str, max_bytes: int) -> tuple[str, int] | None:
        if len(text) > self.max_chars:
            return None
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            return None  # load_text says what is wrong
        return "sha256:" + hashlib.sha256(data).hexdigest(), max_bytes

    def get(self, key: tuple[str, int] | None) -> circuits.Circuit | None:
        if key is None or (found := self._entries.get(key)) is None:
            return None
        self._entries.move_to_end(key)
        # The QuantumCircuit is shared (a local run sends a pickled copy; nothing changes it); the
        # dict is the caller's own.
        return dataclasses.replace(found, gate_counts=dict(found.gate_counts))

    def put(self, key: tuple[str, int] | None, circuit: circuits.Circuit) -> None:
        if key is None or key[0] != circuit.digest or sum(circuit.gate_counts.values()) > self.max_operations:
            return
        self._entries[key] = dataclasses.replace(circuit, gate_counts=dict(circuit.gate_counts))
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


PARSED = ParsedCircuits()


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
        key = PARSED.key(source, max_bytes) if choice.backend == "local" else None
        cached = PARSED.get(key)
        if cached is not None:
            circuit = cached
        else:
            circuit = await anyio.to_thread.run_sync(lambda: circuits.load_text(source, max_bytes=max_bytes))
            PARSED.put(key, circuit)
        shots = shots or DEFAULT_SHOTS
    call.check_request(Request(qubits=circuit.qubits, shots=shots))
    try:
        jobs.plan(circuit, choice)
    except RequestTooLarge as exc:
        raise call.refuse(exc) from None
    return RunPlan(circuit, choice, shots, document.id if document is not None else None)
