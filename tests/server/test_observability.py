"""In process: /healthz, /metrics access rule, security headers, the JSON log formatter."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from mcp_server.http_app import build_http_app
from mcp_server.logs import JsonFormatter, request_id
from mcp_server.server import build_server
from mcp_server.settings import Settings


async def _get(app: Any, path: str, client: tuple[str, int]) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": client,
        "query_string": b"",
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.anyio
@pytest.mark.parametrize("public", [False, True])
async def test_metrics_loopback_only_unless_public(
    make_settings: Callable[..., Settings], public: bool
) -> None:
    settings = make_settings(metrics_public=public)
    server = build_server(settings, caller_source="bearer")
    app = build_http_app(server, "streamable-http", "127.0.0.1")
    status, headers, body = await _get(app, "/metrics", ("127.0.0.1", 5000))
    assert (status == 200 and b"macroslow_tool_calls_total" in body) or b"# HELP macroslow" in body
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    status, _, body = await _get(app, "/metrics", ("10.1.2.3", 5000))
    assert status == (200 if public else 403)
    status, _, body = await _get(app, "/healthz", ("10.1.2.3", 5000))  # no token needed
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = await _get(app, "/readyz", ("10.1.2.3", 5000))  # state not opened: not ready
    assert status == 503 and json.loads(body)["reason"] == "not_started"


def test_json_log_lines_carry_only_named_fields() -> None:
    record = logging.LogRecord(
        "mcp_server.calls", logging.INFO, __file__, 1, "tool %s: %s", ("x", "ok"), None
    )
    record.sub, record.tool, record.outcome, record.duration_ms = "alice", "verify_maml", "ok", 1.5
    record.document = "SECRET BODY"  # not a named field: never copied
    token = request_id.set("abc123")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert line["request_id"] == "abc123" and line["sub"] == "alice" and line["tool"] == "verify_maml"
    assert line["message"] == "tool x: ok" and "SECRET" not in json.dumps(line)
