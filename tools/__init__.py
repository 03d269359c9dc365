"""MCP tool adapters: one module per tool, each with `register(server, state)`."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from mcp_server.state import AppState
from tools import (
    cancel_job,
    decrypt_maml,
    encrypt_maml,
    list_receipts,
    query_openai,
    run_quantum_circuit,
    sign_maml,
    validate_maml,
    verify_maml,
)

MODULES = (
    validate_maml,
    sign_maml,
    verify_maml,
    list_receipts,
    run_quantum_circuit,
    cancel_job,
    query_openai,
    encrypt_maml,
    decrypt_maml,
)


def register_all(server: MCPServer[Any], state: AppState) -> None:
    for module in MODULES:
        module.register(server, state)
