"""The task service: creating, reading, cancelling and running tasks (see the package docstring).

`create_for_job` makes the task of a submitted job; `defer` makes a task and runs its work in this
process after the answer; `get` renders a task as `tasks/get` answers it (a job-backed task from its
job's row); `cancel` stops a job (wherever it runs) or this process's work, or flags work another
process runs (it acts on the flag at its next heartbeat). A heartbeat loop on the event loop beats
for this process's running tasks, fails tasks of processes that stopped beating and deletes expired
tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from mcp_types import CallToolResult

from mcp_server.errors import MacroslowError, NotFound
from mcp_server.quantum.backends import JobStatus
from mcp_server.quantum.jobs import job_error
from mcp_server.tasks.store import STOPPED, TaskRecord, TaskStore
from mcp_server.views import iso

if TYPE_CHECKING:
    from mcp_server.auth.principal import Principal
    from mcp_server.quantum.jobs import Job
    from mcp_server.quantum.service import JobService
    from mcp_server.settings import Settings

log = logging.getLogger(__name__)

EXPIRE_BATCH = 500
Work = Callable[[], Awaitable[CallToolResult]]


def dump(result: CallToolResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


class TaskService:
    def __init__(self, settings: Settings, store: TaskStore, jobs: JobService) -> None:
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.runner = jobs.runner  # one id per server process
        self.heartbeat_seconds = settings.quantum_heartbeat_seconds
        self.stale_seconds = 5 * settings.quantum_heartbeat_seconds
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """On the event loop: start the heartbeat loop."""
        self._loop_task = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    async def close(self) -> None:
        """Stop: work still running here is cancelled, and its tasks fail as stopped."""
        self._stopping = True
        for task in [*self._running.values(), *([self._loop_task] if self._loop_task else [])]:
            task.cancel()
        for task in [*self._running.values(), *([self._loop_task] if self._loop_task else [])]:
            with contextlib.suppress(asyncio.CancelledError):  # each settles its own task row
                await task
        try:
            await anyio.to_thread.run_sync(lambda: self.store.fail_stale(older_than=0, runner=self.runner))
        except MacroslowError as exc:
            log.warning("could not fail this process's tasks: %s", exc)

    @property
    def ttl_seconds(self) -> float | None:
        retention = self.settings.job_retention_seconds
        return retention if retention > 0 else None

    # -- creating ---------------------------------------------------------------------------
    async def create_for_job(
        self, principal: Principal, tool: str, job_id: str, view: dict[str, Any]
    ) -> dict[str, Any]:
        """The task of a submitted job, committed; returns the `CreateTaskResult`."""
        record = await self._create(principal, tool, job_id=job_id, view=view)
        return {"resultType": "task", **self._render(record, await self._job(record))}

    async def defer(self, principal: Principal, tool: str, work: Work) -> dict[str, Any]:
        """A task whose `work` runs in this process once the handle is returned; the work's result
        (or its cancellation) ends the task. Returns the `CreateTaskResult`."""
        record = await self._create(principal, tool, runner=self.runner)
        task_id = record.id
        # The work runs as its own asyncio task (it copies this request's context: the caller's
        # verified token stays its caller), not in the request's scope, which ends with the answer.
        self._running[task_id] = asyncio.get_running_loop().create_task(self._run(task_id, work))
        return {"resultType": "task", **self._render(record, None)}

    async def _create(self, principal: Principal, tool: str, **fields: Any) -> TaskRecord:
        """A new working task of `principal`'s, committed when this returns."""
        return await anyio.to_thread.run_sync(
            lambda: self.store.create(
                _new_id(), principal=principal.uri, tool=tool, ttl_seconds=self.ttl_seconds, **fields
            )
        )

    async def _run(self, task_id: str, work: Work) -> None:
        try:
            result = await work()
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                if self._stopping:
                    error = {"code": -32603, "message": STOPPED}
                    await self._finish(task_id, "failed", message=STOPPED, error=error)
                else:
                    await self._finish(task_id, "cancelled", message="cancelled by the caller")
            raise
        except Exception:
            log.exception("task %s failed unexpectedly", task_id)
            error = {
                "code": -32603,
                "message": "the task failed inside the server; the failure is logged there",
            }
            await self._finish(task_id, "failed", message=error["message"], error=error)
        else:
            await self._finish(task_id, "completed", result=dump(result))
        finally:
            self._running.pop(task_id, None)

    async def _finish(self, task_id: str, status: str, **fields: Any) -> None:
        try:
            await anyio.to_thread.run_sync(lambda: self.store.finish(task_id, status, **fields))
        except MacroslowError as exc:
            log.error("task %s ended (%s) but its row could not be updated: %s", task_id, status, exc)

    # -- reading, cancelling ------------------------------------------------------------------
    async def _own(self, principal: Principal, task_id: str) -> TaskRecord:
        record = await anyio.to_thread.run_sync(self.store.get, task_id)
        if record is None or record.principal != principal.uri:
            raise NotFound("task not found")
        return record

    async def get(self, principal: Principal, task_id: str) -> dict[str, Any]:
        """The task as `tasks/get` answers it (a `DetailedTask`)."""
        record = await self._own(principal, task_id)
        job = await self._job(record)
        return self._render(record, job)

    async def cancel(self, principal: Principal, task_id: str) -> None:
        record = await self._own(principal, task_id)
        if record.final:
            return
        if record.job_id is not None:
            with contextlib.suppress(NotFound):  # the job is gone (its retention passed): nothing to stop
                await self.jobs.cancel(principal, record.job_id)
            return
        running = self._running.get(task_id)
        if running is not None:
            running.cancel()
            return
        await anyio.to_thread.run_sync(self.store.request_cancel, task_id)

    async def update(self, principal: Principal, task_id: str) -> None:
        """`tasks/update`: no task of this server asks for input while it runs (consent is asked
        before a task is made), so there is never an outstanding request: responses are ignored,
        as the extension says for keys that are not outstanding."""
        await self._own(principal, task_id)

    async def _job(self, record: TaskRecord) -> Job | None:
        """The task's job as the job service shows it to the task's creator (a job whose process
        stopped beating reads `interrupted`); a job deleted by its retention: the task expired."""
        if record.job_id is None:
            return None
        job = await anyio.to_thread.run_sync(self.jobs.store.find, record.job_id)
        if job is None:
            raise NotFound("task has expired")
        return await self.jobs.reconcile(job)

    # -- rendering ----------------------------------------------------------------------------
    def _render(self, record: TaskRecord, job: Job | None) -> dict[str, Any]:
        updated = record.updated_at if job is None else max(record.updated_at, job.updated_at)
        task: dict[str, Any] = {
            "taskId": record.id,
            "createdAt": iso(record.created_at),
            "lastUpdatedAt": iso(updated),
            "ttlMs": None if record.ttl_seconds is None else int(record.ttl_seconds * 1000),
            "pollIntervalMs": self._poll_ms(job),
        }
        if job is None:
            task["status"] = record.status
            if record.status_message:
                task["statusMessage"] = record.status_message
            if record.status == "completed":
                task["result"] = record.result
            elif record.status == "failed":
                task["error"] = record.error
            return task
        return {**task, **self._job_state(job, record.view)}

    def _job_state(self, job: Job, view: dict[str, Any]) -> dict[str, Any]:
        from mcp_server.adapters.results import error_result, ok_result
        from mcp_server.views import QuantumJob

        status = job.status
        if not status.final:
            return {"status": "working", "statusMessage": f"job {job.id} {status.value}"}
        if status is JobStatus.succeeded:
            model = QuantumJob.from_job(job, budget=self.settings.max_result_bytes, **view)
            return {
                "status": "completed",
                "statusMessage": f"job {job.id} succeeded",
                "result": dump(ok_result(model)),
            }
        if status is JobStatus.failed:
            return {
                "status": "completed",
                "statusMessage": f"job {job.id} failed",
                "result": dump(error_result(job_error(job))),
            }
        if status is JobStatus.cancelled:
            return {"status": "cancelled", "statusMessage": (job.error or {}).get("message") or "cancelled"}
        message = (job.error or {}).get("message") or f"job {job.id} {status.value}"
        return {"status": "failed", "statusMessage": message, "error": {"code": -32603, "message": message}}

    def _poll_ms(self, job: Job | None) -> int:
        seconds = self.settings.task_poll_seconds
        if job is not None and job.backend != "local":
            seconds = max(seconds, self.settings.azure_poll_initial_seconds)
        return int(seconds * 1000)

    # -- the heartbeat ------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_seconds)
            try:
                await self.beat()
            except MacroslowError as exc:
                log.warning("task heartbeat: %s", exc)

    async def beat(self, now: float | None = None) -> None:
        """One heartbeat: mark this process's running tasks alive (and stop those another process
        asked to cancel), fail tasks whose process stopped beating, delete expired tasks."""
        moment = time.time() if now is None else now
        flagged = await anyio.to_thread.run_sync(self.store.heartbeat, self.runner, list(self._running))
        for task_id in flagged:
            running = self._running.get(task_id)
            if running is not None:
                running.cancel()
        failed = await anyio.to_thread.run_sync(
            lambda: self.store.fail_stale(older_than=moment - self.stale_seconds)
        )
        if failed:
            log.warning("failed %d task(s) of a stopped server process", failed)
        await anyio.to_thread.run_sync(lambda: self.store.delete_expired(now=moment, limit=EXPIRE_BATCH))


def _new_id() -> str:
    """An unguessable task id (192 random bits): only its creator may use it, but it is never
    enumerable either."""
    return secrets.token_urlsafe(24)
