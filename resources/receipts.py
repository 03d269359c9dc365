"""Resource `receipts://{id}`: one receipt rendered as a `.mu` Markdown document."""

from __future__ import annotations

import anyio.to_thread

from mcp_server.adapters import ResourceRegistry
from mcp_server.calls import Call
from mcp_server.ledger.receipts import render_mu
from mcp_server.policy import access


def register(resources: ResourceRegistry) -> None:
    @resources.resource(
        "receipts://{id}",
        operation="receipts://",
        name="receipt",
        title="A receipt",
        description="One tool call's receipt as a .mu Markdown document (front matter, History).",
        mime_type="text/markdown",
    )
    async def read_receipt(call: Call, id: str) -> str:
        ledger = call.services.ledger
        receipt, leaf = await anyio.to_thread.run_sync(ledger.get, id)
        access.check_receipt(call.caller, receipt, id)  # another's: as if there were none
        checkpoint = await anyio.to_thread.run_sync(ledger.latest_checkpoint)
        covering = checkpoint.summary() if checkpoint and checkpoint.size > receipt.seq else None
        return render_mu(receipt, leaf_hash=leaf, checkpoint=covering)
