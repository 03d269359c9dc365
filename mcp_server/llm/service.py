"""`LlmService`: one query from checked arguments to a (possibly cached) answer.

In order: the backend is configured and the model offered; the output schema is a JSON Schema; the
request is within `llm_max_request_bytes`; a cached answer to the same request is returned (no
upstream call, no tokens); else `max_tokens` plus an estimate of the prompt is reserved against the
principal's token budget (refused with `rate_limited` and no upstream call when it would overrun),
the upstream is called (`upstream.complete`), and the reservation is settled with the usage it
reports (with nothing when the upstream answered with an error, left standing after a timeout).
An answer that fails the output schema is an error (its tokens are spent) and is not cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from sqlalchemy import Engine

from mcp_server import metrics
from mcp_server.auth.principal import Principal
from mcp_server.db import transaction
from mcp_server.errors import BackendUnavailable, MacroslowError
from mcp_server.llm.cache import ResponseCache
from mcp_server.llm.chat import ChatRequest, Completion
from mcp_server.llm.client import backend_of, build_client
from mcp_server.llm.output import check_schema, validate_answer
from mcp_server.policy.quota import Reservation, TokenBudget
from mcp_server.settings import Settings

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)
T = TypeVar("T")


def budget_key(principal: Principal) -> str:
    """Whose budget and cache entries a call uses (the rate limiter's key for the same principal)."""
    return f"{principal.issuer} {principal.sub}"


@dataclass(frozen=True)
class Answer:
    completion: Completion
    value: Any  # the answer as validated JSON, when an output schema was given
    cached: bool


class LlmService:
    def __init__(self, settings: Settings, engine: Engine, *, credential: Any | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.budget = TokenBudget(engine, settings.llm_token_budget, settings.llm_budget_period_seconds)
        self.cache = ResponseCache(engine, settings.llm_cache_ttl_seconds)
        self._in_thread = engine.dialect.name != "sqlite"  # SQLite: one local statement, no thread hop
        self._credential = credential  # Azure Entra ID: an azure-identity async credential (tests)
        self._client: AsyncOpenAI | None = None
        self._owned: Any | None = None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if self._in_thread:
            return await anyio.to_thread.run_sync(fn, *args)
        return fn(*args)

    def _client_for(self) -> AsyncOpenAI:
        if self._client is None:
            backend = backend_of(self.settings)
            self._client, self._owned = build_client(self.settings, backend, self._credential)
        return self._client

    async def aclose(self) -> None:
        client, owned = self._client, self._owned
        self._client = self._owned = None
        if client is not None:
            await client.close()
        if owned is not None:
            await owned.close()

    async def query(
        self,
        principal: Principal,
        messages: tuple[dict[str, str], ...],
        *,
        model: str | None,
        max_tokens: int,
        temperature: float | None = None,
        output_schema: dict[str, Any] | None = None,
        use_cache: bool = True,
    ) -> Answer:
        backend = backend_of(self.settings)
        if output_schema is not None:
            check_schema(output_schema)
        request = ChatRequest(backend.model(model), messages, max_tokens, temperature, output_schema)
        request.check_size(self.settings.llm_max_request_bytes)
        key = budget_key(principal)
        cache_key = request.cache_key(key, backend.identity) if use_cache and self.cache.enabled else None
        found = await self._db(self._lookup_or_reserve, cache_key, key, request.reservation())
        if isinstance(found, Completion):
            value = validate_answer(found.text, output_schema) if output_schema is not None else None
            metrics.LLM_CACHE_HITS.inc()
            return Answer(found, value, cached=True)
        completion = await self._call(request, found)
        used = completion.usage.total_tokens if completion.usage_reported else found.tokens
        metrics.LLM_TOKENS.inc(max(used, 0))
        try:
            value = validate_answer(completion.text, output_schema) if output_schema is not None else None
        except MacroslowError:
            await self._db(self._settle_and_store, found, used, None, completion)  # spent, not cached
            raise
        await self._db(self._settle_and_store, found, used, cache_key, completion)
        return Answer(completion, value, cached=False)

    def _lookup_or_reserve(self, cache_key: str | None, key: str, tokens: int) -> Completion | Reservation:
        """A cached answer, or else a budget reservation (one transaction)."""
        with transaction(self.engine) as conn:
            if cache_key is not None:
                hit = self.cache.get(cache_key, connection=conn)
                if hit is not None:
                    return hit
            return self.budget.reserve(key, tokens, connection=conn)

    def _settle_and_store(
        self, reservation: Reservation, used: int, cache_key: str | None, completion: Completion | None
    ) -> None:
        """Settle the reservation with the real usage and cache the answer (one transaction). If the
        database fails, the reservation stands (the budget errs on the safe side) and the answer, paid
        for, is still returned, uncached."""
        try:
            with transaction(self.engine) as conn:
                self.budget.settle(reservation, used, connection=conn)
                if cache_key is not None and completion is not None:
                    self.cache.put(cache_key, completion, connection=conn)
        except BackendUnavailable as exc:
            log.warning("llm usage not settled or answer not cached: %s", exc.code)

    async def _call(self, request: ChatRequest, reservation: Reservation) -> Completion:
        from mcp_server.llm import upstream

        settings = self.settings
        policy = upstream.RetryPolicy(
            settings.llm_max_retries, settings.llm_retry_max_wait_seconds, settings.llm_retry_total_seconds
        )
        try:
            return await upstream.complete(self._client_for(), request, policy)
        except upstream.UpstreamTimeout:
            raise  # the upstream may have spent the tokens: the reservation stands
        except MacroslowError:  # the upstream answered with an error: nothing was spent
            await self._db(self._settle_and_store, reservation, 0, None, None)
            raise
