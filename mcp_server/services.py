"""`Services`: what the server opens — keys, workflows, the database and ledger, the guard, quantum
jobs and the LLM client — complete or not at all.

`ServiceHost.open()` is the typed lifespan. It yields the host at once, so a stdio server answers
the MCP handshake without waiting for the database (and without importing SQLAlchemy, the ledger or
the job service first); `ServiceHost.ready()` opens every service, once, and returns one
`Services` — the adapters await it before any call, and the server starts it as soon as the client
says `notifications/initialized`, so it is usually done before the first call arrives. The HTTP
front awaits `ready()` before it accepts a request, so `/readyz` and a failed start mean what they
did. If any step fails, what was already opened is closed again and the caller gets
`backend_unavailable`; the next call tries again (at most every `RETRY_SECONDS`). There is no
half-open state: a `Services` exists whole or not at all.

The SSE transport enters the lifespan once per connection and the HTTP front keeps it open for the
process, so `open()` is reference-counted: the last exit closes (a final signed checkpoint first).

A shutdown is clean (`ServiceHost.closed_cleanly`) when nothing is left open: the lifespan was left
and every service that had been opened closed without an error (the job service, the subscription
bus, the ledger's threads, the rate limiter's last report, the database pools, the LLM client); a
server whose services never opened shuts down cleanly too. A step that fails is logged and the
others still close. The last step logs "shutdown complete" or "shutdown incomplete"; `serve`
exits 0 or 1 accordingly (`mcp_server.cli`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from mcp_server.errors import BackendUnavailable, InvalidDocument, MacroslowError
from mcp_server.home import initialize, open_kem_keys, open_keys
from mcp_server.maml.parser import Limits
from mcp_server.notify_bus import LocalBus, ReplicaBus
from mcp_server.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from mcp_server.crypto.kem import KemKeyStore
    from mcp_server.crypto.keys import KeyStore
    from mcp_server.ledger.store import Ledger
    from mcp_server.llm.service import LlmService
    from mcp_server.policy.guard import Guard, Policy
    from mcp_server.policy.quota import RateLimiter
    from mcp_server.quantum.backends import RemoteBackend
    from mcp_server.quantum.jobs import Job
    from mcp_server.quantum.service import JobService, Listener
    from mcp_server.tasks.service import TaskService
    from mcp_server.witness.policy import Policy as WitnessPolicy
    from mcp_server.workflows import WorkflowDirectory

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_SECONDS = 2.0


@dataclass(eq=False)
class Services:
    """Also the bounded pool for CPU-heavy work (`cpu`): parsing, signing, verifying, sealing and
    listing workflows run there, off the event loop, so a costly call costs its own caller and
    never stalls the transport, health checks or other callers' I/O. A call cancelled while its
    work runs waits for that work (bounded: linear parsing under the size cap) and holds its place
    in the pool meanwhile, so cancelling and retrying cannot pile up threads."""

    settings: Settings
    limits: Limits
    keys: KeyStore
    workflows: WorkflowDirectory
    engine: Engine
    ledger: Ledger
    guard: Guard
    rate_limiter: RateLimiter
    jobs: JobService
    tasks: TaskService
    llm: LlmService
    cpu_limiter: anyio.CapacityLimiter
    bus: ReplicaBus = field(default_factory=LocalBus)  # subscriptions/listen; started and closed here

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker thread of the CPU pool."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.cpu_limiter)

    @functools.cached_property
    def kem_keys(self) -> KemKeyStore:
        """Recipient (sealing) keys, opened on first use; see `mcp_server.crypto.kem`."""
        return open_kem_keys(self.settings)

    def check_ready(self) -> str | None:
        """None when ready to serve (the database answers a cheap query), else the reason.
        Blocking: call it from a thread."""
        from sqlalchemy import text

        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return "database_unavailable"
        return None


@dataclass(eq=False)
class ServiceHost:
    """Opens and closes `Services` for a server; `job_listeners` hear every job status change;
    `after_first_open` callables run once, after the first attempt to open (whether it worked);
    `bus` (the server's subscription bus) is started when the services open and closed with them."""

    settings: Settings
    policy: Policy
    job_listeners: list[Listener] = field(default_factory=list)
    bus: ReplicaBus = field(default_factory=LocalBus)
    after_first_open: list[Callable[[], None]] = field(default_factory=list)
    _services: Services | None = None
    _entered: int = 0
    _lock: anyio.Lock | None = None
    _failure: MacroslowError | None = None
    _failed_at: float = 0.0
    _close_failures: list[str] = field(default_factory=list)

    @property
    def closed_cleanly(self) -> bool:
        """True when nothing is left open: the lifespan was left (or never entered) and every
        service that had been opened closed without an error. False while open, after a shutdown
        that never closed the services (a forced exit), and after a close step failed."""
        return self._entered == 0 and self._services is None and not self._close_failures

    def current(self) -> Services:
        """The open services, without waiting; `backend_unavailable` when not (yet) open."""
        if self._services is None:
            raise BackendUnavailable("the server is starting or stopping; try again")
        return self._services

    async def ready(self) -> Services:
        """The open services, opening them first if need be (once, however many callers wait)."""
        if self._services is not None:
            return self._services
        if self._entered == 0:
            raise BackendUnavailable("the server is starting or stopping; try again")
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._services is not None:
                return self._services
            if self._failure is not None and time.monotonic() - self._failed_at < RETRY_SECONDS:
                raise self._failure
            try:
                self._services = await _open(self.settings, self.policy, self.job_listeners, self.bus)
            except MacroslowError as exc:
                log.error("cannot open the server's services: %s", exc)
                self._failure, self._failed_at = exc, time.monotonic()
                raise
            except Exception:
                log.exception("cannot open the server's services")
                self._failure = BackendUnavailable(
                    "the server could not open its services (see its log); try again shortly"
                )
                self._failed_at = time.monotonic()
                raise self._failure from None
            finally:
                callbacks, self.after_first_open = self.after_first_open, []
                for callback in callbacks:
                    callback()
            self._failure = None
            return self._services

    async def warm_up(self) -> None:
        """Open the services now, ahead of the first call; a failure is logged, and the next call
        tries again."""
        with contextlib.suppress(MacroslowError):
            await self.ready()

    def check_ready(self) -> str | None:
        """See `Services.check_ready`; `not_started` before the services are open. Blocking."""
        services = self._services
        return "not_started" if services is None else services.check_ready()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[ServiceHost]:
        self._entered += 1
        try:
            yield self
        finally:
            self._entered -= 1
            if self._entered == 0:
                with anyio.CancelScope(shield=True):  # closing must finish, even when shutdown cancels
                    if self._lock is not None:
                        async with self._lock:  # an open under way finishes first, then is closed
                            services, self._services = self._services, None
                    else:
                        services, self._services = self._services, None
                    self._failure = None
                    if services is not None:
                        self._close_failures += await _close(services)
                    if self._close_failures:
                        log.error(
                            "shutdown incomplete: %s did not close cleanly", ", ".join(self._close_failures)
                        )
                    else:
                        log.info("shutdown complete: the services are closed")


async def _open(settings: Settings, policy: Policy, listeners: list[Listener], bus: ReplicaBus) -> Services:
    """Open everything in order: the blocking part (imports, files, database) on a worker thread,
    then the job service's threads and the subscription bus, which need the event loop."""
    services = await anyio.to_thread.run_sync(_open_blocking, settings, policy)
    services.bus = bus
    try:
        for listener in listeners:
            services.jobs.subscribe(listener)
        services.jobs.start()
        await bus.start()
        services.tasks.start()  # last: a failure above closes the services with `started=False`
    except BaseException:
        await _close(services, started=False)
        raise
    return services


def _open_blocking(settings: Settings, policy: Policy) -> Services:
    """Make sure the home exists (keys are created on first use), then open everything in order;
    what was opened is closed again if a later step fails."""
    from mcp_server.db import open_engine
    from mcp_server.ledger.drafts import job_draft
    from mcp_server.ledger.store import Ledger
    from mcp_server.llm.service import LlmService  # imports `openai` only on the first query
    from mcp_server.policy.guard import Guard
    from mcp_server.policy.quota import RateLimiter
    from mcp_server.quantum.service import JobService
    from mcp_server.quantum.store import JobStore
    from mcp_server.tasks.service import TaskService
    from mcp_server.tasks.store import TaskStore
    from mcp_server.workflows import WorkflowDirectory

    report = initialize(settings, example=False)
    if report.new_key:
        log.warning(
            "created signing key %s in %s (%s)",
            report.key_id,
            settings.keys_path,
            "encrypted" if report.key_encrypted else "unencrypted: set MACROSLOW_KEY_PASSPHRASE to encrypt",
        )
    with contextlib.ExitStack() as stack:  # closes what was opened if a later step fails
        keys = open_keys(settings)
        engine = open_engine(settings.database)
        stack.callback(engine.dispose)
        ledger_engine = open_engine(settings.database, durable=True, migrate_schema=False)
        stack.callback(ledger_engine.dispose)
        ledger = Ledger(
            ledger_engine,
            keys,
            batch_max=settings.ledger_batch_max,
            batch_wait=settings.ledger_batch_wait,
            cover_seconds=settings.ledger_cover_seconds,
            witnesses=_witness_policy(settings),
            witness_strict=settings.witness_mode == "strict",
            witness_timeout=settings.witness_timeout_seconds,
        )
        stack.callback(ledger.close)
        ledger.recover()  # receipts a stopped server left uncovered, behind a recovery receipt
        limiter = RateLimiter(
            engine, settings.rate_per_minute, settings.rate_burst, sync_seconds=settings.rate_sync_seconds
        )
        limiter.start()  # its sync thread; `_close` stops it and reports what is left
        stack.callback(limiter.close)
        llm = LlmService(settings, engine)

        def record_job(job: Job) -> None:
            """The receipt of a job that ended: its attestation binds the circuit to the counts."""
            ledger.append(job_draft(job))

        jobs = JobService(settings, JobStore(engine), record=record_job, remote_factory=_azure(settings))
        services = Services(
            settings=settings,
            limits=policy.limits,
            keys=keys,
            workflows=WorkflowDirectory(
                settings.workflows_path, policy.limits, settings.max_workflows_listed
            ),
            engine=engine,
            ledger=ledger,
            guard=Guard(policy, keys, limiter),
            rate_limiter=limiter,
            jobs=jobs,
            tasks=TaskService(settings, TaskStore(engine), jobs),
            llm=llm,
            cpu_limiter=anyio.CapacityLimiter(settings.cpu_workers),
        )
        stack.pop_all()  # opened completely: from now on `_close` owns them
    return services


def _witness_policy(settings: Settings) -> WitnessPolicy | None:
    """The tlog-policy file naming the witnesses, if one is set (read once, at start)."""
    if settings.witness_policy is None:
        return None
    from mcp_server.witness import policy

    try:
        text = settings.witness_policy.expanduser().read_bytes()
    except OSError as exc:
        raise InvalidDocument(f"the witness policy file cannot be read ({type(exc).__name__})") from exc
    return policy.parse(text)


def _azure(settings: Settings) -> functools.partial[RemoteBackend]:
    return functools.partial(_azure_backend, settings)


def _azure_backend(settings: Settings) -> RemoteBackend:
    from mcp_server.quantum.azure import AzureQuantumBackend  # the Azure SDK loads on first use

    return AzureQuantumBackend.from_settings(settings)


async def _close(services: Services, *, started: bool = True) -> list[str]:
    """Close every service, in order; returns the names of those that failed to (each logged).
    A failure does not stop the others from closing."""
    log.info("closing the services")
    failed: list[str] = []

    async def step(name: str, close: Callable[[], Any]) -> None:
        try:
            result = close()
            if hasattr(result, "__await__"):
                await result
        except Exception:
            log.exception("closing %s failed", name)
            failed.append(name)

    if started:
        await step("the task service", services.tasks.close)  # work still running here: cancelled, failed
        await step("the job service", services.jobs.close)  # a job that ends now still records its receipt
    await step("the subscription bus", services.bus.close)  # after the jobs: they announce no more
    await step("the ledger", services.ledger.close)
    # The calls granted since the last rate sync are reported (blocking database I/O: off the loop).
    await step("the rate limiter", lambda: anyio.to_thread.run_sync(services.rate_limiter.close))
    await step("the ledger's database pool", services.ledger.engine.dispose)
    await step("the database pool", services.engine.dispose)
    await step("the LLM client", services.llm.aclose)  # its HTTP client closes in the event loop
    return failed
