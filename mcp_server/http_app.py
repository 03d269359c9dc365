"""The HTTP transports (Streamable HTTP at /mcp, SSE at /sse + /messages/) as one ASGI app.

The SDK's app does the bearer authentication (401 with `WWW-Authenticate` and `resource_metadata`,
RFC 9728 metadata at `/.well-known/oauth-protected-resource/...`) and DNS-rebinding protection.
In front of it, `ScopeGate`:

- refuses a request body over `max_request_bytes` with 413 before reading or parsing it
  (by `Content-Length`, or by counting a streamed body);
- for `tools/call` and `resources/read` with a valid bearer token that lacks the operation's scope,
  answers 403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="<scope>"`, so a client
  can ask its authorization server for that scope (step-up). The decision is `Policy.check`, the same
  one the tool's guard makes again; requests it cannot judge (no or bad token, unknown tool, not
  JSON) go on to the SDK, which answers them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import uvicorn
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.errors import Forbidden, MacroslowError
from mcp_server.policy.operations import operation_for_uri
from mcp_server.state import AppState

Transport = Literal["streamable-http", "sse"]
MESSAGE_PATHS = {"streamable-http": ("/mcp",), "sse": ("/messages", "/messages/")}


async def _respond(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": data})


def _operations(message: Any) -> list[str]:
    """The policy operations a JSON-RPC message (or a list of them) asks for."""
    found: list[str] = []
    for item in message if isinstance(message, list) else [message]:
        if not isinstance(item, dict) or not isinstance(item.get("params"), dict):
            continue
        params = item["params"]
        if item.get("method") == "tools/call" and isinstance(params.get("name"), str):
            found.append(params["name"])
        elif item.get("method") == "resources/read" and isinstance(params.get("uri"), str):
            op = operation_for_uri(params["uri"])
            if op is not None:
                found.append(op.name)
    return found


class ScopeGate:
    def __init__(self, app: ASGIApp, state: AppState, paths: tuple[str, ...], check_scopes: bool) -> None:
        self.app = app
        self.state = state
        self.paths = paths
        self.check_scopes = check_scopes
        self.limit = state.settings.max_request_bytes
        self.metadata_url = str(build_resource_metadata_url(state.settings.resource_url))  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        too_large = {"error": "request_too_large", "error_description": f"body over {self.limit} bytes"}
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            declared = 0
        if declared > self.limit:
            await _respond(send, 413, too_large, [(b"connection", b"close")])
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _respond(send, 413, too_large, [(b"connection", b"close")])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if self.check_scopes and await self._refuse_scope(body, headers, send):
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse_scope(self, body: bytes, headers: dict[str, str], send: Send) -> bool:
        authorization = headers.get("authorization", "")
        if not authorization.lower().startswith("bearer "):
            return False
        try:
            operations = _operations(json.loads(body))
        except ValueError:
            return False
        if not operations:
            return False
        try:
            principal = await self.state.authority.verify_async(authorization[7:].strip())
        except MacroslowError:
            return False  # the SDK's bearer check answers 401
        for name in operations:
            try:
                self.state.policy.check(principal, name)
            except Forbidden as exc:
                required = exc.details.get("required_scope")
                if required is None:
                    continue  # not offered at all: the tool answers with a forbidden error
                challenge = (
                    f'Bearer error="insufficient_scope", scope="{required}", '
                    f'error_description="{name} needs the scope {required}", '
                    f'resource_metadata="{self.metadata_url}"'
                )
                await _respond(
                    send,
                    403,
                    {"error": "insufficient_scope", "error_description": exc.message, "scope": required},
                    [(b"www-authenticate", challenge.encode("latin-1"))],
                )
                return True
        return False


def build_http_app(server: MCPServer[Any], state: AppState, transport: Transport, host: str) -> ASGIApp:
    limit = state.settings.max_request_bytes
    if transport == "streamable-http":
        app: ASGIApp = server.streamable_http_app(max_request_body_size=limit, host=host)
    else:
        app = server.sse_app(max_request_body_size=limit, host=host)
    return ScopeGate(app, state, MESSAGE_PATHS[transport], check_scopes=state.caller_source == "bearer")


def serve_http(server: MCPServer[Any], state: AppState, transport: Transport, host: str, port: int) -> None:
    """Run the HTTP app with uvicorn (logs to stderr, no access log of request lines with tokens)."""
    app = build_http_app(server, state, transport, host)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=state.settings.log_level.lower(),
        limit_concurrency=256,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    uvicorn.Server(config).run()
