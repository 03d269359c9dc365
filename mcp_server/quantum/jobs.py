"""A quantum job as the rest of the server sees it, and where it runs: the `Job` record (its row,
JSON columns decoded), the backend a caller asked for (`parse_backend`), and what a job's receipt
attests (`attestation`). No database here: `store` keeps the rows, `service` runs the jobs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mcp_server.errors import InvalidDocument, MacroslowError, rebuild
from mcp_server.ledger.receipts import json_digest
from mcp_server.quantum.backends import JobStatus

_TARGET = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Job:
    """A job record as the rest of the server sees it (JSON columns decoded)."""

    id: str
    principal: str
    issuer: str
    backend: str
    target: str
    status: JobStatus
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    qubits: int
    depth: int
    shots: int
    seed: int | None
    gate_counts: dict[str, int]
    circuit_digest: str
    document_id: str | None
    method: str | None
    remote_id: str | None
    runner: str | None
    heartbeat_at: float | None
    cancel_requested: bool
    result: dict[str, Any] | None
    error: dict[str, Any] | None

    def fields(self) -> dict[str, Any]:
        """The job as column values (JSON columns still as Python values; `JobStore` encodes them)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_row(cls, row: Any) -> Job:
        data = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        data["status"] = JobStatus(row.status)
        data["gate_counts"] = json.loads(row.gate_counts)
        data["result"] = json.loads(row.result) if row.result else None
        data["error"] = json.loads(row.error) if row.error else None
        return cls(**data)


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # local | azure
    target: str  # aer | the Azure target


def parse_backend(spec: str) -> BackendChoice:
    """`local` (the default) or `azure:<target>`, e.g. `azure:ionq.simulator`."""
    spec = spec.strip()
    if spec in ("", "local", "aer", "local:aer"):
        return BackendChoice("local", "aer")
    kind, _, target = spec.partition(":")
    if kind == "azure" and _TARGET.fullmatch(target):
        return BackendChoice("azure", target)
    raise InvalidDocument(
        "backend must be 'local' or 'azure:<target>' (e.g. azure:ionq.simulator)", field="backend"
    )


def attestation(job: Job) -> dict[str, Any]:
    """What a job's receipt attests: which circuit ran where, how, and which counts it produced."""
    counts = (job.result or {}).get("counts")
    return {
        "job_id": job.id,
        "backend": job.backend,
        "target": job.target,
        "remote_id": job.remote_id,
        "circuit_digest": job.circuit_digest,
        "shots": job.shots,
        "seed": job.seed,
        "method": job.method,
        "status": job.status.value,
        "counts_digest": json_digest(counts) if counts is not None else None,
    }


def job_error(job: Job) -> MacroslowError:
    """The error a failed job answers with: its recorded error, naming the job."""
    error = {**(job.error or {})}
    error["details"] = {**error.get("details", {}), "job_id": job.id}
    return rebuild(error, prefix=f"job {job.id} failed: ")
