"""Prompt `audit_my_calls`: list your recent calls' receipts and prove them in the log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from mcp_types import PromptMessage, TextContent

from prompts._registry import Argument, Ask, BadArgument, PromptRegistry

_RELATIVE = re.compile(r"^(\d{1,5})\s*([hd])$", re.IGNORECASE)  # "24h", "7d"


def parse_since(value: str, now: datetime | None = None) -> str:
    """`since` as the ledger stores times (UTC, ISO 8601 with microseconds and Z), so that
    list_receipts compares like with like: an ISO 8601 date or time (a time without an offset is
    UTC), or `<n>h` / `<n>d` for that many hours or days ago."""
    now = now or datetime.now(UTC)
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative[1]), relative[2].lower()
        moment = now - (timedelta(hours=amount) if unit == "h" else timedelta(days=amount))
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise BadArgument(
                "since",
                "expected an ISO 8601 date or time (2026-07-01, 2026-07-01T09:30:00Z) or a span "
                "such as 24h or 7d",
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def register(prompts: PromptRegistry) -> None:
    @prompts.prompt(
        title="Audit my recent calls",
        arguments=[
            Argument(
                "since",
                "Only calls from this time on: an ISO 8601 date or time (2026-07-01, "
                "2026-07-01T09:30:00Z) or a span such as 24h or 7d; omit for your latest calls.",
            )
        ],
        needs=("list_receipts", "verify_receipt"),
    )
    async def audit_my_calls(ask: Ask, since: str | None = None) -> list[PromptMessage]:
        """Review the receipts of your recent tool calls (who called what, allowed or denied, the
        outcome) with list_receipts, and prove each is in the signed log with verify_receipt."""
        window = "my latest calls"
        listing = "call list_receipts with `limit` 50"
        if since is not None:
            start = parse_since(since)
            window = f"my calls since {start}"
            listing = f'call list_receipts with `since` = "{start}" and `limit` 50'
        text = f"""\
Audit {window} on this server, from its receipts.

1. {listing}. Receipts come newest first; while the result has a `next_cursor`, call list_receipts
   again with the same arguments and `cursor` = that value. Unless my token has the scope
   receipts:audit, these are only my own receipts.
2. For each receipt, call verify_receipt with `receipt_id` = its `id`. It proves the receipt is in
   the server's append-only log: `verified` true, the `tree_size` and `root` of the signed
   checkpoint, and, when the server has witnesses, whether they cosigned it (`witnessed`). A receipt
   not covered by a checkpoint yet answers not_found: try it again a few seconds later.
3. Report: how many calls, per tool; every call with `decision` "denied" or an `outcome` other than
   "ok", with its `reason`; and every receipt that did not verify. The full record of one receipt is
   the resource receipts://<id>.

Receipts hold digests of documents, arguments and results, not their content: do not guess what
they contained. These audit calls leave receipts too."""
        return [PromptMessage(role="user", content=TextContent(type="text", text=text))]
