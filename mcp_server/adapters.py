"""The seam between MCP tool functions and `mcp_server`: results and errors in one shape.

`tool_adapter(state)` wraps a tool function that returns a pydantic model: the model becomes the
tool's structured output (and output schema); a `MacroslowError` becomes an error result whose text
starts with the stable code and whose structured content is `{"error": {"code", "message", "details"}}`.
Anything else is left to the SDK, which reports a generic failure and keeps the details in the log.
Each call leaves one receipt in the ledger (`AppState.record_call`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from mcp_server import metrics
from mcp_server.calls import CallRecord, current_call
from mcp_server.errors import BackendUnavailable, MacroslowError
from mcp_server.logs import request_id

if TYPE_CHECKING:
    from mcp_server.state import AppState

log = logging.getLogger("mcp_server.tools")
calls_log = logging.getLogger("mcp_server.calls")

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


def tool_adapter(
    state: AppState,
) -> Callable[[Callable[P, Awaitable[M]]], Callable[P, Awaitable[CallToolResult]]]:
    """Wrap a tool function: its result or `MacroslowError` becomes the tool result, and every call
    (allowed, denied or failed) leaves exactly one receipt. If the receipt cannot be written, the
    call's result is withheld and the caller gets `backend_unavailable` instead."""

    def decorate(fn: Callable[P, Awaitable[M]]) -> Callable[P, Awaitable[CallToolResult]]:
        signature = inspect.signature(fn, eval_str=True)
        model = signature.return_annotation

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> CallToolResult:
            # The request context the SDK injects is not an argument (and is no JSON to digest).
            arguments = {k: v for k, v in kwargs.items() if not isinstance(v, Context)}
            record = CallRecord(fn.__name__, arguments)
            token = current_call.set(record)
            error: MacroslowError | None = None
            try:
                result = ok_result(await fn(*args, **kwargs))
            except MacroslowError as exc:
                log.info("tool %s refused: %s", fn.__name__, exc.code)
                error, result = exc, error_result(exc)
            except Exception:
                await _receipt_or_log(state, record, None, None, internal=True)
                _observe(record, "internal_error")
                raise
            finally:
                current_call.reset(token)
            try:
                await state.record_call(record, result, error)
            except MacroslowError as exc:
                log.error("tool %s: receipt not written (%s); result withheld", fn.__name__, exc.code)
                _observe(record, BackendUnavailable.code)
                return error_result(
                    BackendUnavailable(
                        "the receipt for this call could not be written, so its result is withheld; "
                        "try again shortly"
                    )
                )
            _observe(record, error.code if error is not None else "ok")
            return result

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            return_annotation=Annotated[CallToolResult, model]
        )
        wrapper.__annotations__ = {**fn.__annotations__, "return": Annotated[CallToolResult, model]}
        return wrapper

    return decorate


def _observe(record: CallRecord, outcome: str) -> None:
    """Metrics and one structured log line per call: who, which tool, outcome, duration; never
    arguments, documents or tokens."""
    seconds = time.perf_counter() - record.started
    tool = metrics.label(record.tool)
    metrics.TOOL_CALLS.labels(tool, metrics.label(outcome)).inc()
    metrics.TOOL_LATENCY.labels(tool).observe(seconds)
    principal = record.principal
    calls_log.info(
        "tool %s: %s",
        record.tool,
        outcome,
        extra={
            "request_id": request_id.get(),
            "sub": principal.sub if principal is not None else None,
            "tool": record.tool,
            "outcome": outcome,
            "duration_ms": round(seconds * 1000, 3),
        },
    )


async def _receipt_or_log(
    state: AppState,
    record: CallRecord,
    result: CallToolResult | None,
    error: MacroslowError | None,
    *,
    internal: bool,
) -> None:
    try:
        await state.record_call(record, result, error, internal=internal)
    except MacroslowError as exc:
        log.error("tool %s: receipt not written (%s)", record.tool, exc.code)
