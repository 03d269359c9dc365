"""Process-wide state the tools and resources share, opened by the server's lifespan."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import anyio.to_thread
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp_types import CallToolResult
from sqlalchemy import Engine, text

from mcp_server.auth.principal import Principal
from mcp_server.auth.tokens import PrincipalAccessToken, TokenAuthority
from mcp_server.calls import CallRecord, current_call
from mcp_server.crypto.kem import KemKeyStore
from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import MacroslowError, Unauthenticated
from mcp_server.home import initialize, open_kem_keys, open_keys
from mcp_server.ledger.receipts import canonical_json, json_digest, redact
from mcp_server.ledger.store import Draft, Ledger
from mcp_server.maml.model import MamlDocument
from mcp_server.maml.parser import Limits
from mcp_server.policy.guard import Decision, Policy, Request, record_denial
from mcp_server.quantum.backends import JobStatus, RemoteBackend
from mcp_server.quantum.service import JobService, Listener, attestation
from mcp_server.quantum.store import Job, JobStore
from mcp_server.settings import Settings
from mcp_server.signing import digest
from mcp_server.workflows import WorkflowDirectory

if TYPE_CHECKING:
    from mcp_server.llm.service import LlmService

log = logging.getLogger(__name__)

# How callers are identified: "local" (stdio, or HTTP with --no-auth on loopback): the token in
# MACROSLOW_TOKEN if set, else the configured local principal; "bearer" (HTTP): the bearer token the
# SDK verified for this request, and nothing else.
CallerSource = Literal["local", "bearer"]


@dataclass
class AppState:
    settings: Settings
    caller_source: CallerSource = "local"
    limits: Limits = field(init=False)
    authority: TokenAuthority = field(init=False)
    _keys: KeyStore | None = field(default=None, init=False)
    _workflows: WorkflowDirectory | None = field(default=None, init=False)
    policy: Policy = field(init=False)
    _engine: Engine | None = field(default=None, init=False)
    _ledger: Ledger | None = field(default=None, init=False)
    _jobs: JobService | None = field(default=None, init=False)
    job_listeners: list[Listener] = field(default_factory=list, init=False)
    _llm: LlmService | None = field(default=None, init=False)
    _opened: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.limits = Limits(
            max_bytes=self.settings.max_document_bytes, max_depth=self.settings.max_yaml_depth
        )
        self.settings.home.mkdir(parents=True, exist_ok=True)
        # Built eagerly: the HTTP transports check tokens and scopes before the lifespan runs.
        self.authority = TokenAuthority.from_settings(self.settings)
        self.policy = Policy(self.settings, self.limits)

    @property
    def keys(self) -> KeyStore:
        if self._keys is None:
            raise MacroslowError("server state is not open (used outside the server lifespan)")
        return self._keys

    @functools.cached_property
    def kem_keys(self) -> KemKeyStore:
        """Recipient (sealing) keys, opened on first use; see `mcp_server.crypto.kem`."""
        return open_kem_keys(self.settings)

    @property
    def workflows(self) -> WorkflowDirectory:
        if self._workflows is None:
            raise MacroslowError("server state is not open (used outside the server lifespan)")
        return self._workflows

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise MacroslowError("server state is not open (used outside the server lifespan)")
        return self._ledger

    @property
    def llm(self) -> LlmService:
        if self._llm is None:
            raise MacroslowError("server state is not open (used outside the server lifespan)")
        return self._llm

    @property
    def jobs(self) -> JobService:
        if self._jobs is None:
            raise MacroslowError("server state is not open (used outside the server lifespan)")
        return self._jobs

    @property
    def local_principal(self) -> Principal:
        return Principal(
            sub=self.settings.local_subject,
            issuer="local",
            scopes=frozenset(self.settings.local_scopes),
            local=True,
        )

    async def principal(self) -> Principal:
        """The caller of the request being served, or `Unauthenticated`."""
        token = get_access_token()
        if isinstance(token, PrincipalAccessToken) and isinstance(token.principal, Principal):
            return token.principal
        if self.caller_source == "bearer":
            raise Unauthenticated("this request carries no verified bearer token")
        if self.settings.token is not None:
            return await self.authority.verify_async(self.settings.token.get_secret_value())
        return self.local_principal

    async def guard(
        self,
        operation: str,
        *,
        document: str | bytes | MamlDocument | None = None,
        request: Request | None = None,
    ) -> Decision:
        """Identify the caller, then let the policy decide (see `mcp_server.policy.guard`). What was
        decided is noted on the current call's record, for its receipt."""
        record = current_call.get()
        try:
            principal = await self.principal()
        except MacroslowError as exc:
            record_denial(None, operation, exc)
            if record is not None:
                record.denial = exc
            raise
        if record is not None:
            record.principal = principal
        try:
            decision = await self.policy.guard(principal, operation, document=document, request=request)
        except MacroslowError as exc:
            if record is not None:
                record.denial = exc
            raise
        if record is not None:
            action = decision.operation.document_action
            record.action = action.value if action is not None else None
            if decision.document is not None:
                record.document_id = decision.document.id
                record.document_digest = digest(decision.document.canonical)
        return decision

    def deny(self, exc: MacroslowError) -> MacroslowError:
        """Note on the current call's receipt that the policy refused it, after the guard allowed the
        first part (a limit only known once the input is parsed); returns `exc` to raise."""
        record = current_call.get()
        if record is not None:
            record.denial = exc
        return exc

    def check_request(self, decision: Decision, request: Request) -> None:
        """Limits known only after parsing (qubits of a circuit), refused as the guard would."""
        try:
            self.policy.check_request(decision.principal, decision.operation.name, request)
        except MacroslowError as exc:
            raise self.deny(exc) from None

    async def record_call(
        self,
        record: CallRecord,
        result: CallToolResult | None,
        error: MacroslowError | None,
        *,
        internal: bool = False,
    ) -> None:
        """Append the call's receipt (in a worker thread: the append waits for the disk)."""
        principal = record.principal
        outcome = "internal_error" if internal else (error.code if error is not None else "ok")
        draft = Draft(
            principal=principal.uri if principal is not None else "unauthenticated",
            issuer=principal.issuer if principal is not None else "",
            token_id=principal.token_id if principal is not None else None,
            scopes=" ".join(sorted(principal.scopes)) if principal is not None else "",
            tool=record.tool,
            action=record.action,
            decision="denied" if record.denial is not None else "allowed",
            reason=str(error) if error is not None else ("internal error" if internal else None),
            outcome=outcome,
            document_id=record.document_id,
            document_digest=record.document_digest,
            arguments_digest=json_digest(record.arguments),
            result_digest=json_digest(result.structured_content) if result is not None else None,
            backend_job_id=record.backend_job_id,
            duration_us=int((time.perf_counter() - record.started) * 1e6),
            payload=redact(record.arguments) if self.settings.receipt_payloads == "redacted" else None,
            attestation=canonical_json(record.attestation).decode() if record.attestation else None,
        )
        await anyio.to_thread.run_sync(self.ledger.append, draft)

    def check_ready(self) -> str | None:
        """None when ready to serve (open, keys loaded, the database answers a cheap query), else
        the reason (`not_started`, `database_unavailable`). Blocking: call it from a thread."""
        engine = self._engine
        if engine is None or self._keys is None or self._ledger is None:
            return "not_started"
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return "database_unavailable"
        return None

    @asynccontextmanager
    async def open(self) -> AsyncIterator[AppState]:
        """Open on first entry, close on last exit: the SSE transport enters the lifespan once per
        connection, so several may be open at once."""
        if self._opened == 0:
            self._open()
        self._opened += 1
        try:
            yield self
        finally:
            self._opened -= 1
            if self._opened == 0:
                llm = self._llm
                self._close()
                if llm is not None:  # its HTTP client closes in the event loop
                    await llm.aclose()

    def _open(self) -> None:
        """Make sure the home exists (keys are created on first use), then load keys, trust, database."""
        from mcp_server.db import open_engine
        from mcp_server.llm.service import LlmService  # imports `openai` only on the first query
        from mcp_server.policy.quota import RateLimiter

        report = initialize(self.settings, example=False)
        if report.new_key:
            log.warning(
                "created signing key %s in %s (%s)",
                report.key_id,
                self.settings.keys_path,
                "encrypted"
                if report.key_encrypted
                else "unencrypted: set MACROSLOW_KEY_PASSPHRASE to encrypt",
            )
        self._keys = open_keys(self.settings)
        self._workflows = WorkflowDirectory(
            self.settings.workflows_path, self.limits, self.settings.max_workflows_listed
        )
        self._engine = open_engine(self.settings.database)
        self._ledger = Ledger(
            open_engine(self.settings.database, durable=True, migrate_schema=False),
            self._keys,
            checkpoint_every=self.settings.checkpoint_every,
            checkpoint_seconds=self.settings.checkpoint_seconds,
        )
        limiter = RateLimiter(self._engine, self.settings.rate_per_minute, self.settings.rate_burst)
        self.policy.attach(self._keys, limiter)
        self._llm = LlmService(self.settings, self._engine)
        self._jobs = JobService(
            self.settings, JobStore(self._engine), record=self._record_job, remote_factory=self._azure
        )
        for listener in self.job_listeners:
            self._jobs.subscribe(listener)
        self._jobs.start()

    def _azure(self) -> RemoteBackend:
        from mcp_server.quantum.azure import AzureQuantumBackend

        return AzureQuantumBackend.from_settings(self.settings)

    def _record_job(self, job: Job) -> None:
        """The receipt of a job that ended: its attestation binds the circuit to the counts."""
        error = job.error or {}
        self.ledger.append(
            Draft(
                principal=job.principal,
                issuer=job.issuer,
                token_id=None,
                scopes="",
                tool="quantum_job",
                action=None,
                decision="allowed",
                reason=f"{error.get('code')}: {error.get('message')}" if error else None,
                outcome="ok"
                if job.status is JobStatus.succeeded
                else str(error.get("code", job.status.value)),
                document_id=job.document_id,
                backend_job_id=job.id,
                result_digest=json_digest(job.result) if job.result is not None else None,
                duration_us=int(((job.finished_at or job.updated_at) - job.created_at) * 1e6),
                attestation=canonical_json(attestation(job)).decode(),
            )
        )

    def _close(self) -> None:
        self.policy.attach(None, None)
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None
        if self._ledger is not None:
            try:  # a checkpoint of the final state: deleting the tail later is then detected
                self._ledger.checkpoint()
            except MacroslowError as exc:
                log.warning("no final receipts checkpoint: %s", exc)
            self._ledger.engine.dispose()
            self._ledger = None
        if self._engine is not None:
            self._engine.dispose()
        self._keys = None
        self._workflows = None
        self._engine = None
        self._llm = None
