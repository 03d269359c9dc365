"""`build_server(settings)`: the one factory every transport, test and the demo use."""

from __future__ import annotations

import base64
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp_types import Icon

import prompts
import resources
import tools
from mcp_server import __version__
from mcp_server.adapters import ResourceRegistry, ToolRegistry, ToolRunner
from mcp_server.admission import Admission, CallerSource
from mcp_server.auth.tokens import SdkTokenVerifier
from mcp_server.completions import Completer
from mcp_server.notify_bus import open_bus
from mcp_server.services import ServiceHost
from mcp_server.settings import Settings
from mcp_server.tasks.extension import TasksExtension
from mcp_server.visibility import ScopeVisibility

INSTRUCTIONS = """\
Tools for MAML documents (Markdown with YAML front matter): validate_maml checks form and safety,
sign_maml signs with a post-quantum ML-DSA key, verify_maml checks a signature and whether its key is
trusted. query_openai asks an OpenAI or Azure OpenAI model (a prompt, or a signed MAML prompt/workflow
document), within a token budget; identical recent requests are answered from a cache. Errors start
with a stable code (invalid_document, request_too_large, signature_invalid,
key_error, not_found, unauthenticated, forbidden, rate_limited with retry_after, ...); forbidden
names the missing scope or document permission. Workflows you may read are at maml://workflows.
Prompts: write_workflow, run_workflow, audit_my_calls."""


TITLE = "MacroSlow MCP"
# serverInfo.icons: a small SVG (a document with a signature tick), as a data: URI so a client needs
# no request to show it.
_ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<rect x="10" y="4" width="44" height="56" rx="6" fill="#1f3b5c"/>'
    '<path d="M19 18h26M19 27h26M19 36h14" stroke="#cfe3f7" stroke-width="4" stroke-linecap="round"/>'
    '<path d="M36 47l5 5 10-12" fill="none" stroke="#5fd39a" stroke-width="5" stroke-linecap="round"/>'
    "</svg>"
)
ICON = Icon(
    src="data:image/svg+xml;base64," + base64.b64encode(_ICON_SVG.encode()).decode("ascii"),
    mime_type="image/svg+xml",
    sizes=["any"],
)


log = logging.getLogger(__name__)


class MacroslowServer(MCPServer[ServiceHost]):
    """The MCP server, with what the HTTP layer needs before the lifespan (`admission`), the host
    that opens and closes the services (`host`) and the tool runner (`runner`)."""

    admission: Admission
    host: ServiceHost
    runner: ToolRunner

    def serve_stdio(self) -> bool:
        """Serve over stdio until the client closes stdin or SIGTERM or SIGINT arrives, then shut
        down (the services close: a final signed checkpoint); True when the shutdown was clean
        (`ServiceHost.closed_cleanly`). Without this, SIGTERM killed the process at once.

        After a signal, a worker thread may still be blocked reading stdin (the client keeps it
        open): it is abandoned, and the caller must end the process without waiting for it
        (`os._exit`; the CLI does)."""
        anyio.run(self._serve_stdio_until_signalled)
        return self.host.closed_cleanly

    async def _serve_stdio_until_signalled(self) -> None:
        from mcp.server.stdio import stdio_server

        async with anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("%s: shutting down", signal.Signals(signum).name)
                        group.cancel_scope.cancel()
                        return

            group.start_soon(stop_on_signal)
            lowlevel = self._lowlevel_server
            async with stdio_server(stdin=_StdinLines()) as (read_stream, write_stream):  # type: ignore[arg-type]
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
            group.cancel_scope.cancel()


class _StdinLines:
    """stdin's lines (UTF-8, undecodable bytes replaced, as the SDK reads them), each read on a
    worker thread that a cancelled read abandons: a read blocks until the client writes or closes
    stdin, and a shutdown on a signal must not wait for that."""

    def __aiter__(self) -> _StdinLines:
        return self

    async def __anext__(self) -> str:
        line: bytes = await anyio.to_thread.run_sync(sys.stdin.buffer.readline, abandon_on_cancel=True)
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


def build_server(
    settings: Settings | None = None, *, caller_source: CallerSource = "local"
) -> MacroslowServer:
    """The server. `caller_source="bearer"` (the HTTP transports with authentication) makes every
    request carry a bearer token verified through the SDK's `TokenVerifier`; with "local" (stdio,
    in-memory clients, HTTP with --no-auth) the caller is MACROSLOW_TOKEN's or the local principal.

    Tools come from `tools/` (each declared with its operation), resources from `resources/`; the
    adapters in `mcp_server.adapters` own every call. Nothing is opened until the lifespan runs."""
    settings = settings or Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    admission = Admission(settings, caller_source)
    # subscriptions/listen; jobs://<id> changes are published on it. On PostgreSQL it reaches every
    # replica (LISTEN/NOTIFY); on SQLite it stays in this process. Started and closed by the host.
    bus = open_bus(settings.database)
    host = ServiceHost(settings, admission.policy, bus=bus)
    auth: dict[str, Any] = {}
    if caller_source == "bearer":
        auth = {
            "auth": AuthSettings(
                issuer_url=_issuer_url(settings),
                resource_server_url=settings.resource_url,  # type: ignore[arg-type]
                validate_token_resource=False,  # TokenAuthority checks `aud` itself
                required_scopes=[],  # per-tool scopes: the policy layer and the HTTP scope gate
            ),
            "token_verifier": SdkTokenVerifier(admission.authority),
        }

    @asynccontextmanager
    async def lifespan(_: MCPServer[ServiceHost]) -> AsyncIterator[ServiceHost]:
        async with host.open() as opened:
            yield opened

    declared = ToolRegistry()
    tools.register_all(declared)
    runner = ToolRunner(admission, host)
    server = MacroslowServer(
        settings.server_name,
        title=TITLE,
        website_url=settings.website_url,
        icons=[ICON],
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=declared.build(runner),
        lifespan=lifespan,
        log_level=_level(settings.log_level),
        middleware=[WarmUp(host), ScopeVisibility(admission)],
        subscriptions=bus,
        extensions=[TasksExtension(admission, host)],
        **auth,
    )
    server.admission = admission
    server.host = host
    server.runner = runner
    resources.register_all(ResourceRegistry(server, admission, host, bus))
    declared_prompts = prompts.PromptRegistry(server, admission, host)
    prompts.register_all(declared_prompts)
    Completer(admission, host, declared_prompts).install(server)
    return server


class WarmUp:
    """`ServerMiddleware`: once the client says `notifications/initialized`, open the services (in
    that notification's own task, so requests go on being answered meanwhile); the handshake itself
    never waits for the database."""

    def __init__(self, host: ServiceHost) -> None:
        self.host = host

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method == "notifications/initialized":
            await self.host.warm_up()
        return result


def _issuer_url(settings: Settings) -> Any:
    """The authorization server named in the protected-resource metadata: the first configured
    issuer that is an http(s) URL, else the local development issuer (which has no endpoints)."""
    for cfg in settings.issuers:
        if cfg.issuer.startswith(("https://", "http://")):
            return cfg.issuer
    return settings.local_issuer


def _level(name: str) -> Any:
    name = name.upper()
    return name if name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"
