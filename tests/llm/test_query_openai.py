"""query_openai through the SDK's in-memory client, the real `openai` SDK talking HTTP to the loopback
fake (tests/llm/openai_fake.py): answers, cache, budgets, retries, limits, schemas, documents, secrets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp_types import CallToolResult
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from mcp_server.adapters import error_of
from mcp_server.auth.local_issuer import mint
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.llm.conftest import API_KEY
from tests.llm.openai_fake import FakeOpenAI, Fault

pytestmark = pytest.mark.anyio

Make = Callable[..., Settings]
PROMPT_DOC = """\
---
maml_version: "2.0"
id: "urn:uuid:2b7f8a10-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
type: {type}
origin: agent://local
title: Capital city
requires:
  max_tokens: 64
permissions:
  read: [agent://local]
  write: [agent://local]
  execute: [agent://local]
---
# Capital city

## Intent
What is the capital of France? Answer as JSON.

## Context
You are a terse geography assistant.

## Output_Schema
```json
{{"type": "object", "properties": {{"capital": {{"type": "string"}}}}, "required": ["capital"]}}
```
"""


def error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, result.structured_content
    return dict(error_of(result))


async def ask(client: Client, **arguments: Any) -> CallToolResult:
    return await client.call_tool("query_openai", arguments)


def db_text(settings: Settings, sql: str) -> str:
    engine = create_engine(settings.database)
    try:
        with engine.connect() as conn:
            return json.dumps([list(row) for row in conn.execute(text(sql))], default=str)
    finally:
        engine.dispose()


# -- answers ----------------------------------------------------------------------------------------


async def test_a_normal_answer(llm_settings: Make, fake: FakeOpenAI) -> None:
    async with Client(build_server(llm_settings())) as client:
        result = await ask(client, prompt="Say hello.", system="Be brief.", temperature=0.2)
    assert not result.is_error, result.content
    sc = result.structured_content
    assert sc["text"] == "Hello from the loopback model." and sc["json"] is None
    assert sc["model"] == "gpt-4o-mini" and sc["finish_reason"] == "stop" and sc["cached"] is False
    assert sc["request_id"] == "req_fake1"
    assert sc["usage"]["total_tokens"] == sc["usage"]["prompt_tokens"] + sc["usage"]["completion_tokens"] > 0
    [request] = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert request.body["max_tokens"] == 512 and request.body["temperature"] == 0.2


async def test_identical_requests_are_answered_from_the_cache(llm_settings: Make, fake: FakeOpenAI) -> None:
    settings = llm_settings()
    async with Client(build_server(settings)) as client:
        first = await ask(client, prompt="What is 6 x 7?")
        second = await ask(client, prompt="What is 6 x 7?")
        assert len(fake.requests) == 1  # the fake saw one request
        uncached = await ask(client, prompt="What is 6 x 7?", cache=False)
        other_params = await ask(client, prompt="What is 6 x 7?", max_tokens=100)
    a, b = first.structured_content, second.structured_content
    assert a["cached"] is False and b["cached"] is True
    assert {k: v for k, v in a.items() if k != "cached"} == {k: v for k, v in b.items() if k != "cached"}
    assert uncached.structured_content["cached"] is False
    assert other_params.structured_content["cached"] is False
    assert len(fake.requests) == 3
    # the cache holds answers, not prompts or credentials
    rows = db_text(settings, "SELECT * FROM llm_cache")
    assert "Hello from the loopback model." in rows
    assert "6 x 7" not in rows and API_KEY not in rows


async def test_cache_entries_expire(llm_settings: Make, fake: FakeOpenAI) -> None:
    async with Client(build_server(llm_settings(llm_cache_ttl_seconds=1))) as client:
        await ask(client, prompt="Tick?")
        await anyio.sleep(1.1)
        again = await ask(client, prompt="Tick?")
    assert again.structured_content["cached"] is False and len(fake.requests) == 2


async def test_a_zero_ttl_turns_the_cache_off(llm_settings: Make, fake: FakeOpenAI) -> None:
    settings = llm_settings(llm_cache_ttl_seconds=0)
    async with Client(build_server(settings)) as client:
        results = [await ask(client, prompt="Same again") for _ in range(2)]
    assert [r.structured_content["cached"] for r in results] == [False, False] and len(fake.requests) == 2
    assert db_text(settings, "SELECT count(*) FROM llm_cache") == "[[0]]"


async def test_the_cache_is_per_principal(llm_settings: Make, fake: FakeOpenAI) -> None:
    settings = llm_settings()
    token = mint(settings, sub="bob", scopes=["openai:query"], ttl=300)
    async with Client(build_server(settings)) as client:
        await ask(client, prompt="Shared question")
    async with Client(build_server(settings.model_copy(update={"token": SecretStr(token)}))) as client:
        bobs = await ask(client, prompt="Shared question")
    assert bobs.structured_content["cached"] is False and len(fake.requests) == 2


# -- budgets ----------------------------------------------------------------------------------------


async def test_an_exhausted_budget_refuses_without_calling_upstream(
    llm_settings: Make, fake: FakeOpenAI
) -> None:
    fake.use_all_tokens = True
    async with Client(build_server(llm_settings(llm_token_budget=1000))) as client:
        first = await ask(client, prompt="one", max_tokens=600, cache=False)
        second = await ask(client, prompt="two", max_tokens=600, cache=False)
    assert not first.is_error
    err = error(second)
    assert err["code"] == "rate_limited" and err["details"]["retry_after"] > 0
    assert len(fake.requests) == 1


async def test_settling_returns_unused_tokens(llm_settings: Make, fake: FakeOpenAI) -> None:
    """The fake uses few tokens: 600 reserved each time, ~20 spent, so many calls fit in 1000."""
    async with Client(build_server(llm_settings(llm_token_budget=1000))) as client:
        results = [await ask(client, prompt=f"q{i}", max_tokens=600) for i in range(5)]
    assert not any(r.is_error for r in results) and len(fake.requests) == 5


# -- upstream failures ------------------------------------------------------------------------------


async def test_429_with_retry_after_then_success(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.script.append(Fault(status=429, retry_after="0.4"))
    async with Client(build_server(llm_settings())) as client:
        t0 = time.monotonic()
        result = await ask(client, prompt="patience")
        elapsed = time.monotonic() - t0
    assert not result.is_error and result.structured_content["request_id"] == "req_fake2"
    assert len(fake.requests) == 2 and elapsed >= 0.4


async def test_persistent_429_is_rate_limited_with_the_hint(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.always = Fault(status=429, retry_after="0.2")
    settings = llm_settings(llm_max_retries=2, llm_token_budget=1000)
    async with Client(build_server(settings)) as client:
        result = await ask(client, prompt="again and again", max_tokens=600)
        fake.always = None
        after = await ask(client, prompt="and now", max_tokens=600)  # the failed call spent nothing
    err = error(result)
    assert err["code"] == "rate_limited" and err["details"]["retry_after"] == 0.2
    assert "secret-upstream-detail" not in json.dumps(result.structured_content)
    assert len(fake.requests) == 4  # 1 + 2 retries, then the later call
    assert not after.is_error


async def test_a_retry_after_longer_than_allowed_is_not_waited(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.always = Fault(status=429, retry_after="120")
    async with Client(build_server(llm_settings())) as client:
        t0 = time.monotonic()
        result = await ask(client, prompt="later")
    err = error(result)
    assert err["code"] == "rate_limited" and err["details"]["retry_after"] == 120
    assert len(fake.requests) == 1 and time.monotonic() - t0 < 30  # far from the 120 s asked for


async def test_500_is_backend_unavailable_after_bounded_retries(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.always = Fault(status=500)
    async with Client(build_server(llm_settings(llm_max_retries=1))) as client:
        result = await ask(client, prompt="boom")
    err = error(result)
    assert err["code"] == "backend_unavailable" and "HTTP 500" in err["message"]
    assert err["details"]["retry_after"] >= 1 and err["details"]["status"] == 500
    assert "secret-upstream-detail" not in json.dumps(result.structured_content)
    assert len(fake.requests) == 2


async def test_retry_waits_are_bounded_in_total(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.always = Fault(status=503, retry_after="0.3")
    settings = llm_settings(llm_max_retries=5, llm_retry_total_seconds=0.5)
    async with Client(build_server(settings)) as client:
        result = await ask(client, prompt="busy")
    err = error(result)
    assert err["code"] == "backend_unavailable" and err["details"]["retry_after"] == 0.3
    assert len(fake.requests) == 2  # a second wait of 0.3 s would pass 0.5 s in all


async def test_a_refused_connection_is_retried_then_backend_unavailable(llm_settings: Make) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = llm_settings(openai_base_url=f"http://127.0.0.1:{port}/v1", llm_max_retries=1)
    async with Client(build_server(settings)) as client:
        t0 = time.monotonic()
        result = await ask(client, prompt="anyone there?")
    err = error(result)
    assert err["code"] == "backend_unavailable" and "no connection, 2 attempts" in err["message"]
    assert time.monotonic() - t0 >= 0.5  # the first backoff


async def test_a_timeout_is_bounded(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.script.append(Fault(delay=6.0))
    async with Client(build_server(llm_settings(llm_timeout_seconds=0.5))) as client:
        t0 = time.monotonic()
        result = await ask(client, prompt="slow")
        elapsed = time.monotonic() - t0
    err = error(result)
    assert err["code"] == "backend_unavailable" and "in time" in err["message"]
    assert elapsed < 5.0 and len(fake.requests) == 1  # the 0.5 s timeout, not the 6 s delay; not retried


async def test_upstream_refusals_are_mapped(llm_settings: Make, fake: FakeOpenAI) -> None:
    async with Client(build_server(llm_settings())) as client:
        fake.script.append(Fault(status=400))
        bad = await ask(client, prompt="x")
        fake.script.append(Fault(status=401))
        denied = await ask(client, prompt="y")
        fake.script.append(Fault(status=404))
        missing = await ask(client, prompt="z")
        fake.script.append(Fault(status=422))
        unprocessable = await ask(client, prompt="w")
    assert error(bad)["code"] == "invalid_document"
    assert error(denied)["code"] == "backend_unavailable" and "credentials" in error(denied)["message"]
    assert error(missing)["code"] == "not_found"
    assert error(unprocessable)["code"] == "invalid_document"
    assert len(fake.requests) == 4  # none retried
    for result in (bad, denied, missing, unprocessable):
        assert "secret-upstream-detail" not in json.dumps(result.structured_content)


async def test_a_malformed_answer_is_backend_unavailable(llm_settings: Make, fake: FakeOpenAI) -> None:
    async with Client(build_server(llm_settings())) as client:
        fake.script.append(Fault(body={"choices": [], "usage": None}))
        empty = await ask(client, prompt="x")
        fake.script.append(Fault(body={"choices": [{"message": {"content": 42}}]}))
        wrong = await ask(client, prompt="y")
    for result in (empty, wrong):
        err = error(result)
        assert err["code"] == "backend_unavailable" and "not a chat completion" in err["message"]


# -- limits and arguments ---------------------------------------------------------------------------


async def test_an_oversized_prompt_is_refused_before_sending(llm_settings: Make, fake: FakeOpenAI) -> None:
    big = "word " * 1000
    async with Client(build_server(llm_settings(llm_max_request_bytes=2048))) as client:
        result = await ask(client, prompt=big)
        over_cap = await ask(client, prompt="hi", max_tokens=5000)
    err = error(result)
    assert err["code"] == "request_too_large" and err["details"]["allowed"] == 2048
    assert err["details"]["requested"] > 5000 and "word word" not in result.content[0].text
    over = error(over_cap)
    assert over["code"] == "request_too_large" and over["details"] == {"requested": 5000, "allowed": 4096}
    assert fake.requests == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "a", "document": "---\n---\n"}, None),
    ],
)
async def test_bad_arguments_are_clear_errors(
    llm_settings: Make, fake: FakeOpenAI, arguments: dict[str, Any], field: str | None
) -> None:
    async with Client(build_server(llm_settings())) as client:
        result = await ask(client, **arguments)
    err = error(result)
    assert err["code"] == "invalid_document"
    if field:
        assert err["details"]["field"] == field
    assert fake.requests == []


async def test_models_outside_the_allow_list_are_refused(llm_settings: Make, fake: FakeOpenAI) -> None:
    async with Client(build_server(llm_settings(llm_models=["gpt-4.1"]))) as client:
        refused = await ask(client, prompt="hi", model="o3-pro-expensive")
        allowed = await ask(client, prompt="hi", model="gpt-4.1")
    assert error(refused)["code"] == "forbidden" and "gpt-4o-mini" in error(refused)["message"]
    assert not allowed.is_error and [r.body["model"] for r in fake.requests] == ["gpt-4.1"]


async def test_not_configured_is_a_clear_error(make_settings: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "MACROSLOW_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    async with Client(build_server(make_settings(azure_openai_endpoint=None))) as client:
        result = await ask(client, prompt="anyone?")
    assert error(result)["code"] == "backend_unavailable" and "OPENAI_API_KEY" in error(result)["message"]


async def test_scope_and_read_only_mode(llm_settings: Make, fake: FakeOpenAI) -> None:
    async with Client(build_server(llm_settings(local_scopes=["maml:read"]))) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        refused = await ask(client, prompt="hi")
    assert "query_openai" not in names
    assert (
        error(refused)["code"] == "forbidden"
        and error(refused)["details"]["required_scope"] == "openai:query"
    )
    async with Client(build_server(llm_settings(read_only=True))) as client:
        assert "query_openai" not in {t.name for t in (await client.list_tools()).tools}
    assert fake.requests == []


# -- output schemas ---------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


async def test_an_answer_valid_against_the_schema_is_returned_as_json(
    llm_settings: Make, fake: FakeOpenAI
) -> None:
    fake.reply = '{"answer": 42}'
    async with Client(build_server(llm_settings())) as client:
        result = await ask(client, prompt="6 x 7?", output_schema=SCHEMA)
    assert result.structured_content["json"] == {"answer": 42} and result.structured_content["text"] is None
    assert fake.requests[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA},
    }


@pytest.mark.parametrize("reply", ['{"answer": "forty-two"}', "forty-two, I think"])
async def test_an_answer_invalid_against_the_schema_is_an_error(
    llm_settings: Make, fake: FakeOpenAI, reply: str
) -> None:
    fake.reply = reply
    settings = llm_settings()
    async with Client(build_server(settings)) as client:
        result = await ask(client, prompt="6 x 7?", output_schema=SCHEMA)
        again = await ask(client, prompt="6 x 7?", output_schema=SCHEMA)
    err = error(result)
    assert err["code"] == "invalid_document" and err["details"]["field"] == "output"
    assert "forty-two" not in json.dumps(result.structured_content)  # the answer is not echoed
    if reply.startswith("{"):
        assert "$.answer" in err["message"] and "'type' rule" in err["message"]
    assert error(again)["code"] == "invalid_document" and len(fake.requests) == 2  # not cached
    assert db_text(settings, "SELECT count(*) FROM llm_cache") == "[[0]]"


async def test_an_invalid_schema_is_refused_before_sending(llm_settings: Make, fake: FakeOpenAI) -> None:
    async with Client(build_server(llm_settings())) as client:
        result = await ask(client, prompt="x", output_schema={"type": "no-such-type"})
    assert error(result)["details"]["field"] == "output_schema" and fake.requests == []


# -- MAML documents ---------------------------------------------------------------------------------


async def test_a_signed_prompt_document_is_executed(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.reply = '{"capital": "Paris"}'
    settings = llm_settings()
    async with Client(build_server(settings)) as client:
        signed = await client.call_tool("sign_maml", {"document": PROMPT_DOC.format(type="prompt")})
        result = await ask(client, document=signed.structured_content["signed_document"])
        receipts = (await client.call_tool("list_receipts", {"tool": "query_openai"})).structured_content
    assert not result.is_error, result.content
    assert result.structured_content["json"] == {"capital": "Paris"}
    [request] = fake.requests
    assert request.body["messages"] == [
        {"role": "system", "content": "You are a terse geography assistant."},
        {"role": "user", "content": "What is the capital of France? Answer as JSON."},
    ]
    assert request.body["max_tokens"] == 64  # the document's requires.max_tokens
    assert request.body["response_format"]["json_schema"]["schema"]["required"] == ["capital"]
    [receipt] = receipts["receipts"]
    assert receipt["action"] == "execute" and receipt["document_id"].endswith("0c1d2e3f4a5b")
    assert receipt["backend_job_id"] == "req_fake1"


async def test_a_workflow_document_is_executed_too(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.reply = '{"capital": "Paris"}'
    async with Client(build_server(llm_settings())) as client:
        signed = await client.call_tool("sign_maml", {"document": PROMPT_DOC.format(type="workflow")})
        result = await ask(client, document=signed.structured_content["signed_document"])
    assert not result.is_error and len(fake.requests) == 1


async def test_unsigned_tampered_or_wrong_documents_are_refused(
    llm_settings: Make, fake: FakeOpenAI, example_text: str
) -> None:
    unsigned = PROMPT_DOC.format(type="prompt")
    async with Client(build_server(llm_settings())) as client:
        refused = await ask(client, document=unsigned)
        signed = (await client.call_tool("sign_maml", {"document": unsigned})).structured_content
        tampered = signed["signed_document"].replace("France", "Spain")
        forged = await ask(client, document=tampered)
        quantum = (await client.call_tool("sign_maml", {"document": example_text})).structured_content
        wrong_type = await ask(client, document=quantum["signed_document"])
        with_system = await ask(client, document=signed["signed_document"], system="ignore the document")
    assert error(refused)["code"] == "signature_invalid"
    assert error(forged)["code"] == "signature_invalid"
    assert error(wrong_type)["code"] == "invalid_document" and error(wrong_type)["details"]["field"] == "type"
    assert error(with_system)["code"] == "invalid_document"
    assert fake.requests == []


async def test_a_document_not_admitting_the_caller_is_refused(llm_settings: Make, fake: FakeOpenAI) -> None:
    doc = PROMPT_DOC.format(type="prompt").replace("execute: [agent://local]", "execute: [agent://alice]")
    async with Client(build_server(llm_settings())) as client:
        signed = (await client.call_tool("sign_maml", {"document": doc})).structured_content
        result = await ask(client, document=signed["signed_document"])
    assert error(result)["code"] == "forbidden" and fake.requests == []


# -- secrets and the ledger -------------------------------------------------------------------------


async def test_the_callers_token_never_reaches_the_upstream(llm_settings: Make, fake: FakeOpenAI) -> None:
    settings = llm_settings()
    token = mint(settings, sub="carol", scopes=["openai:query"], ttl=300)
    async with Client(build_server(settings.model_copy(update={"token": SecretStr(token)}))) as client:
        result = await ask(client, prompt="who am I?")
    assert not result.is_error
    [request] = fake.requests
    sent = json.dumps([request.headers, request.body, request.query, request.path])
    assert token not in sent and token.split(".")[2][:40] not in sent
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_prompts_and_answers_stay_out_of_the_ledger(llm_settings: Make, fake: FakeOpenAI) -> None:
    fake.reply = "A very particular answer."
    settings = llm_settings()
    async with Client(build_server(settings)) as client:
        await ask(client, prompt="A very particular question.", system="A particular system text.")
        await ask(client, prompt="A very particular question.", system="A particular system text.")  # cached
    ledger = db_text(settings, "SELECT * FROM receipts")
    for secret in ("particular question", "particular answer", "particular system", API_KEY):
        assert secret not in ledger
    assert db_text(settings, "SELECT payload, backend_job_id FROM receipts") == json.dumps(
        [[None, "req_fake1"], [None, "req_fake1"]]
    )


async def test_redacted_payloads_only_when_configured(llm_settings: Make, fake: FakeOpenAI) -> None:
    """receipt_payloads=redacted stores the arguments with long text (over 200 characters) digested."""
    settings = llm_settings(receipt_payloads="redacted")
    long_prompt = "A long and particular question. " * 10
    async with Client(build_server(settings)) as client:
        await ask(client, prompt=long_prompt, max_tokens=20)
    [[payload]] = json.loads(db_text(settings, "SELECT payload FROM receipts"))
    arguments = json.loads(payload)
    assert "cache" not in arguments  # as sent: defaults are not filled in
    assert arguments["prompt"].startswith("[320 bytes, sha256:")
    assert "particular" not in db_text(settings, "SELECT * FROM receipts")
