"""`Services`: what the server's lifespan opens — keys, workflows, the database and ledger, the
guard, quantum jobs and the LLM client — complete or not at all.

`ServiceHost.open()` is the typed lifespan: it opens every service, yields one `Services`, and
closes them in reverse order (a final signed checkpoint first). If any step fails, what was already
opened is closed again and the error propagates: there is no half-open state. The SSE transport
enters the lifespan once per connection and the HTTP front keeps it open for the process, so
`open()` is reference-counted: the first entry opens, the last exit closes.

The adapters read `host.current()`; outside an open lifespan it is `backend_unavailable`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from mcp_server.crypto.kem import KemKeyStore
from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import BackendUnavailable, MacroslowError
from mcp_server.home import initialize, open_kem_keys, open_keys
from mcp_server.ledger.drafts import job_draft
from mcp_server.ledger.store import Ledger
from mcp_server.maml.parser import Limits
from mcp_server.policy.guard import Guard, Policy
from mcp_server.quantum.service import JobService, Listener
from mcp_server.settings import Settings
from mcp_server.workflows import WorkflowDirectory

if TYPE_CHECKING:
    from mcp_server.llm.service import LlmService
    from mcp_server.quantum.backends import RemoteBackend
    from mcp_server.quantum.store import Job

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Services:
    settings: Settings
    limits: Limits
    keys: KeyStore
    workflows: WorkflowDirectory
    engine: Engine
    ledger: Ledger
    guard: Guard
    jobs: JobService
    llm: LlmService

    @functools.cached_property
    def kem_keys(self) -> KemKeyStore:
        """Recipient (sealing) keys, opened on first use; see `mcp_server.crypto.kem`."""
        return open_kem_keys(self.settings)

    def check_ready(self) -> str | None:
        """None when ready to serve (the database answers a cheap query), else the reason.
        Blocking: call it from a thread."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return "database_unavailable"
        return None


@dataclass(eq=False)
class ServiceHost:
    """Opens and closes `Services` for a server; `job_listeners` hear every job status change."""

    settings: Settings
    policy: Policy
    job_listeners: list[Listener] = field(default_factory=list)
    _services: Services | None = None
    _entered: int = 0

    def current(self) -> Services:
        if self._services is None:
            raise BackendUnavailable("the server is starting or stopping; try again")
        return self._services

    def check_ready(self) -> str | None:
        """See `Services.check_ready`; `not_started` before the lifespan opened. Blocking."""
        services = self._services
        return "not_started" if services is None else services.check_ready()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Services]:
        if self._entered == 0:
            self._services = await _open(self.settings, self.policy, self.job_listeners)
        self._entered += 1
        try:
            yield self._services  # type: ignore[misc]  # set above, or by an earlier entry
        finally:
            self._entered -= 1
            if self._entered == 0:
                services, self._services = self._services, None
                if services is not None:
                    await _close(services)


async def _open(settings: Settings, policy: Policy, listeners: list[Listener]) -> Services:
    """Make sure the home exists (keys are created on first use), then open everything in order."""
    from mcp_server.db import open_engine
    from mcp_server.llm.service import LlmService  # imports `openai` only on the first query
    from mcp_server.policy.quota import RateLimiter
    from mcp_server.quantum.store import JobStore

    report = initialize(settings, example=False)
    if report.new_key:
        log.warning(
            "created signing key %s in %s (%s)",
            report.key_id,
            settings.keys_path,
            "encrypted" if report.key_encrypted else "unencrypted: set MACROSLOW_KEY_PASSPHRASE to encrypt",
        )
    async with AsyncExitStack() as stack:  # closes what was opened if a later step fails
        keys = open_keys(settings)
        engine = open_engine(settings.database)
        stack.callback(engine.dispose)
        ledger_engine = open_engine(settings.database, durable=True, migrate_schema=False)
        stack.callback(ledger_engine.dispose)
        ledger = Ledger(
            ledger_engine,
            keys,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_seconds=settings.checkpoint_seconds,
        )
        limiter = RateLimiter(engine, settings.rate_per_minute, settings.rate_burst)
        llm = LlmService(settings, engine)
        stack.push_async_callback(llm.aclose)

        def record_job(job: Job) -> None:
            """The receipt of a job that ended: its attestation binds the circuit to the counts."""
            ledger.append(job_draft(job))

        jobs = JobService(settings, JobStore(engine), record=record_job, remote_factory=_azure(settings))
        for listener in listeners:
            jobs.subscribe(listener)
        jobs.start()
        stack.callback(jobs.close)
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
            jobs=jobs,
            llm=llm,
        )
        stack.pop_all()  # opened completely: from now on `_close` owns them
    return services


def _azure(settings: Settings) -> functools.partial[RemoteBackend]:
    return functools.partial(_azure_backend, settings)


def _azure_backend(settings: Settings) -> RemoteBackend:
    from mcp_server.quantum.azure import AzureQuantumBackend  # the Azure SDK loads on first use

    return AzureQuantumBackend.from_settings(settings)


async def _close(services: Services) -> None:
    services.jobs.close()
    try:  # a checkpoint of the final state: deleting the tail later is then detected
        services.ledger.checkpoint()
    except MacroslowError as exc:
        log.warning("no final receipts checkpoint: %s", exc)
    services.ledger.engine.dispose()
    services.engine.dispose()
    await services.llm.aclose()  # its HTTP client closes in the event loop
