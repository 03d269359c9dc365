"""The seam between MCP tool functions and `mcp_server`: results and errors in one shape.

`tool_adapter` wraps a tool function that returns a pydantic model: the model becomes the tool's
structured output (and output schema); a `MacroslowError` becomes an error result whose text starts
with the stable code and whose structured content is `{"error": {"code", "message", "details"}}`.
Anything else is left to the SDK, which reports a generic failure and keeps the details in the log.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, ParamSpec, TypeVar

from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from mcp_server.errors import MacroslowError

log = logging.getLogger("mcp_server.tools")

P = ParamSpec("P")
M = TypeVar("M", bound=BaseModel)


def error_result(exc: MacroslowError) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=str(exc))],
        structured_content={"error": exc.to_dict()},
        is_error=True,
    )


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
    log.info("resource read refused: %s", exc.code)
    return MCPError(code=_RESOURCE_CODES.get(exc.code, -32000), message=str(exc), data=exc.to_dict())


def ok_result(model: BaseModel) -> CallToolResult:
    data = model.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data, ensure_ascii=False))],
        structured_content=data,
    )


def tool_adapter(fn: Callable[P, Awaitable[M]]) -> Callable[P, Awaitable[CallToolResult]]:
    signature = inspect.signature(fn, eval_str=True)
    model = signature.return_annotation

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> CallToolResult:
        try:
            return ok_result(await fn(*args, **kwargs))
        except MacroslowError as exc:
            log.info("tool %s refused: %s", fn.__name__, exc.code)
            return error_result(exc)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=Annotated[CallToolResult, model]
    )
    wrapper.__annotations__ = {**fn.__annotations__, "return": Annotated[CallToolResult, model]}
    return wrapper
