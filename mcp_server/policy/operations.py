"""What each tool and resource family needs: its scope, the document permission it uses, and
whether it signs or spends (such operations are off in read-only mode).

Deny by default: an operation missing from this table is neither listed nor allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DocumentAction(StrEnum):
    read = "read"
    write = "write"
    execute = "execute"


@dataclass(frozen=True)
class Operation:
    name: str
    scope: str
    document_action: DocumentAction | None = None
    changes_or_spends: bool = False


_OPERATIONS = (
    Operation("validate_maml", "maml:read"),
    Operation("verify_maml", "maml:read"),
    Operation("sign_maml", "maml:sign", DocumentAction.write, changes_or_spends=True),
    # Sealing shares a document, so only a caller who may read it may seal it; opening checks the
    # opened document's permissions.read in the tool itself (the guard cannot see inside the seal).
    Operation("encrypt_maml", "maml:encrypt", DocumentAction.read),
    Operation("decrypt_maml", "maml:decrypt", DocumentAction.read),
    Operation("maml://workflows", "maml:read", DocumentAction.read),
    Operation("run_quantum_circuit", "quantum:run", DocumentAction.execute, changes_or_spends=True),
    Operation("cancel_job", "quantum:run", changes_or_spends=True),
    Operation("jobs://", "quantum:read"),
    Operation("query_openai", "openai:query", DocumentAction.execute, changes_or_spends=True),
    Operation("list_receipts", "receipts:read"),
    Operation("verify_receipt", "receipts:read"),
    Operation("receipts://", "receipts:read"),
)
OPERATIONS: dict[str, Operation] = {op.name: op for op in _OPERATIONS}


def operation_for_uri(uri: str) -> Operation | None:
    """The resource family a URI belongs to (`maml://workflows/x` -> `maml://workflows`)."""
    for name, op in OPERATIONS.items():
        prefix = name if name.endswith("/") else name + "/"
        if "://" in name and (uri == name or uri.startswith(prefix)):
            return op
    return None
