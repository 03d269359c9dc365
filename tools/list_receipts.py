"""Tools `list_receipts` and `verify_receipt`: the receipts ledger, as its callers may see it."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio.to_thread
from pydantic import BaseModel, Field

from mcp_server.adapters import ToolRegistry
from mcp_server.calls import Call
from mcp_server.errors import MacroslowError
from mcp_server.policy import access
from mcp_server.views import ReceiptEntry


class ReceiptList(BaseModel):
    receipts: list[ReceiptEntry] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )
    trimmed: bool = Field(
        default=False,
        description="The page was cut short to fit the result budget; next_cursor continues after it.",
    )

    def describe(self) -> str:
        if not self.receipts:
            return "no receipts"
        first, last = self.receipts[0], self.receipts[-1]
        tools = sorted({r.tool for r in self.receipts})
        more = f"; more: pass cursor {self.next_cursor}" if self.next_cursor else "; no more"
        return (
            f"{len(self.receipts)} receipts, newest first, seq {first.seq} ({first.created_at}) to "
            f"{last.seq} ({last.created_at}); tools: {', '.join(tools)}{more}"
        )


def within(receipts: list[ReceiptEntry], next_cursor: str | None, budget: int) -> ReceiptList:
    """The page, cut to the longest prefix whose JSON fits in `budget` bytes (at least one receipt),
    its cursor then continuing after the last one kept."""
    from mcp_server.ledger.store import page_cursor  # SQLAlchemy: not on the start-up import path

    size = 200  # the envelope
    kept: list[ReceiptEntry] = []
    for entry in receipts:
        size += len(entry.model_dump_json()) + 1
        if kept and size > budget:
            return ReceiptList(receipts=kept, next_cursor=page_cursor(kept[-1].seq), trimmed=True)
        kept.append(entry)
    return ReceiptList(receipts=kept, next_cursor=next_cursor)


class ReceiptProof(BaseModel):
    receipt_id: str
    seq: int
    verified: bool = Field(description="The inclusion proof checks against the newest signed checkpoint.")
    tree_size: int
    root: str = Field(description="Root hash of the checkpoint (hex).")
    proof: list[str] = Field(description="RFC 9162 inclusion proof, hex hashes.")
    checkpoint: str = Field(
        description="The signed checkpoint (C2SP signed note), with the witnesses' cosignatures."
    )
    witnessed: bool | None = Field(
        default=None,
        description="With a witness policy configured: whether its quorum cosigned that checkpoint "
        "(cosignatures come seconds after the checkpoint in the default mode). Null without a policy.",
    )
    witness_problem: str | None = Field(default=None, description="Why the quorum is not met, if it is not.")


def register(tools: ToolRegistry) -> None:
    @tools.tool(title="List receipts")
    async def list_receipts(
        call: Call,
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
        try:
            owner, issuer = access.receipt_filter(call.caller, principal)
        except MacroslowError as exc:
            raise call.refuse(exc) from None
        ledger = call.services.ledger
        page = await anyio.to_thread.run_sync(
            lambda: ledger.page(
                principal=owner,
                issuer=issuer,
                tool=tool,
                decision=decision,
                since=since,
                until=until,
                limit=limit,
                cursor=cursor,
            )
        )
        entries = [ReceiptEntry.from_receipt(r, h) for r, h in page.receipts]
        return within(entries, page.next_cursor, call.services.settings.max_result_bytes)

    @tools.tool(title="Prove a receipt is in the log")
    async def verify_receipt(
        call: Call,
        receipt_id: Annotated[str, Field(description="The receipt's id (from list_receipts).")],
    ) -> ReceiptProof:
        """Prove that a receipt is in the tamper-evident log: an RFC 9162 inclusion proof against
        the newest checkpoint signed by the log's ML-DSA-44 key, checked before it is returned, and,
        with a witness policy, whether the policy's quorum of witnesses cosigned that checkpoint."""
        ledger = call.services.ledger
        receipt, _ = await anyio.to_thread.run_sync(ledger.get, receipt_id)
        access.check_receipt(call.caller, receipt, receipt_id)  # another's: as if there were none
        proof = await anyio.to_thread.run_sync(ledger.prove, receipt_id)
        return ReceiptProof(
            receipt_id=receipt.id,
            seq=proof["seq"],
            verified=True,
            tree_size=proof["tree_size"],
            root=proof["root"],
            proof=proof["proof"],
            checkpoint=proof["checkpoint"],
            witnessed=None if ledger.witnesses is None else proof["witnessed"] is None,
            witness_problem=proof["witnessed"],
        )
