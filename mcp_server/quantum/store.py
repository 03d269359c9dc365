"""Job records: one row per quantum job, in the ledger's database (table `quantum_jobs`, migration
0002), so every server process sharing the database can answer for any job.

A job's row is the job's state; the ledger's receipts are its history. Status moves only forward:
queued -> running -> succeeded | failed | cancelled | interrupted; an update that would move a final
job is ignored (`advance` says whether it applied), so a late worker result cannot overwrite a
cancellation, and a cancellation cannot overwrite a result.

Local jobs carry the id of the server process running them (`runner`) and a heartbeat; a job whose
runner stopped beating (the process died) is marked `interrupted` by whichever process looks next.

A job that ended is deleted once its retention passed (`delete_finished`); its receipts are in the
ledger's own tables, which nothing here touches.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db import Base, database_errors
from mcp_server.errors import NotFound
from mcp_server.quantum.backends import JobStatus
from mcp_server.quantum.jobs import Job

Counter = BigInteger().with_variant(Integer(), "sqlite")
ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


class JobRow(Base):
    __tablename__ = "quantum_jobs"
    __table_args__ = (
        Index("ix_quantum_jobs_principal_created", "principal", "created_at"),
        Index("ix_quantum_jobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal: Mapped[str] = mapped_column(String(300))
    issuer: Mapped[str] = mapped_column(String(300))
    backend: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    qubits: Mapped[int] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer)
    shots: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(Counter)
    gate_counts: Mapped[str] = mapped_column(Text)
    circuit_digest: Mapped[str] = mapped_column(String(80))
    document_id: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(32))
    remote_id: Mapped[str | None] = mapped_column(String(128))
    runner: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    for name in ("gate_counts", "result", "error"):
        if name in out and out[name] is not None and not isinstance(out[name], str):
            out[name] = json.dumps(out[name], sort_keys=True, separators=(",", ":"))
    if isinstance(out.get("status"), JobStatus):
        out["status"] = out["status"].value
    return out


class JobStore:
    """The repository for job rows: create, advance (forward-only status), read, list."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, **fields: Any) -> None:
        now = time.time()
        values = {"created_at": now, "updated_at": now, "cancel_requested": False, **fields}
        with database_errors(), self.engine.begin() as conn:
            conn.execute(JobRow.__table__.insert().values(**_encode(values)))  # type: ignore[attr-defined]

    def advance(self, job_id: str, *, expect: Sequence[str] = ACTIVE, **fields: Any) -> bool:
        """Update a job that is still in one of the `expect` states; False when it was not (it had
        already ended, or moved on)."""
        values = _encode({"updated_at": time.time(), **fields})
        stmt = update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(list(expect))).values(**values)
        with database_errors(), self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def request_cancel(self, job_id: str) -> bool:
        """Flag an active job for cancellation (its runner, wherever it is, acts on the flag)."""
        return self.advance(job_id, cancel_requested=True)

    def get(self, job_id: str) -> Job:
        with database_errors(), self.engine.connect() as conn:
            row = conn.execute(select(JobRow).where(JobRow.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return Job.from_row(row)

    def find(self, job_id: str) -> Job | None:
        try:
            return self.get(job_id)
        except NotFound:
            return None

    def recent(self, principal: str | None, *, limit: int = 50) -> list[Job]:
        """The newest jobs first; one principal's, or everyone's (principal None)."""
        stmt = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
        if principal is not None:
            stmt = stmt.where(JobRow.principal == principal)
        with database_errors(), self.engine.connect() as conn:
            return [Job.from_row(row) for row in conn.execute(stmt)]

    def heartbeat(self, runner: str, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        stmt = (
            update(JobRow)
            .where(JobRow.id.in_(list(job_ids)), JobRow.runner == runner, JobRow.status.in_(ACTIVE))
            .values(heartbeat_at=time.time())
        )
        with database_errors(), self.engine.begin() as conn:
            conn.execute(stmt)

    def interrupt_stale(self, *, older_than: float, runner: str | None = None) -> int:
        """Mark local jobs `interrupted` whose runner stopped beating before `older_than` (or, with
        `runner`, every active job of that runner: its process is stopping). Returns how many."""
        cond = [JobRow.backend == "local", JobRow.status.in_(ACTIVE)]
        if runner is not None:
            cond.append(JobRow.runner == runner)
        else:
            cond.append(JobRow.heartbeat_at < older_than)
        now = time.time()
        error = json.dumps(
            {"code": "interrupted", "message": "the server process running this job stopped before it ended"}
        )
        stmt = (
            update(JobRow)
            .where(*cond)
            .values(status=JobStatus.interrupted.value, updated_at=now, finished_at=now, error=error)
        )
        with database_errors(), self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)

    def cancel_requested(self, runner: str) -> list[str]:
        """Active jobs of `runner` that some process asked to cancel."""
        stmt = select(JobRow.id).where(
            JobRow.runner == runner, JobRow.cancel_requested.is_(True), JobRow.status.in_(ACTIVE)
        )
        with database_errors(), self.engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def delete_finished(self, *, finished_before: float, limit: int) -> int:
        """Delete at most `limit` jobs that ended before `finished_before`, oldest first; a queued or
        running job is never deleted. Returns how many were."""
        ended = (JobRow.status.not_in(ACTIVE), JobRow.finished_at < finished_before)
        oldest = select(JobRow.id).where(*ended).order_by(JobRow.finished_at).limit(limit)
        with database_errors(), self.engine.begin() as conn:
            ids = list(conn.execute(oldest).scalars())
            if not ids:
                return 0
            return int(conn.execute(delete(JobRow).where(JobRow.id.in_(ids), *ended)).rowcount)

    def claim_stale_remote(self, runner: str, *, older_than: float, limit: int = 100) -> list[Job]:
        """Remote jobs still active at the service whose poller stopped beating (its process
        stopped): take them over, one conditional update each, so two processes never both do."""
        stale = (JobRow.heartbeat_at < older_than) | JobRow.heartbeat_at.is_(None)
        active = (JobRow.backend != "local", JobRow.status.in_(ACTIVE), JobRow.remote_id.is_not(None))
        claimed: list[Job] = []
        with database_errors():
            with self.engine.connect() as conn:
                ids = list(conn.execute(select(JobRow.id).where(*active, stale).limit(limit)).scalars())
            for job_id in ids:
                stmt = (
                    update(JobRow)
                    .where(JobRow.id == job_id, *active, stale)
                    .values(runner=runner, heartbeat_at=time.time())
                )
                with self.engine.begin() as conn:
                    if conn.execute(stmt).rowcount:
                        claimed.append(self.get(job_id))
        return claimed
