"""MCP resource adapters: one module per resource family, each declaring its resources with
`register(resources)`; every module in this package is found by `register_all`, in name order. The
adapter (`mcp_server.adapters.resources`) admits every read and maps its errors."""

from __future__ import annotations

from types import ModuleType

from mcp_server.adapters import ResourceRegistry
from mcp_server.adapters.discovery import modules_of

MODULES: tuple[ModuleType, ...] = modules_of(__name__, __path__)


def register_all(resources: ResourceRegistry) -> None:
    for module in MODULES:
        module.register(resources)
