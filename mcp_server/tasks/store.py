"""Task rows (table `tasks`, migration 0006), so every server process sharing the database can answer
for any task.

A row's status moves only forward: working -> completed | failed | cancelled (`finish` applies only
to a task still working). A task backed by a quantum job (`job_id`) stays `working` in its row: its
state is its job's, read at each `tasks/get`. A task whose work runs in a server process carries
that process's id (`runner`) and a heartbeat; a task whose runner stopped beating is failed by
whichever process looks next (`fail_stale`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, Engine, Float, Index, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db import Base, database_errors

WORKING = "working"
STOPPED = "the server process running this task stopped before it ended"
FINAL = ("completed", "failed", "cancelled")


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_status", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(String(300))
    tool: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    status_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    ttl_seconds: Mapped[float | None] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(36))
    view: Mapped[str | None] = mapped_column(Text)
    runner: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class TaskRecord:
    """A task row, JSON columns decoded."""

    id: str
    principal: str
    tool: str
    status: str
    status_message: str | None
    created_at: float
    updated_at: float
    ttl_seconds: float | None
    job_id: str | None
    view: dict[str, Any]
    runner: str | None
    heartbeat_at: float | None
    cancel_requested: bool
    result: dict[str, Any] | None
    error: dict[str, Any] | None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @classmethod
    def from_row(cls, row: Any) -> TaskRecord:
        data = {name: getattr(row, name) for name in cls.__dataclass_fields__}
        data["view"] = json.loads(row.view) if row.view else {}
        data["result"] = json.loads(row.result) if row.result else None
        data["error"] = json.loads(row.error) if row.error else None
        return cls(**data)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


class TaskStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        task_id: str,
        *,
        principal: str,
        tool: str,
        ttl_seconds: float | None,
        job_id: str | None = None,
        view: dict[str, Any] | None = None,
        runner: str | None = None,
    ) -> TaskRecord:
        """Insert a working task; committed when this returns (a `tasks/get` anywhere finds it)."""
        now = time.time()
        values: dict[str, Any] = {
            "id": task_id,
            "principal": principal,
            "tool": tool,
            "status": WORKING,
            "status_message": None,
            "created_at": now,
            "updated_at": now,
            "ttl_seconds": ttl_seconds,
            "job_id": job_id,
            "view": _json(view or {}),
            "runner": runner,
            "heartbeat_at": now if runner is not None else None,
            "cancel_requested": False,
            "result": None,
            "error": None,
        }
        with database_errors(), self.engine.begin() as conn:
            conn.execute(TaskRow.__table__.insert().values(**values))  # type: ignore[attr-defined]
        return self.get(task_id)  # type: ignore[return-value]

    def get(self, task_id: str) -> TaskRecord | None:
        with database_errors(), self.engine.connect() as conn:
            row = conn.execute(select(TaskRow).where(TaskRow.id == task_id)).first()
        return None if row is None else TaskRecord.from_row(row)

    def finish(
        self,
        task_id: str,
        status: str,
        *,
        message: str | None = None,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Move a working task to a final status; False when it had already ended."""
        assert status in FINAL
        stmt = (
            update(TaskRow)
            .where(TaskRow.id == task_id, TaskRow.status == WORKING)
            .values(
                status=status,
                status_message=message,
                updated_at=time.time(),
                result=_json(result),
                error=_json(error),
            )
        )
        with database_errors(), self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def request_cancel(self, task_id: str) -> bool:
        stmt = (
            update(TaskRow)
            .where(TaskRow.id == task_id, TaskRow.status == WORKING)
            .values(cancel_requested=True, updated_at=time.time())
        )
        with database_errors(), self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def heartbeat(self, runner: str, task_ids: list[str]) -> list[str]:
        """Beat for this runner's working tasks; returns those some process asked to cancel."""
        if not task_ids:
            return []
        with database_errors(), self.engine.begin() as conn:
            conn.execute(
                update(TaskRow)
                .where(TaskRow.id.in_(task_ids), TaskRow.runner == runner, TaskRow.status == WORKING)
                .values(heartbeat_at=time.time())
            )
            flagged = select(TaskRow.id).where(
                TaskRow.id.in_(task_ids), TaskRow.cancel_requested.is_(True), TaskRow.status == WORKING
            )
            return list(conn.execute(flagged).scalars())

    def fail_stale(self, *, older_than: float, runner: str | None = None) -> int:
        """Fail working tasks run in a process (not job-backed) whose runner stopped beating before
        `older_than` (or, with `runner`, every working task of that runner: it is stopping)."""
        cond = [TaskRow.status == WORKING, TaskRow.runner.is_not(None)]
        cond.append(TaskRow.runner == runner if runner is not None else TaskRow.heartbeat_at < older_than)
        message = STOPPED
        stmt = (
            update(TaskRow)
            .where(*cond)
            .values(
                status="failed",
                status_message=message,
                updated_at=time.time(),
                error=_json({"code": -32603, "message": message}),
            )
        )
        with database_errors(), self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)

    def delete_expired(self, *, now: float, limit: int) -> int:
        """Delete at most `limit` tasks whose time to live (from creation) has passed, oldest first.
        A task in a process still working is kept until it ends; a job-backed task's row is
        deleted at its TTL whatever its job's state (the job has its own retention)."""
        expired = (
            TaskRow.ttl_seconds.is_not(None),
            TaskRow.created_at + TaskRow.ttl_seconds < now,
            (TaskRow.status != WORKING) | TaskRow.runner.is_(None),
        )
        oldest = select(TaskRow.id).where(*expired).order_by(TaskRow.created_at).limit(limit)
        with database_errors(), self.engine.begin() as conn:
            ids = list(conn.execute(oldest).scalars())
            if not ids:
                return 0
            return int(conn.execute(delete(TaskRow).where(TaskRow.id.in_(ids))).rowcount)
