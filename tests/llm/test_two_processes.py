"""Two real `macroslow-mcp serve` processes over Streamable HTTP, sharing one database and one
loopback OpenAI fake: the token budget holds across them, and no caller's token goes upstream."""

from __future__ import annotations

import contextlib
import json
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.adapters import error_of
from mcp_server.home import initialize
from mcp_server.settings import Settings
from tests.llm.conftest import API_KEY
from tests.llm.openai_fake import FakeOpenAI
from tests.server.test_transports import mint, start_server

pytestmark = [pytest.mark.subprocess, pytest.mark.anyio]


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
async def test_budget_exhaustion_across_two_server_processes(
    tmp_path: Path, fake: FakeOpenAI, database: str, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("postgres_url")
        if database == "postgresql"
        else f"sqlite:///{tmp_path / 'shared.db'}"
    )
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    token = mint(a / "home", sub="alice", scope="openai:query receipts:read")  # a's issuer key
    initialize(Settings(home=a / "home", _env_file=None), example=False)  # its signing and log keys
    # Same keys and issuer: b trusts a's tokens, and signs the shared ledger's checkpoints with its key.
    shutil.copytree(a / "home", b / "home")
    env = {
        "MACROSLOW_DATABASE_URL": url,
        "MACROSLOW_LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": f"{fake.url}/v1",
        "MACROSLOW_LLM_TOKEN_BUDGET": "1000",
        "MACROSLOW_TOKEN": "server-side-token-that-must-not-leak",
    }
    fake.use_all_tokens = True  # each answer spends its max_tokens: 400 + the prompt
    results: list[Any] = []
    with ExitStack() as stack:
        servers = [
            stack.enter_context(contextlib.contextmanager(start_server)(d, "streamable-http", env=env))
            for d in (a, b)
        ]
        async with contextlib.AsyncExitStack() as clients:
            sessions = []
            for base in servers:
                http = await clients.enter_async_context(
                    httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
                )
                sessions.append(
                    await clients.enter_async_context(
                        Client(streamable_http_client(f"{base}/mcp", http_client=http))
                    )
                )
            for i, session in enumerate([*sessions, *sessions]):  # a, b, a, b
                arguments = {"prompt": f"question {i}", "max_tokens": 400}
                results.append(await session.call_tool("query_openai", arguments))
    ok = [not r.is_error for r in results]
    assert ok == [True, True, False, False], [r.content for r in results]
    for refused in results[2:]:
        error = error_of(refused)
        assert error["code"] == "rate_limited" and error["details"]["retry_after"] > 0
    assert len(fake.requests) == 2  # the refused calls never went upstream
    sent = json.dumps([[r.headers, r.body] for r in fake.requests])
    assert token not in sent and "server-side-token-that-must-not-leak" not in sent
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in fake.requests)
