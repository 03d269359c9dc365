"""`LlmService` and `ResponseCache` directly: what a failed call leaves in the budget, expiry and purge."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, func, select

from mcp_server.auth.principal import Principal
from mcp_server.db import open_engine
from mcp_server.errors import BackendUnavailable, RateLimited
from mcp_server.llm.cache import LlmCacheEntry, ResponseCache
from mcp_server.llm.chat import Completion, Usage
from mcp_server.llm.service import LlmService, budget_key
from mcp_server.settings import Settings
from tests.llm.openai_fake import FakeOpenAI, Fault

pytestmark = pytest.mark.anyio

ALICE = Principal(sub="alice", issuer="local", scopes=frozenset({"openai:query"}), local=True)
MESSAGES = ({"role": "user", "content": "How many tokens?"},)


@pytest.fixture
def service(llm_settings: Callable[..., Settings]) -> Iterator[Callable[..., LlmService]]:
    made: list[tuple[LlmService, Engine]] = []

    def make(**overrides: object) -> LlmService:
        settings = llm_settings(**overrides)
        engine = open_engine(settings.database)
        made.append((LlmService(settings, engine), engine))
        return made[-1][0]

    yield make
    for _, engine in made:
        engine.dispose()


async def test_usage_is_settled_and_failures_give_tokens_back(
    service: Callable[..., LlmService], fake: FakeOpenAI
) -> None:
    llm = service(llm_max_retries=0)
    key = budget_key(ALICE)
    try:
        answer = await llm.query(ALICE, MESSAGES, model=None, max_tokens=300)
        assert llm.budget.used(key) == answer.completion.usage.total_tokens < 300
        fake.script.append(Fault(status=500))
        with pytest.raises(BackendUnavailable):
            await llm.query(ALICE, MESSAGES, model=None, max_tokens=300, use_cache=False)
        assert llm.budget.used(key) == answer.completion.usage.total_tokens  # the 500 cost nothing
    finally:
        await llm.aclose()


async def test_a_timeout_keeps_the_reservation(service: Callable[..., LlmService], fake: FakeOpenAI) -> None:
    """The upstream may have done the work: the reserved tokens stay spent."""
    llm = service(llm_timeout_seconds=0.3)
    fake.script.append(Fault(delay=1.5))
    try:
        with pytest.raises(BackendUnavailable):
            await llm.query(ALICE, MESSAGES, model=None, max_tokens=300)
    finally:
        await llm.aclose()
    assert llm.budget.used(budget_key(ALICE)) == 300 + 4  # max_tokens + 16 prompt bytes / 4


async def test_cache_hits_cost_no_tokens(service: Callable[..., LlmService], fake: FakeOpenAI) -> None:
    llm = service(llm_token_budget=600)
    fake.use_all_tokens = True  # the first answer spends its 500 tokens (plus the prompt)
    try:
        first = await llm.query(ALICE, MESSAGES, model=None, max_tokens=500)
        hits = [await llm.query(ALICE, MESSAGES, model=None, max_tokens=500) for _ in range(3)]
        with pytest.raises(RateLimited):  # a miss must reserve 504 more, which no longer fits
            await llm.query(ALICE, MESSAGES, model=None, max_tokens=500, use_cache=False)
    finally:
        await llm.aclose()
    assert not first.cached and all(h.cached for h in hits) and len(fake.requests) == 1


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(LlmCacheEntry)).scalar_one())


def test_expired_entries_are_not_served_and_are_purged(tmp_path: object) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/cache.db")
    try:
        cache = ResponseCache(engine, ttl_seconds=10)
        answer = Completion("hi", "m", Usage(1, 2, 3), "stop", "req_1")
        cache.put("a" * 64, answer, now=1000.0)
        assert cache.get("a" * 64, now=1009.0) == answer
        assert cache.get("a" * 64, now=1010.0) is None  # expired: not served
        cache.put("b" * 64, answer, now=1030.0)  # within a minute of the last purge: kept for now
        assert count(engine) == 2
        cache.put("c" * 64, answer, now=1100.0)  # a later write purges what has expired
        assert count(engine) == 1
    finally:
        engine.dispose()
