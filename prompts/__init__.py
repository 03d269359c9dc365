"""MCP prompts: one module per prompt, each declaring its prompt with `register(prompts)`; every
module in this package is found by `register_all`, in name order (modules starting with `_` are
helpers, not prompts). The adapter (`prompts._registry.PromptRegistry`) checks every `prompts/get`
and maps its errors to JSON-RPC errors; `mcp_server.completions` completes the arguments."""

from __future__ import annotations

from types import ModuleType

from mcp_server.adapters.discovery import modules_of
from prompts._registry import Argument, Ask, BadArgument, PromptRegistry

__all__ = ["MODULES", "Argument", "Ask", "BadArgument", "PromptRegistry", "register_all"]

MODULES: tuple[ModuleType, ...] = modules_of(__name__, __path__)


def register_all(prompts: PromptRegistry) -> None:
    for module in MODULES:
        module.register(prompts)
