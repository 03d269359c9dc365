"""Azure OpenAI (API key and Entra ID), the settings' variable names, lazy import, Retry-After parsing."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from mcp.client import Client

from mcp_server.auth.principal import Principal
from mcp_server.db import open_engine
from mcp_server.llm.service import LlmService
from mcp_server.llm.upstream import retry_after
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.llm.openai_fake import FakeOpenAI

Make = Callable[..., Settings]
AZURE_KEY = "azure-test-key-0123456789"
LOCAL = Principal(sub="local", issuer="local", scopes=frozenset({"openai:query"}), local=True)


def azure_settings(make_settings: Make, fake: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "llm_provider": "auto",
        "openai_api_key": None,
        "azure_openai_endpoint": fake.url,
        "azure_openai_api_key": AZURE_KEY,
        "azure_openai_api_version": "2024-10-21",
        "azure_openai_deployment": "gpt4o-prod",
        **overrides,
    }
    return make_settings(**values)


@pytest.mark.anyio
async def test_azure_with_an_api_key_uses_the_deployment_url(make_settings: Make, fake: FakeOpenAI) -> None:
    async with Client(build_server(azure_settings(make_settings, fake))) as client:
        result = await client.call_tool("query_openai", {"prompt": "Hello, Azure?"})
    assert not result.is_error, result.content
    assert result.structured_content["model"] == "gpt4o-prod"
    [request] = fake.requests
    assert request.path == "/openai/deployments/gpt4o-prod/chat/completions"
    assert request.query == {"api-version": ["2024-10-21"]}
    assert request.headers["api-key"] == AZURE_KEY and "authorization" not in request.headers


class StaticCredential:
    """An azure-identity style async credential handing out one fixed token (no Entra ID here)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("entra-token-for-tests", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_azure_with_entra_id_sends_the_bearer_token_from_the_provider(
    make_settings: Make, fake: FakeOpenAI
) -> None:
    """No key: the token comes from azure-identity's `get_bearer_token_provider` over a credential."""
    settings = azure_settings(make_settings, fake, azure_openai_api_key=None)
    credential = StaticCredential()
    service = LlmService(settings, open_engine(settings.database), credential=credential)
    try:
        answer = await service.query(LOCAL, ({"role": "user", "content": "hi"},), model=None, max_tokens=10)
    finally:
        await service.aclose()
    assert answer.completion.text and answer.cached is False
    [request] = fake.requests
    assert request.headers["authorization"] == "Bearer entra-token-for-tests"
    assert "api-key" not in request.headers
    assert credential.scopes == [("https://cognitiveservices.azure.com/.default",)]


def test_the_sdk_and_seed_variable_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "OPENAI_API_KEY": "sk-from-env",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "AZURE_OPENAI_KEY": "seed-key",
        "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com/",
        "OPENAI_API_VERSION": "2025-01-01-preview",
        "AZURE_OPENAI_DEPLOYMENT": "dep",
        "MACROSLOW_LLM_MODELS": "gpt-4.1, o4-mini",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-from-env"
    assert s.openai_base_url == "http://127.0.0.1:9/v1"
    assert s.azure_openai_api_key is not None and s.azure_openai_api_key.get_secret_value() == "seed-key"
    assert s.azure_openai_endpoint == "https://example.openai.azure.com/"
    assert s.azure_openai_api_version == "2025-01-01-preview" and s.azure_openai_deployment == "dep"
    assert s.llm_models == ["gpt-4.1", "o4-mini"]
    assert "sk-from-env" not in repr(s)  # secrets stay hidden
    # the SDK's name and the project's prefixed one: the prefixed one wins
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "sdk-key")
    monkeypatch.setenv("MACROSLOW_AZURE_OPENAI_API_KEY", "own-key")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.azure_openai_api_key is not None and s.azure_openai_api_key.get_secret_value() == "own-key"


def test_openai_is_not_imported_when_the_server_starts(tmp_path: Any) -> None:
    script = """
import sys, anyio
from mcp_server.server import build_server
from mcp_server.settings import Settings
server = build_server(Settings(home=sys.argv[1], _env_file=None))
async def main():
    async with server.host.open():
        pass
anyio.run(main)
print("openai" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "home")], capture_output=True, check=True, text=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": formatdate(1_000_010, usegmt=True)}, 10.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-4"}, 0.0),
        ({}, None),
    ],
)
def test_retry_after_forms(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(headers, now=1_000_000) == expected
