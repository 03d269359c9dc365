"""What callers are shown of a job or a receipt: the pydantic views shared by tools, resources and
the CLI (a tool result and the resource for the same thing say the same).

- `QuantumJob` (from `run_quantum_circuit`, `cancel_job` and `jobs://<id>`), `JobSummary` (`jobs://`);
- `ReceiptEntry` (from `list_receipts` and `macroslow-mcp receipts list`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mcp_server.ledger.receipts import Receipt, canonical_json, json_digest
from mcp_server.quantum.jobs import Job

DEFAULT_BUDGET = 64 * 1024  # bytes of result JSON sent inline (MACROSLOW_MAX_RESULT_BYTES)
TOP_OUTCOMES = 16
COUNTS_PAGE = 2048  # bitstrings per page of jobs://<id>/counts


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        default=None,
        description="Bitstring (qubit 0 rightmost) -> times measured, when succeeded and small enough to "
        "send inline; otherwise null, with top_counts here and every count at counts_resource.",
    )
    distinct_outcomes: int | None = Field(default=None, description="How many bitstrings were measured.")
    top_counts: dict[str, int] | None = Field(
        default=None, description=f"The {TOP_OUTCOMES} most frequent bitstrings and their counts."
    )
    counts_resource: str | None = Field(
        default=None,
        description="jobs://<id>/counts: every count, in pages; together, as canonical JSON, they hash "
        "to counts_digest.",
    )
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
    def from_job(cls, job: Job, *, budget: int = DEFAULT_BUDGET, **extra: Any) -> QuantumJob:
        """The job, its counts inline only when their JSON fits in `budget` bytes (the rest of the
        result needs room too: half the budget goes to the counts)."""
        all_counts: dict[str, int] | None = (job.result or {}).get("counts")
        counts = all_counts
        if all_counts is not None and len(canonical_json(all_counts)) > budget // 2:
            counts = None  # too large to send inline: summarised, and linked
        top = None
        if all_counts:
            top = dict(sorted(all_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_OUTCOMES])
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
            distinct_outcomes=len(all_counts) if all_counts is not None else None,
            top_counts=top,
            counts_resource=f"jobs://{job.id}/counts" if all_counts is not None else None,
            counts_digest=json_digest(all_counts) if all_counts is not None else None,
            duration_seconds=round(job.finished_at - job.created_at, 6) if job.finished_at else None,
            created_at=iso(job.created_at),
            finished_at=iso(job.finished_at) if job.finished_at else None,
            error=job.error,
            message=message,
            **extra,
        )

    def describe(self) -> str:
        """A short text for people and models (the data is in the structured result)."""
        head = f"quantum job {self.job_id}: {self.status} on {self.backend}:{self.target}, "
        head += f"{self.qubits} qubits, {self.shots} shots"
        if self.top_counts is None and not self.error:
            return f"{head}. {self.message or ''}".rstrip()
        if self.error:
            text = f"{head}; {self.error.get('code')}: {self.error.get('message')}"
        else:
            top = ", ".join(f"{k}: {v}" for k, v in list((self.top_counts or {}).items())[:5])
            inline = "all counts inline" if self.counts is not None else "counts too many to send inline"
            text = (
                f"{head}; {self.distinct_outcomes} distinct outcomes ({inline}). Most frequent: {top}. "
                f"Every count: {self.counts_resource} (counts_digest {self.counts_digest})."
            )
        return f"{self.message}. {text}" if self.message else text

    def links(self) -> list[tuple[str, str]]:
        """(uri, name) of the resources a caller follows for more."""
        return [(self.counts_resource, "counts")] if self.counts is None and self.counts_resource else []


class CountsPage(BaseModel):
    """One page of a job's counts (`jobs://<id>/counts/<page>`), bitstrings in order. The pages'
    counts together, as canonical JSON, hash to `counts_digest`, which the job's receipt binds."""

    job_id: str
    counts_digest: str
    distinct_outcomes: int
    shots: int
    page: int
    pages: int
    counts: dict[str, int]
    next: str | None = Field(description="The next page's URI, or null on the last page.")


class JobSummary(BaseModel):
    job_id: str
    status: str
    backend: str
    target: str
    qubits: int
    shots: int
    created_at: str
    resource: str

    @classmethod
    def from_job(cls, job: Job) -> JobSummary:
        return cls(
            job_id=job.id,
            status=job.status.value,
            backend=job.backend,
            target=job.target,
            qubits=job.qubits,
            shots=job.shots,
            created_at=iso(job.created_at),
            resource=f"jobs://{job.id}",
        )


class ReceiptEntry(BaseModel):
    id: str
    uri: str = Field(description="receipts://<id>: the receipt as a .mu Markdown document.")
    seq: int = Field(description="Its place (leaf index) in the Merkle log.")
    created_at: str
    principal: str
    tool: str
    action: str | None
    decision: Literal["allowed", "denied"] | str
    outcome: str
    reason: str | None
    document_id: str | None
    document_digest: str | None
    arguments_digest: str | None
    result_digest: str | None
    backend_job_id: str | None
    attestation: str | None = Field(
        default=None, description="What a backend run attests (canonical JSON), e.g. a quantum job's."
    )
    duration_ms: float
    leaf_hash: str

    @classmethod
    def from_receipt(cls, receipt: Receipt, leaf_hash: bytes) -> ReceiptEntry:
        data = receipt.__dict__
        return cls(
            **{k: v for k, v in data.items() if k in cls.model_fields},
            uri=f"receipts://{receipt.id}",
            duration_ms=receipt.duration_us / 1000,
            leaf_hash=leaf_hash.hex(),
        )
