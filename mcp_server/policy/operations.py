"""What each tool and resource family is: its scope, the document permission it uses, and what it
does to the world (signs with the server's key, spends a budget or money, changes shared state).

This table is the one declaration a tool has. A tool is registered under the name of its entry
(`mcp_server.adapters.tools.ToolRegistry` refuses a tool without one, at start-up), the policy guard
reads the scope and document action from it, read-only mode turns off every operation that signs,
spends or changes, and the tool's MCP annotations (`readOnlyHint`, `destructiveHint`, ...) are
derived from it, so what a host is told can never disagree with what the policy enforces.

Deny by default: an operation missing from this table is neither listed nor allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from mcp_server.policy.access import AUDIT_SCOPE

if TYPE_CHECKING:
    from mcp_types import ToolAnnotations


class DocumentAction(StrEnum):
    read = "read"
    write = "write"
    execute = "execute"


@dataclass(frozen=True)
class Operation:
    name: str
    scope: str
    document_action: DocumentAction | None = None
    signs: bool = False  # uses the server's signing key on the caller's behalf
    spends: bool = False  # consumes a budget, compute or money (simulator time, LLM tokens, QPU)
    changes: bool = False  # changes state other calls can see (e.g. stops a job)
    destructive: bool = False  # what it changes cannot be undone
    idempotent: bool = False  # calling it again with the same arguments has no further effect
    open_world: bool = False  # may reach a service outside this server (Azure, OpenAI)

    @property
    def changes_or_spends(self) -> bool:
        """Off in read-only mode; a host should ask its user before such a call."""
        return self.signs or self.spends or self.changes

    def annotations(self) -> ToolAnnotations:
        """The MCP tool annotations, derived from what the operation does."""
        from mcp_types import ToolAnnotations

        read_only = not self.changes_or_spends
        return ToolAnnotations(
            read_only_hint=read_only,
            destructive_hint=None if read_only else self.destructive,
            idempotent_hint=self.idempotent,
            open_world_hint=self.open_world,
        )


_OPERATIONS = (
    # -- tools ------------------------------------------------------------------------------------
    Operation("validate_maml", "maml:read", idempotent=True),
    Operation("verify_maml", "maml:read", idempotent=True),
    Operation("sign_maml", "maml:sign", DocumentAction.write, signs=True),
    # Sealing shares a document, so only a caller who may read it may seal it; opening checks the
    # opened document's permissions.read in the tool (the guard cannot see inside the seal).
    Operation("encrypt_maml", "maml:encrypt", DocumentAction.read),
    Operation("decrypt_maml", "maml:decrypt", DocumentAction.read, idempotent=True),
    Operation("run_quantum_circuit", "quantum:run", DocumentAction.execute, spends=True, open_world=True),
    Operation("cancel_job", "quantum:run", changes=True, destructive=True, idempotent=True, open_world=True),
    Operation("query_openai", "openai:query", DocumentAction.execute, spends=True, open_world=True),
    Operation("list_receipts", "receipts:read", idempotent=True),
    Operation("verify_receipt", "receipts:read", idempotent=True),
    # -- resource families ------------------------------------------------------------------------
    Operation("maml://workflows", "maml:read", DocumentAction.read),
    Operation("jobs://", "quantum:read"),
    Operation("receipts://", "receipts:read"),
)
OPERATIONS: dict[str, Operation] = {op.name: op for op in _OPERATIONS}
# Every scope a caller can be granted: the operations' scopes, and the audit scope (see everyone's
# receipts and jobs, `policy.access`).
ALL_SCOPES: tuple[str, ...] = (*dict.fromkeys(op.scope for op in _OPERATIONS), AUDIT_SCOPE)


def is_resource_family(name: str) -> bool:
    return "://" in name


def operation_for_uri(uri: str) -> Operation | None:
    """The resource family a URI belongs to (`maml://workflows/x` -> `maml://workflows`)."""
    for name, op in OPERATIONS.items():
        prefix = name if name.endswith("/") else name + "/"
        if is_resource_family(name) and (uri == name or uri.startswith(prefix)):
            return op
    return None
