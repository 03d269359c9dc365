"""The shapes callers receive: tool results, tool error results, resource errors.

A tool's success is its pydantic model as `structuredContent` (conforming to the tool's declared
output schema) plus the same JSON as text, for clients that read only text.

A tool's failure is an error result that every client accepts, whatever output schema the tool
declares (the MCP spec requires structured content to conform to it, and the TypeScript SDK and
the MCP Inspector reject a result that does not):

    {"isError": true,
     "content": [{"type": "text", "text": "<code>: <message>\\ndetails: {...}"}],
     "_meta": {"macroslow-mcp/error": {"code": "...", "message": "...", "details": {...}}}}

No `structuredContent`. The text carries everything an agent needs to act (the stable code first,
then the message, then the details as JSON when there are any: `retry_after`, `required_scope`,
`requested`/`allowed`, `field`/`line`); `_meta` carries the same as data for programs.

Every tool result, success or error, also carries the evidence of its receipt once a signed
checkpoint covers it (`with_receipt`):

    "_meta": {"macroslow-mcp/receipt": {"id": "<uuid>", "index": <leaf index>, "tree_size": <n>,
                                         "tlog_proof": "c2sp.org/tlog-proof@v1\n..."}}

`tlog_proof` is the receipt's inclusion proof in that checkpoint, the receipt itself as the proof's
extra data: `macroslow-mcp receipts check-proof` verifies it offline (docs/receipts.md).

A resource read that fails answers with a JSON-RPC error whose `data` is that same dict.

Nothing about the server's filesystem reaches a caller: messages are written without paths, and,
as a last line of defence, anything in an error's message or details that looks like an absolute
path (two or more components) is replaced by `<path>` here (the server's log keeps the original).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ResourceLink, TextContent
from pydantic import BaseModel, ValidationError

from mcp_server.errors import InvalidDocument, MacroslowError

if TYPE_CHECKING:
    from mcp_server.ledger.integrate import Evidence

ERROR_META = "macroslow-mcp/error"
RECEIPT_META = "macroslow-mcp/receipt"
# An absolute POSIX path of at least two components, not part of a URL (`scheme://host/a/b`) or a
# word (`a/b/c`): what must never reach a caller.
_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"`]+/)+[^\s/'\"`,;)]*")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _PATH.sub("<path>", value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def shown(exc: MacroslowError) -> dict[str, Any]:
    """The error as a caller sees it: `{code, message, details?}`, paths scrubbed."""
    data: dict[str, Any] = _scrub(exc.to_dict())
    return data


def ok_result(model: BaseModel) -> CallToolResult:
    """The model as structured content. The text content is the model's own short summary when it
    has one (`describe()`: results that can be large say what they hold and where the rest is),
    else the same JSON; each of its `links()` is a `resource_link` the caller can read."""
    data = model.model_dump(mode="json", by_alias=True)
    describe = getattr(model, "describe", None)
    text = describe() if callable(describe) else json.dumps(data, ensure_ascii=False)
    content: list[Any] = [TextContent(type="text", text=text)]
    links = getattr(model, "links", None)
    for uri, name in links() if callable(links) else []:
        content.append(ResourceLink(type="resource_link", uri=uri, name=name, mime_type="application/json"))
    return CallToolResult(content=content, structured_content=data)


def error_text(error: dict[str, Any]) -> str:
    text = f"{error['code']}: {error['message']}"
    if not error.get("details"):
        return text
    return f"{text}\ndetails: {json.dumps(error['details'], ensure_ascii=False, sort_keys=True, default=str)}"


def error_result(exc: MacroslowError) -> CallToolResult:
    error = shown(exc)
    return CallToolResult(
        content=[TextContent(type="text", text=error_text(error))], is_error=True, _meta={ERROR_META: error}
    )


def with_receipt(result: CallToolResult, evidence: Evidence) -> CallToolResult:
    """`result` with its receipt's evidence in `_meta` (module docstring)."""
    receipt = {
        "id": evidence.receipt.id,
        "index": evidence.receipt.seq,
        "tree_size": evidence.checkpoint.size,
        "tlog_proof": evidence.tlog_proof(),
    }
    return result.model_copy(update={"meta": {**(result.meta or {}), RECEIPT_META: receipt}})


def error_of(result: CallToolResult | dict[str, Any]) -> dict[str, Any] | None:
    """The error a tool result carries (`{"code", "message", "details"?}`), or None."""
    meta = result.get("_meta") if isinstance(result, dict) else result.meta
    error = (meta or {}).get(ERROR_META)
    return dict(error) if isinstance(error, dict) else None


def invalid_arguments(tool: str, exc: ValidationError) -> InvalidDocument:
    """Arguments that do not match the tool's input schema, as `invalid_document` naming each field
    and what is wrong with it (never the value the caller sent)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"'{where}': {error['msg'].lower()}")
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    first = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else None
    return InvalidDocument(f"arguments of {tool} do not match its input schema: {shown}", field=first)


# JSON-RPC error codes for resource reads (the implementation-defined range, -32000 to -32099, plus
# MCP's -32002 "resource not found"); `data` carries the stable code and details.
_RESOURCE_CODES = {
    "not_found": -32002,
    "unauthenticated": -32001,
    "forbidden": -32003,
    "rate_limited": -32029,
    "request_too_large": -32013,
    "invalid_document": -32602,
}


def resource_error(exc: MacroslowError) -> MCPError:
    """A `MacroslowError` as the JSON-RPC error a resource read answers with."""
    error = shown(exc)
    return MCPError(
        code=_RESOURCE_CODES.get(exc.code, -32000), message=f"{error['code']}: {error['message']}", data=error
    )
