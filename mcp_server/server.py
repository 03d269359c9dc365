"""`build_server(settings)`: the one factory every transport, test and the demo use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer

import resources
import tools
from mcp_server import __version__
from mcp_server.settings import Settings
from mcp_server.state import AppState

INSTRUCTIONS = """\
Tools for MAML documents (Markdown with YAML front matter): validate_maml checks form and safety,
sign_maml signs with a post-quantum ML-DSA key, verify_maml checks a signature and whether its key is
trusted. Errors start with a stable code (invalid_document, request_too_large, signature_invalid,
key_error, not_found, forbidden, ...). Workflows are listed at maml://workflows."""


def build_server(settings: Settings | None = None) -> MCPServer[AppState]:
    settings = settings or Settings()
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        async with state.open() as opened:
            yield opened

    server: MCPServer[AppState] = MCPServer(
        settings.server_name,
        title="macroslow-mcp",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level=_level(settings.log_level),
    )
    tools.register_all(server, state)
    resources.register_all(server, state)
    return server


def _level(name: str) -> Any:
    name = name.upper()
    return name if name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"
