"""The one place where "may this principal do this" is decided.

Two objects, because the HTTP layer must judge scopes before the server's lifespan opens anything:

- `Policy` (built with the settings): which operations are offered, scopes, a document's own
  permissions, the request limits. Pure: no database, no keys.
- `Guard` (built by the lifespan from a `Policy`, the trust store and the rate limiter): the whole
  decision for one call.

Checks, in this order, stopping at the first that fails (each failure is a `MacroslowError` with a
stable code; the caller's `Call` record turns it into the receipt, the audit line and the metric):

`Guard.admit` (before the call's arguments are even validated):
1. the operation is offered: known (deny by default), on the tool allow-list, and not one that signs,
   spends or changes when the server is read-only                                 -> forbidden
2. the caller holds the operation's scope                                          -> forbidden
3. the caller's request rate (token bucket in memory, shared through the database) -> rate_limited
`Guard.decide` (with the validated arguments):
4. the document, if any: size cap before parsing, then strict parsing   -> request_too_large / invalid
5. executing: a valid signature by a trusted key (unless configured off), checked before the
   document's own permissions are believed                                       -> signature_invalid
6. the document's `permissions` for the action (read, write, execute) admit the caller -> forbidden
7. limits: qubits, shots and max_tokens, from the request and, when executing, the document's
   `requires`                                                                      -> request_too_large
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp_server.auth.principal import Principal
from mcp_server.crypto.keys import KeyStore
from mcp_server.errors import Forbidden, RequestTooLarge, SignatureInvalid
from mcp_server.maml import parser
from mcp_server.maml.model import MamlDocument
from mcp_server.policy.operations import OPERATIONS, DocumentAction, Operation, is_resource_family
from mcp_server.policy.permissions import admits
from mcp_server.settings import Settings

if TYPE_CHECKING:
    from mcp_server.policy.quota import RateLimiter


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


class Policy:
    """What is offered, who holds which scope, what a document admits, and the request limits."""

    def __init__(self, settings: Settings, limits: parser.Limits) -> None:
        self.settings = settings
        self.limits = limits
        self.gateway = settings.server_name
        allow = settings.tools
        self.offered: dict[str, Operation] = {
            name: op
            for name, op in OPERATIONS.items()
            if not (settings.read_only and op.changes_or_spends)
            and (allow is None or is_resource_family(name) or name in allow)
        }

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

    def check_permission(
        self, principal: Principal, op: Operation, action: DocumentAction, document: MamlDocument
    ) -> None:
        """Step 6: `Forbidden` unless the document's permissions for `action` admit the caller."""
        if not self.may(principal, action, document):
            raise Forbidden(
                f"the document's permissions.{action.value} do not admit {principal.uri}",
                operation=op.name,
                document_id=document.id,
                permission=action.value,
            )

    def check_limits(self, request: Request, document: MamlDocument | None = None) -> None:
        """Step 7: the request (and, when executing, the document's `requires`) within the limits."""
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


class Guard:
    """The policy with what it needs from the open server: the trust store and the rate limiter."""

    def __init__(self, policy: Policy, keys: KeyStore, limiter: RateLimiter | None = None) -> None:
        self.policy = policy
        self.keys = keys
        self.limiter = limiter if limiter is not None and limiter.enabled else None

    async def admit(self, principal: Principal, name: str) -> Operation:
        """Steps 1-3: offered, scope, rate."""
        op = self.policy.check(principal, name)
        if self.limiter is not None:
            # In memory (no database access on the call path), so no thread hop.
            self.limiter.take(f"{principal.issuer} {principal.sub}")
        return op

    def decide(
        self,
        principal: Principal,
        op: Operation,
        *,
        document: str | bytes | MamlDocument | None = None,
        request: Request | None = None,
    ) -> Decision:
        """Steps 4-7, for an admitted call."""
        parsed = document if isinstance(document, MamlDocument) or document is None else None
        if parsed is None and document is not None:
            parsed = parser.parse(document, self.policy.limits)  # type: ignore[arg-type]
        signer = None
        if parsed is not None and op.document_action is not None:
            if op.document_action is DocumentAction.execute and self.policy.settings.require_signed_execution:
                signer = self._trusted_signer(parsed)
            self.policy.check_permission(principal, op, op.document_action, parsed)
        # A document's `requires` limits what running it takes, so they count when executing it.
        executing = op.document_action is DocumentAction.execute
        self.policy.check_limits(request or Request(), parsed if executing else None)
        return Decision(principal, op, parsed, signer)

    async def guard(
        self,
        principal: Principal,
        name: str,
        *,
        document: str | bytes | MamlDocument | None = None,
        request: Request | None = None,
    ) -> Decision:
        """Steps 1-7 at once (see the module docstring)."""
        op = await self.admit(principal, name)
        return self.decide(principal, op, document=document, request=request)

    def _trusted_signer(self, document: MamlDocument) -> str:
        from mcp_server.signing import verify_signature

        if document.front_matter.signature is None:
            raise SignatureInvalid("executing a workflow needs a signature by a trusted key; sign it first")
        kid, _ = verify_signature(document, self.keys)
        if not self.keys.trust.contains(kid):
            raise SignatureInvalid(f"the workflow is signed by key {kid}, which this server does not trust")
        return kid
