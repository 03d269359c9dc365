"""`Call`: one tool call or resource read, from the moment it arrives to its receipt.

The adapters (`mcp_server.adapters`) open a `Call` for every request they serve and hand it to the
tool or resource body; services that learn something the receipt must say (a job and its
attestation, a refusal known only after parsing) are given the same `Call`. Nothing else carries
per-call state: there is no context variable and no second record.

- `call.decide(...)` runs the policy's document and limit checks (`Guard.decide`) and notes the
  document on the record;
- `call.note_document`, `call.note_job`, `call.note_backend_request` add what the receipt binds;
- `call.refuse(exc)` marks the call as denied by policy, writes the audit line and counts the
  denial metric, always together, and returns `exc` to raise.

The adapter turns the finished record into exactly one receipt (`mcp_server.ledger.drafts`).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from mcp_server import metrics
from mcp_server.auth.principal import Principal
from mcp_server.errors import MacroslowError
from mcp_server.maml.model import MamlDocument
from mcp_server.policy.guard import Decision, Request
from mcp_server.policy.operations import DocumentAction, Operation
from mcp_server.signing import digest

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from mcp_server.quantum.jobs import Job
    from mcp_server.services import Services

audit = logging.getLogger("mcp_server.audit")
E = TypeVar("E", bound=MacroslowError)
T = TypeVar("T")


@dataclass(eq=False)
class Call:
    name: str  # the tool, or the resource family (maml://workflows, jobs://, receipts://)
    arguments: dict[str, Any]  # as the caller sent them (digested into the receipt, never logged)
    ctx: Context[Any, Any] | None = None  # the SDK's request context (progress notifications)
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None  # set by the adapter once the caller is identified
    operation: Operation | None = None  # set by the adapter once the guard admitted the call
    _services: Services | None = None  # set by the adapter before anything is checked
    decision: Decision | None = None  # set by `decide`
    # A client that declared the tasks extension, for a tool that declares `task=`: the adapter
    # answers with a task (`mcp_server.tasks`); a job-backed tool then submits without waiting, and
    # says in `task_view` how its job's result is shown (`QuantumJob.from_job` extras).
    in_task: bool = False
    task_view: dict[str, Any] = field(default_factory=dict)
    # What the receipt binds:
    action: str | None = None
    denial: MacroslowError | None = None
    document_id: str | None = None
    document_digest: str | None = None
    backend_job_id: str | None = None
    attestation: dict[str, Any] | None = None

    # -- what the body needs ------------------------------------------------------------------
    @property
    def caller(self) -> Principal:
        """The identified caller (the adapters identify it before any body runs)."""
        if self.principal is None:
            raise RuntimeError("the call's caller is not identified yet")
        return self.principal

    @property
    def services(self) -> Services:
        """The open services (the adapters attach them before any body runs)."""
        if self._services is None:
            raise RuntimeError("the call has no services attached")
        return self._services

    def attach(self, services: Services) -> None:
        self._services = services

    @property
    def document(self) -> MamlDocument | None:
        """The parsed document the policy checked (for tools that declare one)."""
        return self.decision.document if self.decision is not None else None

    async def decide(
        self, *, document: str | bytes | MamlDocument | None = None, request: Request | None = None
    ) -> Decision:
        """The policy's document and limit checks for this admitted call (`Guard.decide`); a
        document is parsed and its signature checked in the CPU pool."""
        assert self.operation is not None
        decide = functools.partial(
            self.services.guard.decide, self.caller, self.operation, document=document, request=request
        )
        try:
            decision = decide() if document is None else await self.services.cpu(decide)
        except MacroslowError as exc:
            raise self.refuse(exc) from None
        self.decision = decision
        action = self.operation.document_action
        self.action = action.value if action is not None else None
        if decision.document is not None:
            self.note_document(decision.document)
        return decision

    def check_permission(self, action: DocumentAction, document: MamlDocument) -> None:
        """A document's own permissions, for a document the guard could not see (a sealed one)."""
        assert self.operation is not None
        try:
            self.services.guard.policy.check_permission(self.caller, self.operation, action, document)
        except MacroslowError as exc:
            raise self.refuse(exc) from None

    def check_request(self, request: Request) -> None:
        """Limits known only once the input is parsed (a circuit's qubits), refused as the guard would."""
        try:
            self.services.guard.policy.check_limits(request)
        except MacroslowError as exc:
            raise self.refuse(exc) from None

    async def cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the CPU pool (`Services.cpu`): for parsing, signing, verifying, sealing."""
        return await self.services.cpu(fn, *args)

    async def progress(self, done: float, total: float, message: str) -> None:
        if self.ctx is not None:
            await self.ctx.report_progress(done, total, message)

    # -- what the receipt binds ---------------------------------------------------------------
    def note_document(self, document: MamlDocument, *, content: bool = True) -> None:
        """The document the call is about; `content=False` notes only its id (its digest would
        tell something of a content the caller may not see)."""
        self.document_id = document.id
        self.document_digest = digest(document.canonical) if content else None

    def note_job(self, job: Job) -> None:
        from mcp_server.quantum.jobs import attestation

        self.backend_job_id = job.id
        self.attestation = attestation(job)

    def note_backend_request(self, request_id: str | None) -> None:
        """The upstream's id for the request (an LLM provider's request id)."""
        self.backend_job_id = request_id

    # -- refusing -----------------------------------------------------------------------------
    def refuse(self, exc: E) -> E:
        """The policy refused this call: mark the receipt as denied, write one audit line, count the
        denial. Returns `exc`, to raise. Refusing twice with the same error counts once."""
        if self.denial is exc:
            return exc
        self.denial = exc
        metrics.DENIALS.labels(metrics.label(exc.code)).inc()
        entry: dict[str, object] = {"event": "denied", "operation": self.name, "code": exc.code}
        entry["reason"] = exc.message
        if self.principal is not None:
            entry["principal"] = self.principal.describe()
        audit.info(json.dumps(entry, sort_keys=True))
        return exc

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started
