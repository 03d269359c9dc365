"""`Policy.guard`: the one place where "may this principal do this" is decided.

Checks, in this order, stopping at the first that fails (each failure is a `MacroslowError` with a
stable code, and is logged as one JSON line on the `mcp_server.audit` logger):

1. the operation is offered: known (deny by default), on the tool allow-list, and not one that signs
   or spends when the server is read-only                                          -> forbidden
2. the caller holds the operation's scope                                          -> forbidden
3. the caller's request rate (token bucket in the database)                        -> rate_limited
4. the document, if any: size cap before parsing, then strict parsing   -> request_too_large / invalid
5. executing: a valid signature by a trusted key (unless configured off), checked before the
   document's own permissions are believed                                       -> signature_invalid
6. the document's `permissions` for the action (read, write, execute) admit the caller -> forbidden
7. limits: qubits, shots and max_tokens, from the request and, when executing, the document's
   `requires`                                                                      -> request_too_large
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import anyio.to_thread

from mcp_server.auth.principal import Principal
from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import BackendUnavailable, Forbidden, MacroslowError, RequestTooLarge, SignatureInvalid
from mcp_server.maml import parser
from mcp_server.maml.model import MamlDocument
from mcp_server.policy.operations import OPERATIONS, DocumentAction, Operation
from mcp_server.policy.permissions import admits
from mcp_server.policy.quota import RateLimiter
from mcp_server.settings import Settings

audit = logging.getLogger("mcp_server.audit")


@dataclass(frozen=True)
class Request:
    """The resource-hungry parts of a call, checked against the configured limits."""

    qubits: int | None = None
    shots: int | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class Decision:
    """An allowed call: who, what, and the parsed document (when one was given)."""

    principal: Principal
    operation: Operation
    document: MamlDocument | None = None
    signer_key_id: str | None = None


def record_denial(principal: Principal | None, operation: str, exc: MacroslowError) -> None:
    """One structured line per denial (the receipts ledger will also record it)."""
    from mcp_server import metrics

    metrics.DENIALS.labels(metrics.label(exc.code)).inc()
    entry: dict[str, object] = {"event": "denied", "operation": operation, "code": exc.code}
    entry["reason"] = exc.message
    if principal is not None:
        entry["principal"] = principal.describe()
    audit.info(json.dumps(entry, sort_keys=True))


class Policy:
    def __init__(
        self,
        settings: Settings,
        limits: parser.Limits,
        keys: KeyStore | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.attach(keys, limiter)
        self.gateway = settings.server_name
        allow = settings.tools
        self.offered: dict[str, Operation] = {
            name: op
            for name, op in OPERATIONS.items()
            if not (settings.read_only and op.changes_or_spends)
            and (allow is None or "://" in name or name in allow)
        }

    def attach(self, keys: KeyStore | None, limiter: RateLimiter | None) -> None:
        """Process resources, opened by the server's lifespan: the trust store and the rate limiter.
        Scope checks (`check`, `visible`) work without them; `guard` does not."""
        self.keys = keys
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        self._limiter_in_thread = limiter is not None and limiter.engine.dialect.name != "sqlite"

    # -- scopes ------------------------------------------------------------------------------
    def check(self, principal: Principal, name: str) -> Operation:
        """Steps 1-2: the operation is offered and the caller holds its scope."""
        op = self.offered.get(name)
        if op is None:
            known = OPERATIONS.get(name)
            read_only = self.settings.read_only and known is not None and known.changes_or_spends
            why = "read-only mode" if read_only else "configuration"
            raise Forbidden(f"{name} is not offered by this server ({why})", operation=name)
        if op.scope not in principal.scopes:
            raise Forbidden(
                f"{name} needs the scope '{op.scope}', which your token does not grant",
                operation=name,
                required_scope=op.scope,
            )
        return op

    def visible(self, principal: Principal, name: str) -> bool:
        op = self.offered.get(name)
        return op is not None and op.scope in principal.scopes

    def may(self, principal: Principal, action: DocumentAction, document: MamlDocument) -> bool:
        """Whether the document's own permissions for `action` admit the caller (`write` implies `read`)."""
        entries = document.front_matter.permissions.effective(action.value)
        return admits(entries, principal, self.gateway)

    # -- the guard ---------------------------------------------------------------------------
    async def guard(
        self,
        principal: Principal,
        name: str,
        *,
        document: str | bytes | MamlDocument | None = None,
        request: Request | None = None,
    ) -> Decision:
        """Allow the call or raise; see the module docstring for the order of checks."""
        try:
            return await self._guard(principal, name, document, request or Request())
        except MacroslowError as exc:
            record_denial(principal, name, exc)
            raise

    async def _guard(
        self, principal: Principal, name: str, document: str | bytes | MamlDocument | None, request: Request
    ) -> Decision:
        op = self.check(principal, name)
        if self.keys is None:
            raise BackendUnavailable("the server is starting or stopping; try again")
        if self.limiter is not None:
            key = f"{principal.issuer} {principal.sub}"
            if self._limiter_in_thread:
                await anyio.to_thread.run_sync(self.limiter.take, key)
            else:
                self.limiter.take(key)  # one local SQLite statement (~0.2 ms); no thread hop
        parsed = document if isinstance(document, MamlDocument) or document is None else None
        if parsed is None and document is not None:
            parsed = parser.parse(document, self.limits)  # type: ignore[arg-type]
        signer = None
        if parsed is not None and op.document_action is not None:
            if op.document_action is DocumentAction.execute and self.settings.require_signed_execution:
                signer = self._trusted_signer(parsed)
            if not self.may(principal, op.document_action, parsed):
                raise Forbidden(
                    f"the document's permissions.{op.document_action.value} do not admit {principal.uri}",
                    operation=name,
                    document_id=parsed.id,
                    permission=op.document_action.value,
                )
        # A document's `requires` limits what running it takes, so they count when executing it.
        executing = op.document_action is DocumentAction.execute
        self._check_limits(request, parsed if executing else None)
        return Decision(principal, op, parsed, signer)

    def check_request(self, principal: Principal, name: str, request: Request) -> None:
        """Step 7 again, for what is only known once the input is parsed (a circuit's qubits)."""
        try:
            self._check_limits(request, None)
        except MacroslowError as exc:
            record_denial(principal, name, exc)
            raise

    def _trusted_signer(self, document: MamlDocument) -> str:
        from mcp_server.signing import verify_signature

        if document.front_matter.signature is None:
            raise SignatureInvalid("executing a workflow needs a signature by a trusted key; sign it first")
        assert self.keys is not None
        kid, _ = verify_signature(document, self.keys)
        if not self.keys.trust.contains(kid):
            raise SignatureInvalid(f"the workflow is signed by key {kid}, which this server does not trust")
        return kid

    def _check_limits(self, request: Request, document: MamlDocument | None) -> None:
        requires = document.front_matter.requires if document is not None else None
        caps = (
            ("qubits", self.settings.max_qubits),
            ("shots", self.settings.max_shots),
            ("max_tokens", self.settings.max_tokens),
        )
        for field, cap in caps:
            for source, value in (
                ("request", getattr(request, field)),
                ("document requires", getattr(requires, field, None)),
            ):
                if value is not None and value > cap:
                    raise RequestTooLarge(
                        f"{source}: {field} over this server's limit", requested=value, allowed=cap
                    )
