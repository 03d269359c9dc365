"""MCP resource adapters: one module per resource family, each with `register(server, state)`."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from mcp_server.state import AppState
from resources import jobs, receipts, workflows

MODULES = (workflows, receipts, jobs)


def register_all(server: MCPServer[Any], state: AppState) -> None:
    for module in MODULES:
        module.register(server, state)
