"""MCP resource adapters: one module per resource family, each declaring its resources with
`register(resources)`; the adapter (`mcp_server.adapters.resources`) admits every read and maps
its errors."""

from __future__ import annotations

from mcp_server.adapters import ResourceRegistry
from resources import jobs, receipts, workflows

MODULES = (workflows, receipts, jobs)


def register_all(resources: ResourceRegistry) -> None:
    for module in MODULES:
        module.register(resources)
