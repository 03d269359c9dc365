"""Tool `run_quantum_circuit`: run an OpenQASM circuit, or a signed workflow's circuit, as a job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_server.adapters import tool_adapter
from mcp_server.calls import current_call
from mcp_server.errors import MacroslowError, RequestTooLarge, rebuild
from mcp_server.ledger.receipts import json_digest
from mcp_server.policy.guard import Request
from mcp_server.quantum.backends import JobStatus
from mcp_server.quantum.service import attestation, parse_backend
from mcp_server.quantum.store import Job
from mcp_server.state import AppState

DEFAULT_SHOTS = 1024


class QuantumJob(BaseModel):
    """A quantum job: what ran, where, and (once it succeeded) the counts."""

    job_id: str
    status: str = Field(description="queued, running, succeeded, failed, cancelled or interrupted.")
    resource: str = Field(description="Read this resource for the job's status later: jobs://<id>.")
    backend: str = Field(description="local (the Aer simulator) or azure.")
    target: str = Field(description="aer, or the Azure Quantum target.")
    qubits: int
    depth: int
    gate_counts: dict[str, int]
    shots: int
    seed: int | None = Field(description="Simulator seed (local jobs always have one, so runs repeat).")
    method: str | None = Field(description="Simulation method used (statevector, stabilizer, ...).")
    circuit_digest: str = Field(description="sha256 of the circuit source as submitted.")
    document_id: str | None = None
    counts: dict[str, int] | None = Field(
        default=None, description="Bitstring (qubit 0 rightmost) -> times measured; when succeeded."
    )
    probabilities: dict[str, float] | None = None
    counts_digest: str | None = Field(default=None, description="sha256 of the counts as canonical JSON.")
    duration_seconds: float | None = Field(default=None, description="From submission to the end.")
    created_at: str
    finished_at: str | None = None
    error: dict[str, Any] | None = Field(default=None, description="Why it failed, was cancelled or stopped.")
    measured_all_added: bool | None = Field(
        default=None, description="The circuit had no measurement, so every qubit was measured at the end."
    )
    message: str | None = None

    @classmethod
    def from_job(cls, job: Job, **extra: Any) -> QuantumJob:
        counts = (job.result or {}).get("counts")
        total = sum(counts.values()) if counts else 0
        message = None
        if not job.status.final:
            message = f"still {job.status.value}; read jobs://{job.id} (or subscribe to it) for the result"
        return cls(
            job_id=job.id,
            status=job.status.value,
            resource=f"jobs://{job.id}",
            backend=job.backend,
            target=job.target,
            qubits=job.qubits,
            depth=job.depth,
            gate_counts=job.gate_counts,
            shots=job.shots,
            seed=job.seed,
            method=job.method,
            circuit_digest=job.circuit_digest,
            document_id=job.document_id,
            counts=counts,
            probabilities={k: v / total for k, v in sorted(counts.items())} if counts and total else None,
            counts_digest=json_digest(counts) if counts is not None else None,
            duration_seconds=round(job.finished_at - job.created_at, 6) if job.finished_at else None,
            created_at=_iso(job.created_at),
            finished_at=_iso(job.finished_at) if job.finished_at else None,
            error=job.error,
            message=message,
            **extra,
        )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def note_job(job: Job) -> None:
    """Put the job and its attestation on the current call's receipt."""
    record = current_call.get()
    if record is not None:
        record.backend_job_id = job.id
        record.attestation = attestation(job)


def register(server: MCPServer[Any], state: AppState) -> None:
    settings = state.settings

    @tool_adapter(state)
    async def run_quantum_circuit(
        circuit: Annotated[
            str,
            Field(
                description="OpenQASM 2 or 3 text, or a signed MAML workflow whose ## Code_Blocks holds "
                "the circuit (a qasm, openqasm3 or qiskit block; Python blocks are never executed)."
            ),
        ],
        ctx: Context,
        shots: Annotated[
            int | None,
            Field(ge=1, description="Shots; default the workflow's requires.shots, else 1024."),
        ] = None,
        backend: Annotated[
            str,
            Field(
                description="'local' (Aer simulator, default) or 'azure:<target>', e.g. azure:ionq.simulator."
            ),
        ] = "local",
        seed: Annotated[
            int | None, Field(ge=0, lt=2**63, description="Simulator seed, for repeatable runs.")
        ] = None,
        wait_seconds: Annotated[
            float | None,
            Field(
                ge=0, description="How long to wait for the result inline (default 10 s); 0 returns at once."
            ),
        ] = None,
    ) -> QuantumJob:
        """Run a quantum circuit and return its measurement counts.

        Small local runs finish inline. A run still going after wait_seconds comes back with its
        job_id and status: read the resource jobs://<job_id> (or subscribe to it) for the result,
        or cancel it with cancel_job. Over a limit (qubits, shots) the error says requested and
        allowed. A workflow runs only if it is signed by a trusted key and its permissions.execute
        admits you; its requires.qubits and requires.shots bound the run.
        """
        from mcp_server.quantum import circuits, import_qiskit

        import_qiskit()  # on the event loop's thread (see its docstring); once, ~1 s
        choice = parse_backend(backend)
        is_document = circuits.looks_like_maml(circuit)
        decision = await state.guard(
            "run_quantum_circuit",
            document=circuit if is_document else None,
            request=Request(shots=shots),
        )
        document = decision.document
        if document is not None:
            requires = document.front_matter.requires
            loaded = await anyio.to_thread.run_sync(lambda: circuits.load_document(document))
            for name, value, bound in (
                ("qubits", loaded.qubits, requires.qubits),
                ("shots", shots, requires.shots),
            ):
                if value is not None and bound is not None and value > bound:
                    raise state.deny(
                        RequestTooLarge(
                            f"{name} over what the workflow's requires.{name} allows",
                            requested=value,
                            allowed=bound,
                        )
                    )
            shots = shots or requires.shots or DEFAULT_SHOTS
        else:
            loaded = await anyio.to_thread.run_sync(
                lambda: circuits.load_text(circuit, max_bytes=settings.max_document_bytes)
            )
            shots = shots or DEFAULT_SHOTS
        state.check_request(decision, Request(qubits=loaded.qubits, shots=shots))
        try:
            state.jobs.plan(loaded, choice)
        except MacroslowError as exc:
            if isinstance(exc, RequestTooLarge):
                raise state.deny(exc) from None
            raise
        job = await state.jobs.submit(
            decision.principal,
            loaded,
            choice,
            shots=shots,
            seed=seed,
            document_id=decision.document.id if decision.document is not None else None,
        )
        note_job(job)
        wait = settings.quantum_wait_seconds if wait_seconds is None else wait_seconds
        wait = min(wait, settings.quantum_max_wait_seconds)

        async def progress(elapsed: float, total: float, status: str) -> None:
            await ctx.report_progress(elapsed, total, f"job {job.id} {status}")

        if wait > 0:
            job = await state.jobs.wait(job.id, wait, progress)
            note_job(job)
        if job.status is JobStatus.failed and job.error:
            raise _job_error(job)
        return QuantumJob.from_job(job, measured_all_added=loaded.measured_all_added)

    server.add_tool(
        run_quantum_circuit,
        title="Run a quantum circuit",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
    )


def _job_error(job: Job) -> MacroslowError:
    error = {**(job.error or {})}
    error["details"] = {**error.get("details", {}), "job_id": job.id}
    return rebuild(error, prefix=f"job {job.id} failed: ")
