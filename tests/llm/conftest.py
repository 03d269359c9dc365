"""Fixtures: the loopback OpenAI server (one per module, reset for each test) and settings using it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mcp_server.settings import Settings
from tests.llm.openai_fake import FakeOpenAI

API_KEY = "sk-test-server-key-0123456789"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake(fake_server: FakeOpenAI) -> FakeOpenAI:
    fake_server.reset()
    return fake_server


@pytest.fixture
def llm_settings(make_settings: Callable[..., Settings], fake: FakeOpenAI) -> Callable[..., Settings]:
    """Settings for a fresh home whose OpenAI endpoint is the fake, with overrides. Retry waits are
    kept short; no Azure endpoint, whatever the environment says."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "llm_provider": "openai",
            "openai_api_key": API_KEY,
            "openai_base_url": f"{fake.url}/v1",
            "azure_openai_endpoint": None,
            "azure_openai_api_key": None,
            "llm_retry_max_wait_seconds": 2.0,
            "llm_retry_total_seconds": 3.0,
            **overrides,
        }
        return make_settings(**values)

    return make
