"""MCP tool adapters: one module per tool, each declaring its tool with `register(tools)`.

A tool's name must have an operation in `mcp_server/policy/operations.py`; the adapter
(`mcp_server.adapters.tools`) guards, validates, receipts and shapes every call.
"""

from __future__ import annotations

from mcp_server.adapters import ToolRegistry
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


def register_all(tools: ToolRegistry) -> None:
    for module in MODULES:
        module.register(tools)
