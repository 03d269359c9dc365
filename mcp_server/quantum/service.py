"""The job service: quantum jobs from submission to result, whichever backend runs them.

- `submit` records the job (status `queued`) and starts it: a local job on a thread that drives an
  Aer worker process (`mcp_server.quantum.local`); a remote job is submitted to the service at once
  (so an unknown target or refused credentials come back to the caller as errors) and then polled
  with backoff on a thread (`azure_poll_initial_seconds`, growing 1.5x to `azure_poll_max_seconds`;
  a 429 waits at least its Retry-After).
- `wait` waits up to a deadline for the job to end, reporting progress while it waits.
- Every status change is written to the job's row first and then announced to listeners (the
  server turns that into `notifications/resources/updated` for `jobs://<id>`).
- Every job that ends appends a receipt (tool `quantum_job`, action `complete`) whose attestation
  binds the job id, backend, target, circuit digest, shots, seed, method and the counts' digest.
- Several server processes may share the database. A local job belongs to the process running it
  (`runner`), which beats a heartbeat on its rows; another process that finds a job whose heartbeat
  stopped marks it `interrupted`. A cancellation for a job running elsewhere is a flag on the row,
  which the running process acts on at its next heartbeat.
- A caller that stops waiting (its request cancelled, its connection closed) stops only its wait: the
  job runs on, stays readable, and can be cancelled with `cancel`; it then gets its own receipt.
- Retention: each heartbeat deletes up to `EXPIRE_BATCH` jobs that ended more than
  `job_retention_seconds` ago (0 keeps them); queued and running jobs are never deleted, and the
  receipts of deleted jobs stay in the ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from mcp_server.auth.principal import Principal
from mcp_server.errors import BackendUnavailable, MacroslowError, NotFound, RateLimited
from mcp_server.policy import access
from mcp_server.quantum.backends import JobStatus, Outcome, RemoteBackend, RemoteState, Submission
from mcp_server.quantum.jobs import BackendChoice, Job
from mcp_server.quantum.local import Cancelled, LocalSimulator, RunHandle, available_memory_bytes
from mcp_server.quantum.store import JobStore

if TYPE_CHECKING:
    from mcp_server.quantum.circuits import Circuit
    from mcp_server.settings import Settings

log = logging.getLogger(__name__)

Listener = Callable[[Job], Coroutine[Any, Any, None]]
EXPIRE_BATCH = 500  # finished jobs deleted per heartbeat, at most: a pass stays short


@dataclass(eq=False)
class _Active:
    """A job this process is running."""

    job: Job  # the job as this process last wrote it
    done: anyio.Event
    waiters: int = 0  # calls waiting inline for the result: they attest it in their own receipts
    final: Job | None = None
    handle: RunHandle | None = None  # local
    stop_polling: threading.Event = field(default_factory=threading.Event)  # remote
    cancel_reason: str | None = None


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        *,
        record: Callable[[Job], None] | None = None,
        remote_factory: Callable[[], RemoteBackend] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.record = record
        self._remote_factory = remote_factory
        self._remote: RemoteBackend | None = None
        self.runner = f"{uuid.uuid4().hex[:12]}"
        memory = (
            settings.quantum_memory_mb * 2**20
            if settings.quantum_memory_mb
            else available_memory_bytes() // 2
        )
        self.local = LocalSimulator(
            workers=settings.quantum_workers,
            max_queued=settings.quantum_max_queued,
            memory_bytes=memory,
            max_qubits=settings.max_qubits,
            timeout=settings.quantum_job_timeout_seconds,
            mps_max_bond=settings.quantum_mps_max_bond_dimension,
        )
        self.heartbeat_seconds = settings.quantum_heartbeat_seconds
        self.stale_seconds = 5 * settings.quantum_heartbeat_seconds
        self._active: dict[str, _Active] = {}
        self._listeners: list[Listener] = []
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Called on the event loop: remember it (job threads report back to it), mark jobs of
        processes that died as interrupted, and start the heartbeat."""
        self._token = anyio.lowlevel.current_token()
        swept = self.store.interrupt_stale(older_than=time.time() - self.stale_seconds)
        if swept:
            log.warning("marked %d local job(s) of a stopped server process as interrupted", swept)
        self._spawn(self._heartbeat_loop, "macroslow-jobs-heartbeat")
        self._spawn(self._adopt_remote, "macroslow-jobs-adopt")

    def _adopt_remote(self) -> None:
        """Poll the remote jobs a stopped process left behind (they kept running at the service)."""
        if self._remote_factory is None:
            return
        older_than = time.time() - self.stale_seconds
        for job in self.store.claim_stale_remote(self.runner, older_than=older_than):
            if self._token is None or job.remote_id is None:
                return
            done = anyio.from_thread.run_sync(anyio.Event, token=self._token)
            active = _Active(job, done)
            self._active[job.id] = active
            remote_id = job.remote_id
            self._spawn(functools.partial(self._poll_remote, active, remote_id), "macroslow-job-poll")
            log.info("polling Azure job %s (%s) left by a stopped server process", job.id, remote_id)

    def close(self) -> None:
        """Stop: local runs are killed and recorded as interrupted; remote jobs keep running at the
        service and are left active for another process (or the next start) to pick up."""
        self._stop.set()
        self._token = None  # job threads stop reporting to the event loop, which is busy closing us
        for active in list(self._active.values()):
            active.stop_polling.set()
        self.local.close()
        for thread in list(self._threads):
            thread.join(timeout=5)
        try:
            self.store.interrupt_stale(older_than=0, runner=self.runner)
        except MacroslowError as exc:
            log.warning("could not mark this process's jobs interrupted: %s", exc)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- reading -----------------------------------------------------------------------------
    async def get(self, principal: Principal, job_id: str) -> Job:
        """The caller's job (another caller's looks like no job at all, unless the caller audits)."""
        job = await anyio.to_thread.run_sync(self.store.get, job_id)
        if not access.may_see(principal, job):
            raise NotFound(f"no job {job_id!r}")
        return await self.reconcile(job)

    async def list(self, principal: Principal, limit: int = 50) -> list[Job]:
        owner = access.job_owner_filter(principal)
        jobs = await anyio.to_thread.run_sync(lambda: self.store.recent(owner, limit=limit))
        return [j for j in jobs if access.may_see(principal, j)]

    async def reconcile(self, job: Job) -> Job:
        """A local job whose runner stopped beating is interrupted; say so now rather than later."""
        stale = (
            job.backend == "local"
            and not job.status.final
            and job.id not in self._active
            and (job.heartbeat_at or 0) < time.time() - self.stale_seconds
        )
        if stale:
            await anyio.to_thread.run_sync(
                lambda: self.store.interrupt_stale(older_than=time.time() - self.stale_seconds)
            )
            job = await anyio.to_thread.run_sync(self.store.get, job.id)
        return job

    # -- submitting ------------------------------------------------------------------------
    def plan(self, circuit: Circuit, choice: BackendChoice) -> str | None:
        """Check the circuit fits the backend before anything is recorded; the local method."""
        if choice.backend == "local":
            return self.local.planner.plan(circuit.qubits, circuit.gate_counts).method
        self.remote().check_target(choice.target)
        return None

    def remote(self) -> RemoteBackend:
        if self._remote is None:
            if self._remote_factory is None:
                raise BackendUnavailable("no remote quantum backend is available in this server")
            self._remote = self._remote_factory()
        return self._remote

    async def submit(
        self,
        principal: Principal,
        circuit: Circuit,
        choice: BackendChoice,
        *,
        shots: int,
        seed: int | None,
        document_id: str | None,
    ) -> Job:
        method = self.plan(circuit, choice)
        if choice.backend == "local" and seed is None:
            seed = secrets.randbelow(2**31)  # recorded, so the run repeats and the attestation names it
        job_id = str(uuid.uuid4())
        now = time.time()
        job = Job(
            id=job_id,
            principal=principal.uri,
            issuer=principal.issuer,
            backend=choice.backend,
            target=choice.target,
            status=JobStatus.queued,
            created_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
            qubits=circuit.qubits,
            depth=circuit.depth,
            shots=shots,
            seed=seed,
            gate_counts=circuit.gate_counts,
            circuit_digest=circuit.digest,
            document_id=document_id,
            method=method,
            remote_id=None,
            runner=self.runner,
            heartbeat_at=now,
            cancel_requested=False,
            result=None,
            error=None,
        )
        if choice.backend == "local":
            self.local.admit()
        try:
            await anyio.to_thread.run_sync(lambda: self.store.create(**job.fields()))
        except BaseException:
            if choice.backend == "local":
                self.local.withdraw()
            raise
        active = _Active(job, anyio.Event())
        submission = Submission(job_id, circuit.circuit, shots, seed, choice.target)
        self._active[job_id] = active
        if choice.backend == "local":
            active.handle = RunHandle()
            self._spawn(lambda: self._run_local(active, submission, method or "automatic"), "macroslow-job")
        else:
            try:
                remote_id = await self.remote().submit(submission)
            except MacroslowError as exc:
                await anyio.to_thread.run_sync(
                    functools.partial(self._finish, active, JobStatus.failed, error=exc)
                )
                raise
            await anyio.to_thread.run_sync(lambda: self.store.advance(job_id, remote_id=remote_id))
            active.job = dataclasses.replace(active.job, remote_id=remote_id)
            self._spawn(lambda: self._poll_remote(active, remote_id), "macroslow-job-poll")
        return active.final or active.job

    async def wait(
        self,
        job_id: str,
        seconds: float,
        progress: Callable[[float, float, str], Awaitable[None]] | None = None,
    ) -> Job:
        """The job once it ended, or as it stands when `seconds` have passed.

        A job of this process that ends while a caller waits here is attested by that caller's
        receipt (it returns the final job), not by a separate `quantum_job` receipt."""
        active = self._active.get(job_id)
        if active is None:
            return await self._wait_elsewhere(job_id, seconds, progress)
        start = time.monotonic()
        with self._lock:
            if active.final is not None:
                return active.final
            active.waiters += 1
        try:
            while not active.done.is_set():
                remaining = start + seconds - time.monotonic()
                if remaining <= 0:
                    break
                with anyio.move_on_after(min(remaining, 1.0)):
                    await active.done.wait()
                if progress is not None and not active.done.is_set():
                    await progress(time.monotonic() - start, seconds, active.job.status.value)
        finally:
            with self._lock:
                active.waiters -= 1
                job = active.final or active.job
        return job

    async def _wait_elsewhere(
        self, job_id: str, seconds: float, progress: Callable[[float, float, str], Awaitable[None]] | None
    ) -> Job:
        """A job another process runs: watch its row."""
        start = time.monotonic()
        while True:
            job = await anyio.to_thread.run_sync(self.store.get, job_id)
            if job.status.final or time.monotonic() - start >= seconds:
                return job
            if progress is not None:
                await progress(time.monotonic() - start, seconds, job.status.value)
            await anyio.sleep(min(0.5, max(0.0, start + seconds - time.monotonic())))

    async def cancel(self, principal: Principal, job_id: str) -> Job:
        job = await self.get(principal, job_id)
        if job.status.final:
            return job
        reason = f"cancelled by {principal.uri}"
        active = self._active.get(job_id)
        if active is None:  # running in another server process: it acts on the flag
            await anyio.to_thread.run_sync(self.store.request_cancel, job_id)
            return await self.reconcile(await anyio.to_thread.run_sync(self.store.get, job_id))
        active.cancel_reason = reason
        if active.handle is not None:
            active.handle.cancel(reason)
        active.stop_polling.set()
        with anyio.move_on_after(10):
            await active.done.wait()
        return await anyio.to_thread.run_sync(self.store.get, job_id)

    # -- running (on threads) ---------------------------------------------------------------
    def _spawn(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            except Exception:
                log.exception("%s failed", name)
            finally:
                self._threads.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.add(thread)
        thread.start()

    def _run_local(self, active: _Active, submission: Submission, method: str) -> None:
        assert active.handle is not None

        def started() -> None:
            now = time.time()
            if self.store.advance(submission.job_id, status=JobStatus.running, started_at=now):
                active.job = dataclasses.replace(active.job, status=JobStatus.running, started_at=now)
                self._announce(active.job)

        try:
            outcome = self.local.run(submission, method, active.handle, on_start=started)
        except Cancelled as exc:
            status = JobStatus.interrupted if self._stop.is_set() else JobStatus.cancelled
            if "timed out" in exc.reason:
                status = JobStatus.failed
            self._finish(active, status, reason=exc.reason)
        except MacroslowError as exc:
            if self._stop.is_set():
                self._finish(active, JobStatus.interrupted, reason="the server stopped during the run")
            else:
                self._finish(active, JobStatus.failed, error=exc)
        except Exception:
            log.exception("local job %s failed", submission.job_id)
            self._finish(active, JobStatus.failed, error=BackendUnavailable("the local simulator failed"))
        else:
            self._finish(active, JobStatus.succeeded, outcome=outcome)

    def _poll_remote(self, active: _Active, remote_id: str) -> None:
        backend = self.remote()
        delay = self.settings.azure_poll_initial_seconds
        failures = 0
        while True:
            if active.stop_polling.wait(delay):
                if active.cancel_reason is None:  # the server is stopping: the job stays active
                    self._active.pop(active.job.id, None)
                    self._call_soon(active.done.set)
                    return
                try:
                    self._call(backend.cancel, remote_id)
                except MacroslowError as exc:
                    log.warning("cancelling remote job %s: %s", remote_id, exc)
                self._finish(active, JobStatus.cancelled, reason=active.cancel_reason)
                return
            try:
                state: RemoteState = self._call(backend.status, remote_id)
                failures = 0
            except RateLimited as exc:
                delay = max(delay, exc.retry_after)
                continue
            except BackendUnavailable as exc:
                failures += 1
                if failures >= 5:
                    self._finish(active, JobStatus.failed, error=exc)
                    return
                delay = min(delay * 2, self.settings.azure_poll_max_seconds)
                continue
            except MacroslowError as exc:
                self._finish(active, JobStatus.failed, error=exc)
                return
            if state.status is JobStatus.running:
                now = time.time()
                if self.store.advance(
                    active.job.id, expect=(JobStatus.queued.value,), status=JobStatus.running, started_at=now
                ):
                    active.job = dataclasses.replace(active.job, status=JobStatus.running, started_at=now)
                    self._announce(active.job)
            elif state.status.final:
                self._finish(active, state.status, outcome=state.outcome, error=state.error)
                return
            delay = min(delay * 1.5, self.settings.azure_poll_max_seconds)

    def _finish(
        self,
        active: _Active,
        status: JobStatus,
        *,
        outcome: Outcome | None = None,
        error: MacroslowError | None = None,
        reason: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {"status": status, "finished_at": time.time()}
        if outcome is not None:
            fields["result"] = {
                "counts": outcome.counts,
                "seconds": outcome.seconds,
                **({"details": outcome.details} if outcome.details else {}),
            }
            if outcome.method:
                fields["method"] = outcome.method
        if error is not None:
            fields["error"] = error.to_dict()
        elif reason is not None:
            fields["error"] = {"code": status.value, "message": reason}
        try:
            applied = self.store.advance(active.job.id, **fields)
        except MacroslowError as exc:
            log.error("job %s ended (%s) but its record could not be updated: %s", active.job.id, status, exc)
            applied = False
        final = dataclasses.replace(active.job, **fields, updated_at=fields["finished_at"])
        with self._lock:
            if applied:
                active.final = final
            attested_by_caller = applied and active.waiters > 0
            self._active.pop(active.job.id, None)
        if attested_by_caller:
            self._settle(active, final)
            return
        if applied:  # before anyone waiting on `done` wakes: cancel_job answers after this receipt
            self._record(final)
        self._call_soon(active.done.set)
        if applied:
            self._announce(final)

    def _settle(self, active: _Active, job: Job) -> None:
        """A job a caller waits for ended: wake the caller and tell the listeners in one trip to the
        event loop (the caller's receipt attests the job, so there is no `quantum_job` receipt)."""

        async def settle() -> None:
            active.done.set()
            for listener in self._listeners:
                try:
                    await listener(job)
                except Exception:
                    log.exception("job listener failed")

        if self._token is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has ended
            anyio.from_thread.run(settle, token=self._token)

    def _record(self, job: Job) -> None:
        """Append the `quantum_job` receipt of a job that ended with nobody waiting for it inline."""
        if self.record is not None:
            try:
                self.record(job)
            except MacroslowError as exc:
                log.error("job %s: completion receipt not written: %s", job.id, exc)

    def _announce(self, job: Job) -> None:
        """Tell listeners about a status change."""
        for listener in self._listeners:
            if self._token is None:  # stopping: nobody is listening any more
                break
            try:
                self._call(listener, job)
            except Exception:
                log.exception("job listener failed")

    def expire_finished(self, now: float | None = None) -> int:
        """Delete up to `EXPIRE_BATCH` jobs that ended more than `job_retention_seconds` before `now`
        (default: the clock); nothing when the retention is 0. Returns how many were deleted."""
        retention = self.settings.job_retention_seconds
        if retention <= 0:
            return 0
        moment = time.time() if now is None else now
        return self.store.delete_finished(finished_before=moment - retention, limit=EXPIRE_BATCH)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self.store.heartbeat(self.runner, [a.job.id for a in list(self._active.values())])
                self._adopt_remote()
                for job_id in self.store.cancel_requested(self.runner):
                    active = self._active.get(job_id)
                    if active is not None:
                        active.cancel_reason = "cancelled through another server process"
                        if active.handle is not None:
                            active.handle.cancel(active.cancel_reason)
                        active.stop_polling.set()
                self.store.interrupt_stale(older_than=time.time() - self.stale_seconds)
                self.expire_finished()
            except MacroslowError as exc:
                log.warning("job heartbeat: %s", exc)

    # -- reaching the event loop from job threads --------------------------------------------
    def _call(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        if self._token is None:
            raise BackendUnavailable("the server is stopping")
        return anyio.from_thread.run(fn, *args, token=self._token)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        if self._token is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has ended
            anyio.from_thread.run_sync(fn, token=self._token)
