"""Tools `list_receipts` and `verify_receipt`: the receipts ledger, as its callers may see it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_server.adapters import tool_adapter
from mcp_server.auth.principal import Principal
from mcp_server.errors import Forbidden
from mcp_server.ledger.receipts import Receipt
from mcp_server.state import AppState

AUDIT_SCOPE = "receipts:audit"


class ReceiptEntry(BaseModel):
    id: str
    uri: str = Field(description="receipts://<id>: the receipt as a .mu Markdown document.")
    seq: int = Field(description="Its place (leaf index) in the Merkle log.")
    created_at: str
    principal: str
    tool: str
    action: str | None
    decision: Literal["allowed", "denied"] | str
    outcome: str
    reason: str | None
    document_id: str | None
    document_digest: str | None
    arguments_digest: str | None
    result_digest: str | None
    backend_job_id: str | None
    attestation: str | None = Field(
        default=None, description="What a backend run attests (canonical JSON), e.g. a quantum job's."
    )
    duration_ms: float
    leaf_hash: str


class ReceiptList(BaseModel):
    receipts: list[ReceiptEntry] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )


class ReceiptProof(BaseModel):
    receipt_id: str
    seq: int
    verified: bool = Field(description="The inclusion proof checks against the newest signed checkpoint.")
    tree_size: int
    root: str = Field(description="Root hash of the checkpoint (hex).")
    proof: list[str] = Field(description="RFC 9162 inclusion proof, hex hashes.")
    checkpoint: str = Field(description="The signed checkpoint (C2SP signed note).")


def entry(receipt: Receipt, leaf_hash: bytes) -> ReceiptEntry:
    data = receipt.__dict__
    return ReceiptEntry(
        **{k: v for k, v in data.items() if k in ReceiptEntry.model_fields},
        uri=f"receipts://{receipt.id}",
        duration_ms=receipt.duration_us / 1000,
        leaf_hash=leaf_hash.hex(),
    )


def visible_to(principal: Principal, receipt: Receipt) -> bool:
    if AUDIT_SCOPE in principal.scopes:
        return True
    return receipt.principal == principal.uri and receipt.issuer == principal.issuer


def register(server: MCPServer[Any], state: AppState) -> None:
    @tool_adapter(state)
    async def list_receipts(
        principal: Annotated[
            str | None,
            Field(description="Only this caller's receipts (agent://<sub>); needs receipts:audit."),
        ] = None,
        tool: Annotated[str | None, Field(description="Only calls of this tool.")] = None,
        decision: Annotated[Literal["allowed", "denied"] | None, Field(description="Only these.")] = None,
        since: Annotated[str | None, Field(description="ISO 8601 UTC time, inclusive.")] = None,
        until: Annotated[str | None, Field(description="ISO 8601 UTC time, exclusive.")] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="Receipts per page.")] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page.")] = None,
    ) -> ReceiptList:
        """List receipts of tool calls, newest first: who called what, allowed or denied, with which
        outcome, and digests of document, arguments and result (not their content). Callers without
        the scope receipts:audit see only their own receipts. Pages are stable while calls go on."""
        decided = await state.guard("list_receipts")
        caller = decided.principal
        issuer = None
        if AUDIT_SCOPE not in caller.scopes:
            if principal is not None and principal != caller.uri:
                raise Forbidden(
                    f"seeing other callers' receipts needs the scope {AUDIT_SCOPE}",
                    required_scope=AUDIT_SCOPE,
                )
            principal, issuer = caller.uri, caller.issuer
        page = await anyio.to_thread.run_sync(
            lambda: state.ledger.page(
                principal=principal,
                issuer=issuer,
                tool=tool,
                decision=decision,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        )
        return ReceiptList(receipts=[entry(r, h) for r, h in page.receipts], next_cursor=page.next_cursor)

    @tool_adapter(state)
    async def verify_receipt(
        receipt_id: Annotated[str, Field(description="The receipt's id (from list_receipts).")],
    ) -> ReceiptProof:
        """Prove that a receipt is in the tamper-evident log: an RFC 9162 inclusion proof against
        the newest checkpoint signed by this server's ML-DSA key, checked before it is returned.
        A receipt newer than the newest checkpoint is not_found until the next one (seconds)."""
        decided = await state.guard("verify_receipt")
        receipt, _ = await anyio.to_thread.run_sync(state.ledger.get, receipt_id)
        if not visible_to(decided.principal, receipt):
            raise Forbidden(
                f"this receipt is another caller's; seeing it needs the scope {AUDIT_SCOPE}",
                required_scope=AUDIT_SCOPE,
            )
        proof = await anyio.to_thread.run_sync(state.ledger.prove, receipt_id)
        return ReceiptProof(
            receipt_id=receipt.id,
            seq=proof["seq"],
            verified=True,
            tree_size=proof["tree_size"],
            root=proof["root"],
            proof=proof["proof"],
            checkpoint=proof["checkpoint"],
        )

    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
    server.add_tool(list_receipts, title="List receipts", annotations=read_only)
    server.add_tool(verify_receipt, title="Prove a receipt is in the log", annotations=read_only)
