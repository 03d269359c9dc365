"""The HTTP transports (Streamable HTTP at /mcp, SSE at /sse + /messages/) as one ASGI app.

The SDK's app does the bearer authentication (401 with `WWW-Authenticate` and `resource_metadata`)
and DNS-rebinding protection. In front of it, `ResourceMetadata` answers the RFC 9728 metadata at
`/.well-known/oauth-protected-resource/<resource path>` (with `scopes_supported`: every scope the
offered operations use, `mcp_server.auth.scopes`), and `ScopeGate`:

- refuses a request body over `max_request_bytes` with 413 before reading or parsing it
  (by `Content-Length`, or by counting a streamed body), and one not received within
  `http_body_timeout_seconds` with 408;
- for `tools/call` and `resources/read` with a valid bearer token that lacks the operation's scope,
  answers 403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="<scope>"`, so a client
  can ask its authorization server for that scope (step-up). The decision is `Policy.check`, the same
  one the tool's guard makes again; requests it cannot judge (no or bad token, unknown tool, not
  JSON, or JSON beyond the gate's bounds: nesting deeper than 256, a run of more than 4,300 digits)
  go on to the SDK, which answers them (401; 400 for what its own parser refuses). The body is
  parsed only once the token is verified. A tool call refused here leaves the same receipt,
  audit line and metric as one the tool adapter refuses (`ToolRunner.refused_at_the_door`). The
  403's `scope` is the token's scopes of this server plus the missing one (a client asks for exactly
  that; a new token must not lose what the old one granted);
- adds `scope="..."` to the SDK's 401 challenge (RFC 6750 3; the MCP spec's scope selection): the
  read-only baseline, plus the scope of the tool call or resource read asked for. Without a valid
  token the body is parsed for this only when it is at most 64 KiB (else the baseline alone).

Around it: `Front` refuses a request with both `Content-Length` and `Transfer-Encoding` (400,
RFC 9112 6.3); `OriginGate` (loopback binds, where the SDK's DNS-rebinding checks are on) refuses
an `Origin` that is not exactly `scheme://host[:port]` of an allowed origin (403) and a `Host` that
is not exactly an allowed host with an optional numeric port (421), before the SDK's own prefix
matching sees them. Connection-level limits (slow headers, per-peer and total connections) are
`mcp_server.http_limits`.

Not receipted: requests without a valid token (401; an anonymous flood must not grow the ledger)
and bodies over the size cap (413; never parsed, so no tool is known).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import uuid
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import uvicorn
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from mcp.server.transport_security import TransportSecuritySettings
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.supervisors.multiprocess import Multiprocess

from mcp_server import metrics, untrusted_json
from mcp_server.admission import Admission, CallerSource
from mcp_server.auth.scopes import ChallengeScopes, scope_param
from mcp_server.errors import Forbidden, MacroslowError
from mcp_server.http_limits import ConnectionLimits, GuardedH11Protocol
from mcp_server.http_limits import configure as configure_limits
from mcp_server.logs import configure as configure_logs
from mcp_server.logs import request_id
from mcp_server.policy.operations import operation_for_uri

if TYPE_CHECKING:
    from mcp_server.server import MacroslowServer
    from mcp_server.settings import Settings

Transport = Literal["streamable-http", "sse"]
log = logging.getLogger(__name__)
MESSAGE_PATHS = {"streamable-http": ("/mcp",), "sse": ("/messages", "/messages/")}


async def _respond(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": data})


# The gate's JSON bounds: a body beyond them is not judged here but passed on (the SDK's own parser
# refuses nesting over 200 and integers over ~4,300 digits with 400), so every body the SDK accepts
# is judged.
_MAX_DEPTH = 256
_MAX_NUMBER = 4300
# A body without a valid token is parsed (only to name the call's scope in the 401) up to this size.
_ANONYMOUS_JSON_BYTES = 64 * 1024


def _bounded_json(body: bytes, limit: int) -> Any:
    """The body as JSON (`untrusted_json.loads`: depth and number length checked before parsing,
    linear time), or None when it is not JSON or is beyond the gate's bounds."""
    try:
        return untrusted_json.loads(
            body, max_bytes=limit, max_depth=_MAX_DEPTH, max_number_digits=_MAX_NUMBER, what="request body"
        )
    except MacroslowError:
        return None


def _operations(message: Any) -> list[tuple[str, dict[str, Any] | None]]:
    """The policy operations a JSON-RPC message (or a list of them) asks for: (operation, the tool
    call's arguments, or None for a resource read)."""
    found: list[tuple[str, dict[str, Any] | None]] = []
    for item in message if isinstance(message, list) else [message]:
        if not isinstance(item, dict) or not isinstance(item.get("params"), dict):
            continue
        params = item["params"]
        if item.get("method") == "tools/call" and isinstance(params.get("name"), str):
            arguments = params.get("arguments")
            found.append((params["name"], arguments if isinstance(arguments, dict) else {}))
        elif item.get("method") == "resources/read" and isinstance(params.get("uri"), str):
            op = operation_for_uri(params["uri"])
            if op is not None:
                found.append((op.name, None))
    return found


class ScopeGate:
    def __init__(
        self, app: ASGIApp, server: MacroslowServer, paths: tuple[str, ...], check_scopes: bool
    ) -> None:
        self.app = app
        self.admission = admission = server.admission
        self.runner = server.runner
        self.paths = paths
        self.check_scopes = check_scopes
        self.limit = admission.settings.max_request_bytes
        self.body_timeout = ConnectionLimits.from_settings(admission.settings).body_timeout
        self.metadata_url = str(build_resource_metadata_url(admission.settings.resource_url))  # type: ignore[arg-type]
        self.scopes = ChallengeScopes(admission.policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, self._naming_scopes(send, self.scopes.baseline))
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
        with anyio.move_on_after(self.body_timeout) as body_timer:
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
        if body_timer.cancelled_caught:
            slow = {"error": "timeout", "error_description": f"body not received in {self.body_timeout:g} s"}
            await _respond(send, 408, slow, [(b"connection", b"close")])
            return
        body = b"".join(chunks)
        challenge = self.scopes.baseline
        if self.check_scopes:
            answered, challenge = await self._judge(body, headers, send)
            if answered:
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, self._naming_scopes(send, challenge))

    def _naming_scopes(self, send: Send, scopes: tuple[str, ...]) -> Send:
        """`send`, adding `scope="..."` to the SDK's 401 bearer challenge (when auth is on)."""
        if not self.check_scopes or not scopes:
            return send
        extra = f', scope="{scope_param(scopes)}"'.encode("latin-1")

        async def send_naming_scopes(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                headers = [
                    (k, v + extra)
                    if k.lower() == b"www-authenticate" and v.startswith(b"Bearer ") and b' scope="' not in v
                    else (k, v)
                    for k, v in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        return send_naming_scopes

    async def _judge(self, body: bytes, headers: dict[str, str], send: Send) -> tuple[bool, tuple[str, ...]]:
        """(whether a 403 was sent, the scopes a 401 for this request names)."""
        authorization = headers.get("authorization", "")
        principal = None
        if authorization.lower().startswith("bearer "):
            with contextlib.suppress(MacroslowError):  # the SDK's bearer check answers 401
                principal = await self.admission.authority.verify_async(authorization[7:].strip())
        if principal is None:  # a small body only: name the scope of what it asks for in the 401
            asked = _operations(_bounded_json(body, min(self.limit, _ANONYMOUS_JSON_BYTES)))
            return False, self.scopes.for_operations(name for name, _ in asked)
        operations = _operations(_bounded_json(body, self.limit))
        if not operations:
            return False, self.scopes.baseline
        for name, arguments in operations:
            try:
                self.admission.policy.check(principal, name)
            except Forbidden as exc:
                required = exc.details.get("required_scope")
                if required is None:
                    continue  # not offered at all: the tool answers with a forbidden error
                # refused here, not by the adapter: the same receipt (tools), audit line and metric
                await self.runner.refused_at_the_door(name, arguments, principal, exc)
                challenge = (
                    f'Bearer error="insufficient_scope", '
                    f'scope="{scope_param(self.scopes.step_up(principal.scopes, required))}", '
                    f'error_description="{name} needs the scope {required}", '
                    f'resource_metadata="{self.metadata_url}"'
                )
                await _respond(
                    send,
                    403,
                    {"error": "insufficient_scope", "error_description": exc.message, "scope": required},
                    [(b"www-authenticate", challenge.encode("latin-1"))],
                )
                return True, ()
        return False, self.scopes.baseline


class ResourceMetadata:
    """`GET /.well-known/oauth-protected-resource<resource path>` (RFC 9728), answered with the
    SDK's own handler (and its CORS) but listing `scopes_supported`. The SDK's route takes that list
    from `AuthSettings.required_scopes`, which it would also demand of every request; scopes here
    are per operation, so the document is served in front of the SDK's."""

    def __init__(self, app: ASGIApp, server: MacroslowServer) -> None:
        self.app = app
        auth = server.settings.auth
        assert auth is not None and auth.resource_server_url is not None
        [self.route] = create_protected_resource_routes(
            resource_url=auth.resource_server_url,
            authorization_servers=[auth.issuer_url],
            scopes_supported=list(ChallengeScopes(server.admission.policy).supported),
            resource_name=server.title or server.name,
            resource_documentation=server.website_url,  # type: ignore[arg-type]
        )
        self.path = self.route.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await self.route.handle(scope, receive, send)
            return
        await self.app(scope, receive, send)


def resource_notice(settings: Settings, host: str) -> tuple[int, str]:
    """The start-up line (level, text) saying which resource URL and token audience are in use."""
    what = "resource URL" if settings.audience else "resource URL and token audience"
    if settings.resource_url_derived:
        line = (
            f"{what} {settings.resource_url}, from the address served (MACROSLOW_RESOURCE_URL overrides it)"
        )
    else:
        line = f"{what} {settings.resource_url} (MACROSLOW_RESOURCE_URL)"
    if settings.audience:
        line += f"; token audience {settings.audience} (MACROSLOW_AUDIENCE)"
    if settings.resource_url_derived and host in ("0.0.0.0", "::"):  # noqa: S104 - naming, not binding
        return logging.WARNING, line + ": bound to every interface; set it to the URL clients use"
    return logging.INFO, line


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]
_LOOPBACK_CLIENTS = ("127.0.0.1", "::1", "localhost")


class Front:
    """The outermost layer: keeps `AppState` open for the app's lifetime (uvicorn's lifespan), answers
    `/healthz`, `/readyz` and `/metrics` (no bearer token needed), gives each request an id, adds
    `X-Content-Type-Options: nosniff` and `Cache-Control: no-store` to every response, and ends an
    MCP request still running after `request_timeout_seconds` (504 if nothing was sent yet).

    `/metrics` answers loopback clients only, unless `MACROSLOW_METRICS_PUBLIC=true`."""

    def __init__(self, app: ASGIApp, server: MacroslowServer, paths: tuple[str, ...]) -> None:
        self.app = app
        self.host = server.host
        self.settings = server.admission.settings
        self.paths = paths
        self.timeout = self.settings.request_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = {k.lower() for k, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            # RFC 9112 6.3: both framings at once is how requests are smuggled past a proxy; uvicorn
            # (h11) would use the chunked one and keep the connection. Refused, connection closed.
            body = {
                "error": "invalid_request",
                "error_description": "Content-Length and Transfer-Encoding together are refused",
            }
            await _respond(send, 400, body, [*_SECURITY_HEADERS, (b"connection", b"close")])
            return
        path, method = scope["path"], scope["method"]
        if method in ("GET", "HEAD") and path in ("/healthz", "/readyz", "/metrics"):
            await self._observe(path, scope, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": [*kept, *_SECURITY_HEADERS, (b"x-request-id", rid.encode())]}
            await send(message)

        token = request_id.set(rid)
        try:
            if method != "POST" or path not in self.paths:
                await self.app(scope, receive, send_with_headers)
                return
            with anyio.move_on_after(self.timeout) as timer:
                await self.app(scope, receive, send_with_headers)
            if timer.cancelled_caught:
                log.warning(
                    "request %s ended after %.0f s (MACROSLOW_REQUEST_TIMEOUT_SECONDS)", rid, self.timeout
                )
                if not started:
                    body = {"error": "timeout", "error_description": f"request over {self.timeout:g} s"}
                    await _respond(send, 504, body, [*_SECURITY_HEADERS, (b"x-request-id", rid.encode())])
        finally:
            request_id.reset(token)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self.host.open())
            await self.host.ready()  # serve nothing until the services are open
        except Exception as exc:
            await stack.aclose()
            log.error("cannot start: %s", exc)
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        held: list[Message] = []

        async def send_after_closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                held.append(message)  # uvicorn exits on it: first close the services (final checkpoint)
                return
            await send(message)

        async with stack:
            await self.app(scope, receive, send_after_closing)
        for message in held:
            await send(message)

    async def _observe(self, path: str, scope: Scope, send: Send) -> None:
        headers = list(_SECURITY_HEADERS)
        if path == "/healthz":
            await _respond(send, 200, {"status": "ok"}, headers)
        elif path == "/readyz":
            try:
                with anyio.fail_after(5):
                    reason = await anyio.to_thread.run_sync(self.host.check_ready, abandon_on_cancel=True)
            except TimeoutError:
                reason = "database_timeout"
            if reason is None:
                await _respond(send, 200, {"status": "ready"}, headers)
            else:
                await _respond(send, 503, {"status": "unavailable", "reason": reason}, headers)
        else:
            client = scope.get("client")
            if not self.settings.metrics_public and (not client or client[0] not in _LOOPBACK_CLIENTS):
                body = {"error": "forbidden", "error_description": "metrics are served to loopback only"}
                await _respond(send, 403, body, headers)
                return
            data, content_type = metrics.render()
            base = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": base + headers})
            await send({"type": "http.response.body", "body": data})


_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::([1-9][0-9]{0,4}))?")
_ORIGIN = re.compile(r"(https?)://" + _HOST.pattern)
SDK_PATHS = {"streamable-http": ("/mcp",), "sse": ("/sse", "/messages", "/messages/")}


def _port_ok(port: str | None) -> bool:
    return port is None or int(port) <= 65535


class OriginGate:
    """The SDK's DNS-rebinding checks match `http://localhost:*` as a prefix (`http://localhost:` +
    anything: `http://localhost:1@evil.example` passes). In front of them, on the SDK's paths: an
    `Origin` must be exactly `http://<loopback host>[:<port>]` or one of `cors_origins`, with no
    userinfo, path, query, fragment, upper case or non-numeric port (else 403); a `Host` must be
    exactly a loopback host with an optional numeric port (else 421). Absent headers are left to
    the SDK (a missing Origin is allowed, a missing Host refused)."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], extra_origins: list[str]) -> None:
        self.app = app
        self.paths = paths
        self.extra_origins = set(extra_origins)

    def origin_ok(self, origin: str) -> bool:
        if origin in self.extra_origins:
            return True
        parsed = _ORIGIN.fullmatch(origin)
        return (
            parsed is not None
            and parsed[1] == "http"
            and parsed[2] in _LOOPBACK_HOSTS
            and _port_ok(parsed[3])
        )

    @staticmethod
    def host_ok(host: str) -> bool:
        parsed = _HOST.fullmatch(host)
        return parsed is not None and parsed[1] in _LOOPBACK_HOSTS and _port_ok(parsed[2])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = [(k.lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        hosts = [v for k, v in headers if k == b"host"]
        origins = [v for k, v in headers if k == b"origin"]
        if len(hosts) > 1 or (hosts and not self.host_ok(hosts[0])):
            body = {"error": "invalid_host", "error_description": "Host header not allowed"}
            await _respond(send, 421, body, [(b"connection", b"close")])
            return
        if len(origins) > 1 or (origins and not self.origin_ok(origins[0])):
            body = {"error": "invalid_origin", "error_description": "Origin header not allowed"}
            await _respond(send, 403, body, [])
            return
        await self.app(scope, receive, send)


def _transport_security(admission: Admission, host: str) -> TransportSecuritySettings | None:
    """The SDK's Host/Origin checks (on for loopback binds), with the configured CORS origins allowed."""
    if host not in _LOOPBACK_CLIENTS:
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=[
            "http://127.0.0.1:*",
            "http://localhost:*",
            "http://[::1]:*",
            *admission.settings.cors_origins,
        ],
    )


def build_http_app(server: MacroslowServer, transport: Transport, host: str) -> ASGIApp:
    """Streamable HTTP is stateless (no session held in a process), so any replica answers any request."""
    admission = server.admission
    settings = admission.settings
    limit = settings.max_request_bytes
    security = _transport_security(admission, host)
    if transport == "streamable-http":
        app: ASGIApp = server.streamable_http_app(
            max_request_body_size=limit, host=host, stateless_http=True, transport_security=security
        )
    else:
        app = server.sse_app(max_request_body_size=limit, host=host, transport_security=security)
    if server.settings.auth is not None and server.settings.auth.resource_server_url is not None:
        app = ResourceMetadata(app, server)
    app = ScopeGate(app, server, MESSAGE_PATHS[transport], check_scopes=admission.caller_source == "bearer")
    if security is not None:
        app = OriginGate(app, SDK_PATHS[transport], settings.cors_origins)
    if settings.cors_origins:
        app = CORSMiddleware(
            app,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "mcp-protocol-version", "mcp-session-id"],
            expose_headers=["mcp-session-id", "www-authenticate"],
        )
    return Front(app, server, MESSAGE_PATHS[transport])


def worker_app() -> ASGIApp:
    """The app one uvicorn worker runs (`serve --workers N`): built from the environment the parent
    set (`MACROSLOW_*` settings, plus the transport, caller source and host of the `serve` call)."""
    from mcp_server.server import build_server
    from mcp_server.settings import Settings

    settings = Settings()
    configure_logs(settings.log_format, settings.log_level.upper())
    configure_limits(ConnectionLimits.from_settings(settings))
    transport: Transport = "sse" if os.environ.get(WORKER_TRANSPORT) == "sse" else "streamable-http"
    source: CallerSource = "local" if os.environ.get(WORKER_SOURCE) == "local" else "bearer"
    host = os.environ.get(WORKER_HOST, settings.host)
    port = int(os.environ.get(WORKER_PORT, settings.port))
    server = build_server(settings.served_at(host, port), caller_source=source)
    global _worker_server
    _worker_server = server
    return build_http_app(server, transport, host)


_worker_server: MacroslowServer | None = None  # the server of this worker process (`worker_app`)


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT it caught and shut down gracefully for is
    not raised again afterwards (uvicorn does, so the process died of the signal, status -15,
    however cleanly it had stopped): `serve` sets the exit status from how the shutdown went."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # read by uvicorn's exit from the block above


def _end_worker(signum: int, frame: Any) -> None:
    """A worker process's SIGTERM/SIGINT handler outside uvicorn's own (before it serves, and when
    uvicorn raises the signal again after a graceful shutdown): end the worker with status 0 when
    its services closed cleanly (or never opened), else 1. A worker process is uvicorn's child, not
    the CLI's, so its exit status is set here, the only place outside `mcp_server.cli` that exits."""
    server = _worker_server
    raise SystemExit(0 if server is None or server.host.closed_cleanly else 1)


class _WorkerConfig(uvicorn.Config):
    """uvicorn's config; in a worker process (`serve --workers N`), `configure_logging`, which
    uvicorn calls there before it starts serving, also installs `_end_worker`."""

    def configure_logging(self) -> None:
        super().configure_logging()
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, _end_worker)


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, keeping the workers' exit statuses once they are joined."""

    exit_codes: list[int | None]

    def join_all(self) -> None:
        super().join_all()
        self.exit_codes = [process.exitcode for process in self.processes]


WORKER_TRANSPORT, WORKER_SOURCE, WORKER_HOST, WORKER_PORT = (
    "MACROSLOW_SERVE_TRANSPORT",
    "MACROSLOW_SERVE_CALLER_SOURCE",
    "MACROSLOW_SERVE_HOST",
    "MACROSLOW_SERVE_PORT",
)


def serve_http(server: MacroslowServer, transport: Transport, host: str, port: int, workers: int = 1) -> bool:
    """Run the HTTP app with uvicorn (logs to stderr through the root logger; no access log) until
    SIGTERM or SIGINT, and shut down gracefully: True when the shutdown was clean, else False.

    Clean: the services closed without an error (`ServiceHost.closed_cleanly`: the last receipts
    covered by a signed checkpoint, the rate limiter's last report written, the pools closed) and
    uvicorn was not forced to exit (a second SIGINT skips the lifespan's shutdown). Requests still
    running after uvicorn's 10 s graceful timeout are cancelled; that alone does not make it unclean.

    With `workers` > 1, uvicorn starts that many processes, each building its own server from the
    environment (`worker_app`) and sharing the database; metrics then use a multi-process directory.
    The shutdown is clean when every worker ended with status 0 (each exits 0 after a clean
    shutdown, 1 otherwise: `_end_worker`).

    Connections go through `GuardedH11Protocol` (request-head deadline, per-peer and total caps; see
    `mcp_server.http_limits`) instead of uvicorn's `limit_concurrency`, which counts idle connections
    and so answered 503 to everyone once a few hundred idle ones were open. No WebSocket upgrades."""
    limits = ConnectionLimits.from_settings(server.admission.settings)
    configure_limits(limits)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": server.admission.settings.log_level.lower(),
        "log_config": None,
        "access_log": False,
        "http": GuardedH11Protocol,
        "ws": "none",
        "timeout_keep_alive": limits.keep_alive,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }
    if workers <= 1:
        running = _Server(uvicorn.Config(build_http_app(server, transport, host), **common))
        running.run()
        return server.host.closed_cleanly and not running.force_exit
    os.environ[WORKER_TRANSPORT] = transport
    os.environ[WORKER_SOURCE] = server.admission.caller_source
    os.environ[WORKER_HOST] = host
    os.environ[WORKER_PORT] = str(port)
    made_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        made_dir = tempfile.mkdtemp(prefix="macroslow-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_dir
    try:
        config = _WorkerConfig("mcp_server.http_app:worker_app", factory=True, workers=workers, **common)
        supervisor = _Supervisor(config, sockets=[config.bind_socket()])
        supervisor.run()
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
    failed = [code for code in supervisor.exit_codes if code != 0]
    if failed:
        log.error("shutdown incomplete: %d of %d workers did not stop cleanly", len(failed), workers)
    else:
        log.info("shutdown complete: every worker stopped cleanly")
    return not failed
