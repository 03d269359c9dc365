"""Every Prometheus metric the server exports, defined once; `render()` for `GET /metrics`.

The seams that update them (one each): `adapters.tools.observe` (calls, outcomes, latency),
`calls.Call.refuse` (denials), `ledger.store.Ledger.append` (append latency),
`quantum.local.LocalSimulator` (queue depth), `llm.service.LlmService.query` (tokens, cache hits).

Several worker processes (`serve --workers N`) use prometheus-client's multi-process mode: set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory before the workers start (`serve --workers` does
it with a fresh temporary directory when unset); `/metrics` then sums over every worker.
Labels are bounded: tool names and stable error codes only, never principals or documents.
"""

from __future__ import annotations

import os
import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
_LABEL = re.compile(r"^[a-z0-9_]{1,64}$")

TOOL_CALLS = Counter(
    "macroslow_tool_calls", "Tool calls, by tool and outcome (ok or the error code).", ["tool", "outcome"]
)
TOOL_LATENCY = Histogram(
    "macroslow_tool_call_seconds",
    "Tool call duration, receipt included.",
    ["tool"],
    buckets=_LATENCY_BUCKETS,
)
DENIALS = Counter("macroslow_denials", "Calls the policy refused, by reason code.", ["reason"])
LEDGER_APPEND = Histogram(
    "macroslow_ledger_append_seconds",
    "Time to append one receipt (queueing for the group commit included).",
    buckets=_LATENCY_BUCKETS,
)
QUANTUM_QUEUE = Gauge(
    "macroslow_quantum_queue_depth",
    "Local simulator jobs waiting for a worker.",
    multiprocess_mode="livesum",
)
LLM_TOKENS = Counter("macroslow_llm_tokens", "LLM tokens used (as reported upstream, else reserved).")
LLM_CACHE_HITS = Counter("macroslow_llm_cache_hits", "LLM queries answered from the response cache.")


def label(value: str) -> str:
    """A label value kept to a bounded, safe alphabet (tool names and error codes are)."""
    return value if _LABEL.match(value) else "other"


def render() -> tuple[bytes, str]:
    """The exposition text and its content type; summed over workers in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
