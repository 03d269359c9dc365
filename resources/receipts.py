"""Resource `receipts://{id}`: one receipt rendered as a `.mu` Markdown document."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from mcp.server.mcpserver import MCPServer

from mcp_server.adapters import resource_error
from mcp_server.errors import Forbidden, MacroslowError
from mcp_server.ledger.receipts import render_mu
from mcp_server.state import AppState
from tools.list_receipts import AUDIT_SCOPE, visible_to


def register(server: MCPServer[Any], state: AppState) -> None:
    @server.resource(
        "receipts://{id}",
        name="receipt",
        title="A receipt",
        description="One tool call's receipt as a .mu Markdown document (front matter, History).",
        mime_type="text/markdown",
    )
    async def read_receipt(id: str) -> str:
        try:
            decision = await state.guard("receipts://")
            receipt, leaf = await anyio.to_thread.run_sync(state.ledger.get, id)
            if not visible_to(decision.principal, receipt):
                raise Forbidden(f"this receipt is another caller's; seeing it needs {AUDIT_SCOPE}")
            checkpoint = await anyio.to_thread.run_sync(state.ledger.latest_checkpoint)
        except MacroslowError as exc:
            raise resource_error(exc) from None
        covering = checkpoint.summary() if checkpoint and checkpoint.size > receipt.seq else None
        return render_mu(receipt, leaf_hash=leaf, checkpoint=covering)
