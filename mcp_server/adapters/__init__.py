"""The seam between MCP and `mcp_server`: the adapters own every call.

    tools/<tool>.py        declares: ToolRegistry.tool(title, document=..., limits=...) + its body
    resources/<family>.py  declares: ResourceRegistry.resource(uri, operation=...) + its reader
            |
    adapters.tools         ToolRunner: identify -> Guard.admit -> validate arguments -> Call.decide
                           -> body -> result or error result -> one receipt -> metrics + log line
    adapters.resources     identify -> Guard.admit -> reader -> JSON-RPC error on failure
    adapters.results       the shapes: ok_result, error_result (no structuredContent; code,
                           message, details in the text and in _meta), resource_error
            |
    calls.Call             the per-call record the body and the services note things on
    services.Services      what the lifespan opened (keys, ledger, guard, jobs, llm, workflows)

Nothing in `tools/` or `resources/` guards, writes receipts, audit lines or metrics by hand.
"""

from mcp_server.adapters.resources import ResourceRegistry
from mcp_server.adapters.results import ERROR_META, error_of, error_result, ok_result, resource_error
from mcp_server.adapters.tools import ToolRegistry, ToolRunner, UndeclaredTool

__all__ = [
    "ERROR_META",
    "ResourceRegistry",
    "ToolRegistry",
    "ToolRunner",
    "UndeclaredTool",
    "error_of",
    "error_result",
    "ok_result",
    "resource_error",
]
