"""MCP tool adapters: one module per tool, each declaring its tool with `register(tools)`.

Every module in this package is a tool: `register_all` finds them (no list to keep), in name order.
A tool's name must have an operation in `mcp_server/policy/operations.py`; the adapter
(`mcp_server.adapters.tools`) guards, validates, receipts and shapes every call.
"""

from __future__ import annotations

from types import ModuleType

from mcp_server.adapters import ToolRegistry
from mcp_server.adapters.discovery import modules_of

MODULES: tuple[ModuleType, ...] = modules_of(__name__, __path__)


def register_all(tools: ToolRegistry) -> None:
    for module in MODULES:
        module.register(tools)
