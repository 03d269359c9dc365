"""What is sent upstream (`ChatRequest`) and what comes back (`Completion`).

The cache key is the SHA-256 of the canonical JSON of everything that shapes an answer: who asks
(answers are not shared between principals), which backend (provider and endpoint, never its
credentials), the model, the messages and the parameters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from mcp_server.errors import RequestTooLarge
from mcp_server.ledger.receipts import canonical_json

CACHE_KEY_VERSION = 1
BYTES_PER_TOKEN = 4  # a prompt's token estimate for the budget reservation (settled with real usage)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[dict[str, str], ...]
    max_tokens: int
    temperature: float | None = None
    output_schema: dict[str, Any] | None = field(default=None, hash=False)

    def parameters(self) -> dict[str, Any]:
        """The Chat Completions parameters besides `model` and `messages`."""
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.output_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": self.output_schema},
            }
        return params

    def body(self) -> dict[str, Any]:
        return {"model": self.model, "messages": list(self.messages), **self.parameters()}

    def size(self) -> int:
        """Bytes of the request body as JSON (what the size cap is checked against)."""
        return len(canonical_json(self.body()))

    def check_size(self, allowed: int) -> int:
        size = self.size()
        if size > allowed:
            raise RequestTooLarge(
                "the request (messages and output schema) is over this server's limit",
                requested=size,
                allowed=allowed,
            )
        return size

    def reservation(self) -> int:
        """Tokens to reserve before the call: `max_tokens` plus an estimate of the prompt."""
        prompt = sum(len(m["content"].encode("utf-8")) for m in self.messages)
        return self.max_tokens + -(-prompt // BYTES_PER_TOKEN)

    def cache_key(self, principal: str, backend: str) -> str:
        material = {"v": CACHE_KEY_VERSION, "principal": principal, "backend": backend, **self.body()}
        return hashlib.sha256(canonical_json(material)).hexdigest()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class Completion:
    """An answer: what the tool returns and what the cache stores (no request, no credentials)."""

    text: str
    model: str
    usage: Usage
    finish_reason: str | None
    request_id: str | None
    usage_reported: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "usage": self.usage.__dict__,
            "finish_reason": self.finish_reason,
            "request_id": self.request_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(
            text=str(data["text"]),
            model=str(data["model"]),
            usage=Usage(**{k: int(v) for k, v in data["usage"].items()}),
            finish_reason=data.get("finish_reason"),
            request_id=data.get("request_id"),
        )
