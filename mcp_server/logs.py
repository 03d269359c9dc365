"""Log lines to stderr: plain text, or one JSON object per line with `MACROSLOW_LOG_FORMAT=json`.

A JSON line carries `ts`, `level`, `logger`, `message`, and the fields a call adds (`request_id`,
`sub`, `tool`, `outcome`, `duration_ms`; see `adapters._observe`). Only those named fields are
copied from a record, so nothing a caller sent (arguments, documents, tokens) reaches the log
through `extra`. stdout is never used: the stdio transport's stdout carries JSON-RPC only.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

# The HTTP request being served (the client's X-Request-Id if well-formed, else a fresh id).
request_id: ContextVar[str | None] = ContextVar("macroslow_request_id", default=None)

FIELDS = ("request_id", "sub", "tool", "outcome", "duration_ms", "status", "path", "method")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        for name in FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(fmt: str, level: int | str) -> None:
    """One stderr handler on the root logger (replacing earlier ones); uvicorn's loggers propagate."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
