"""What is known about the tool call being served, for its receipt.

`tool_adapter` opens a `CallRecord` for each tool call; `AppState.guard` fills in who called and what
the policy decided; the adapter turns the record and the outcome into exactly one receipt.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mcp_server.auth.principal import Principal
from mcp_server.errors import MacroslowError


@dataclass
class CallRecord:
    tool: str
    arguments: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    action: str | None = None
    denial: MacroslowError | None = None
    document_id: str | None = None
    document_digest: str | None = None
    backend_job_id: str | None = None
    attestation: dict[str, Any] | None = None  # what a backend run attests, for the receipt


current_call: ContextVar[CallRecord | None] = ContextVar("macroslow_current_call", default=None)
