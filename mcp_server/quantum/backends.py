"""What every quantum backend gives the job service, and the types they share.

The job service (`mcp_server.quantum.jobs`) owns job records, policy and receipts; a backend only
runs circuits. Two kinds:

- the local simulator (`mcp_server.quantum.local`): `run(submission)` in a worker process, awaited;
- remote services (`mcp_server.quantum.azure`): `submit` returns the service's job id at once, then
  the job service polls `status` with backoff until the job ends, and may `cancel` it.

Backends map their own failures to `mcp_server.errors` at their seam (`raise ... from exc`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from mcp_server.errors import MacroslowError

if TYPE_CHECKING:
    from qiskit import QuantumCircuit


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"  # its server process ended while it ran; the record is kept

    @property
    def final(self) -> bool:
        return self not in (JobStatus.queued, JobStatus.running)


@dataclass(frozen=True)
class Submission:
    """One circuit to run: already parsed, checked against the limits and allowed by the policy."""

    job_id: str
    circuit: QuantumCircuit
    shots: int
    seed: int | None
    target: str  # "aer" locally; the service's target name remotely (e.g. "ionq.simulator")


@dataclass(frozen=True)
class Outcome:
    """A finished run: measured bitstrings (Qiskit order, qubit 0 rightmost) and how it ran."""

    counts: dict[str, int]
    method: str | None = None
    seconds: float | None = None  # time the backend itself reports, when it does
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteState:
    """A remote job's state as the service reports it, mapped to ours."""

    status: JobStatus
    outcome: Outcome | None = None  # set when status is succeeded
    error: MacroslowError | None = None  # set when status is failed


class RemoteBackend(Protocol):
    """A quantum service reached over the network (Azure Quantum). All methods may raise
    `MacroslowError` subclasses: `BackendUnavailable` (unreachable, 5xx, timeouts, credentials
    refused; `details` keep the service's error code), `RateLimited` (quota, 429), `NotFound`
    (unknown target or job), `Forbidden` (a paid target not allowed by settings)."""

    @property
    def name(self) -> str: ...

    def check_target(self, target: str) -> None:
        """Refuse a target this server may not use (paid hardware unless allowed), before submitting."""
        ...

    async def submit(self, submission: Submission) -> str:
        """Submit and return the service's job id; do not wait for the run."""
        ...

    async def status(self, remote_id: str) -> RemoteState:
        """One status request (the job service paces the polling)."""
        ...

    async def cancel(self, remote_id: str) -> None: ...

    async def aclose(self) -> None: ...
