"""The prompts through the in-memory client: listed with titles and arguments, each rendered, the
rules they teach checked against validate_maml, and every bad request answered -32602."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import EmbeddedResource, GetPromptResult, TextContent
from pydantic import SecretStr

from mcp_server.auth.local_issuer import mint
from mcp_server.home import example_workflow
from mcp_server.maml.model import SECTION_NAMES, DocumentType
from mcp_server.server import build_server
from mcp_server.settings import Settings
from prompts.audit_my_calls import parse_since

pytestmark = pytest.mark.anyio

EXAMPLE_ID = "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
PROMPT_DOC = """---
maml_version: "2.0"
id: urn:uuid:0b5c8a43-2f6e-4d1a-9c3b-7e8f9a0b1c2d
type: prompt
title: Name a colour
permissions:
  read: [agent://local]
  write: [agent://local]
  execute: [agent://local]
---
## Context
You answer with one word.

## Intent
Name a colour.
"""


def texts(result: GetPromptResult) -> str:
    """Every text of the prompt's messages, embedded resources included."""
    parts = []
    for message in result.messages:
        content = message.content
        if isinstance(content, TextContent):
            parts.append(content.text)
        elif isinstance(content, EmbeddedResource):
            parts.append(getattr(content.resource, "text", ""))
    return "\n".join(parts)


def as_bob(settings: Settings, scopes: list[str]) -> Settings:
    return settings.model_copy(update={"token": SecretStr(mint(settings, sub="bob", scopes=scopes, ttl=300))})


async def get_error(client: Client, name: str, arguments: dict[str, str] | None = None) -> MCPError:
    with pytest.raises(MCPError) as info:
        await client.get_prompt(name, arguments)
    return info.value


async def test_prompts_are_listed_with_titles_and_arguments(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        assert client.server_capabilities.prompts is not None
        assert client.server_capabilities.completions is not None
        listed = {p.name: p for p in (await client.list_prompts()).prompts}
    assert set(listed) == {"write_workflow", "run_workflow", "audit_my_calls"}
    assert listed["write_workflow"].title == "Write a MAML workflow"
    assert listed["run_workflow"].title == "Sign and run a workflow"
    assert listed["audit_my_calls"].title == "Audit my recent calls"
    arguments = {name: [(a.name, a.required) for a in p.arguments or []] for name, p in listed.items()}
    assert arguments == {
        "write_workflow": [("intent", True)],
        "run_workflow": [("workflow_id", True)],
        "audit_my_calls": [("since", False)],
    }
    for prompt in listed.values():
        assert prompt.description and all(a.description for a in prompt.arguments or [])


async def test_write_workflow_teaches_the_rules_the_server_enforces(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(max_document_bytes=65536, max_qubits=20)
    async with Client(build_server(settings)) as client:
        result = await client.get_prompt("write_workflow", {"intent": "a Bell pair, measured 2000 times"})
        text = texts(result)
        # What the rules say is refused is refused, and the example is accepted.
        checks = {
            "example": example_workflow(),
            "version as a number": example_workflow().replace('maml_version: "2.0"', "maml_version: 2.0"),
            "hex qubits": example_workflow().replace("qubits: 3", "qubits: 0x3"),
            "anchor": example_workflow().replace("shots: 1024", "shots: &n 1024"),
            "section twice": example_workflow() + "\n## Intent\nagain\n",
            "unclosed fence": example_workflow() + "\n```qasm\nh q[0];\n",
            "without origin": example_workflow().replace("origin: agent://local\n", ""),
        }
        valid = {}
        for name, document in checks.items():
            answer = await client.call_tool("validate_maml", {"document": document})
            valid[name] = answer.structured_content["valid"]
    assert result.description and "validate_maml" in result.description
    assert "a Bell pair, measured 2000 times" in text
    assert example_workflow() in text
    for section in SECTION_NAMES:
        assert f"## {section}" in text
    for kind in DocumentType:
        assert f"`{kind.value}`" in text
    assert "65536 bytes" in text and "20 qubits" in text  # this server's limits, not the defaults
    assert "validate_maml" in text and "`document`" in text and "sign_maml" in text
    assert valid == {
        "example": True,
        "version as a number": False,
        "hex qubits": False,
        "anchor": False,
        "section twice": False,
        "unclosed fence": False,
        "without origin": True,  # a control: leaving out an optional field stays valid
    }
    assert str(settings.home) not in text and "/tmp" not in text


async def test_run_workflow_walks_through_the_real_tools(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with Client(build_server(settings)) as client:
        by_id = await client.get_prompt("run_workflow", {"workflow_id": EXAMPLE_ID})
        by_name = await client.get_prompt("run_workflow", {"workflow_id": "ghz"})
        tools = {t.name: t for t in (await client.list_tools()).tools}
    text = texts(by_id)
    assert texts(by_name) == text
    attached = by_id.messages[-1].content
    assert isinstance(attached, EmbeddedResource)
    assert attached.resource.uri == f"maml://workflows/{EXAMPLE_ID}"
    assert getattr(attached.resource, "text", None) == example_workflow()
    steps = by_id.messages[0].content
    assert isinstance(steps, TextContent)
    # The tools it names exist, with the arguments it names.
    named = set(
        re.findall(r"\b(validate_maml|verify_maml|sign_maml|run_quantum_circuit|query_openai)\b", steps.text)
    )
    assert named == {"validate_maml", "verify_maml", "sign_maml", "run_quantum_circuit"}
    for tool, argument in [
        ("validate_maml", "document"),
        ("verify_maml", "document"),
        ("sign_maml", "document"),
        ("run_quantum_circuit", "circuit"),
        ("run_quantum_circuit", "shots"),
        ("run_quantum_circuit", "backend"),
        ("run_quantum_circuit", "seed"),
    ]:
        assert argument in tools[tool].input_schema["properties"]
        assert f"`{argument}`" in steps.text
    assert "It is unsigned now" in steps.text and "requires.shots = 1024" in steps.text
    assert "jobs://<job_id>" in steps.text
    assert str(settings.home) not in text


async def test_run_workflow_of_a_prompt_document_uses_query_openai(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    (settings.workflows_path / "colour.maml.md").write_text(PROMPT_DOC, encoding="utf-8")
    async with Client(build_server(settings)) as client:
        signed = await client.call_tool("sign_maml", {"document": PROMPT_DOC})
        (settings.workflows_path / "colour.maml.md").write_text(
            signed.structured_content["signed_document"], encoding="utf-8"
        )
        result = await client.get_prompt("run_workflow", {"workflow_id": "colour"})
    steps = texts(result)
    assert "query_openai" in steps and "run_quantum_circuit" not in steps
    assert "already signed by a trusted key" in steps and "call sign_maml" not in steps


async def test_run_workflow_hides_what_the_caller_may_not_read(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    (settings.workflows_path / "colour.maml.md").write_text(PROMPT_DOC, encoding="utf-8")
    async with Client(build_server(as_bob(settings, ["maml:read"]))) as client:
        hidden = await get_error(client, "run_workflow", {"workflow_id": "colour"})
        absent = await get_error(client, "run_workflow", {"workflow_id": "nothing-here"})
        shown = await client.get_prompt("run_workflow", {"workflow_id": "ghz"})
    assert hidden.code == absent.code == -32602
    assert hidden.error.message.replace("colour", "X") == absent.error.message.replace("nothing-here", "X")
    assert "workflow_id" in hidden.error.message
    # bob may not sign or run: the walk-through says so instead of sending him into a refusal
    steps = texts(shown)
    assert "lacks the scope maml:sign" in steps and "lacks the scope quantum:run" in steps


async def test_audit_my_calls(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        latest = texts(await client.get_prompt("audit_my_calls"))
        blank = texts(await client.get_prompt("audit_my_calls", {"since": "  "}))
        dated = texts(await client.get_prompt("audit_my_calls", {"since": "2026-07-01"}))
        relative = texts(await client.get_prompt("audit_my_calls", {"since": "24h"}))
        bad = await get_error(client, "audit_my_calls", {"since": "last tuesday"})
        # The time the prompt hands to list_receipts is one list_receipts compares correctly.
        await client.call_tool("validate_maml", {"document": "x"})
        hour_ago = re.search(r'`since` = "([^"]+)"', relative)
        assert hour_ago is not None
        recent = await client.call_tool("list_receipts", {"since": hour_ago[1]})
        future = parse_since((datetime.now(UTC) + timedelta(hours=1)).isoformat())
        none = await client.call_tool("list_receipts", {"since": future})
    for text in (latest, dated, relative):
        assert "list_receipts" in text and "verify_receipt" in text and "`receipt_id`" in text
        assert "`cursor`" in text and "receipts://<id>" in text
    assert latest == blank and "`since`" not in latest
    assert '`since` = "2026-07-01T00:00:00.000000Z"' in dated
    assert bad.code == -32602 and "since" in bad.error.message and "last tuesday" not in bad.error.message
    assert [r["tool"] for r in recent.structured_content["receipts"]] == ["validate_maml"]
    assert none.structured_content["receipts"] == []


def test_parse_since_forms() -> None:
    now = datetime(2026, 7, 28, 12, 0, tzinfo=UTC)
    assert parse_since("2026-07-01", now) == "2026-07-01T00:00:00.000000Z"
    assert parse_since("2026-07-01T09:30:00+02:00", now) == "2026-07-01T07:30:00.000000Z"
    assert parse_since("2026-07-01T09:30:00Z", now) == "2026-07-01T09:30:00.000000Z"
    assert parse_since("7d", now) == "2026-07-21T12:00:00.000000Z"
    assert parse_since("3H", now) == "2026-07-28T09:00:00.000000Z"


@pytest.mark.parametrize(
    ("name", "arguments", "names"),
    [
        ("write_workflow", None, "intent"),
        ("write_workflow", {}, "intent"),
        ("write_workflow", {"intent": "   "}, "intent"),
        ("write_workflow", {"intent": "x", "colour": "red"}, "colour"),
        ("write_workflow", {"intent": "x" * 4001}, "intent"),
        ("run_workflow", {}, "workflow_id"),
        ("audit_my_calls", {"until": "2026-01-01"}, "until"),
    ],
)
async def test_bad_arguments_are_invalid_params(
    make_settings: Callable[..., Settings], name: str, arguments: dict[str, str] | None, names: str
) -> None:
    async with Client(build_server(make_settings())) as client:
        error = await get_error(client, name, arguments)
    assert error.code == -32602
    assert f"'{names}'" in error.error.message and name in error.error.message


async def test_unknown_prompt_is_invalid_params(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        error = await get_error(client, "no_such_prompt", {"x": "y"})
    assert error.code == -32602
    assert "no_such_prompt" in error.error.message and "write_workflow" in error.error.message


async def test_prompts_follow_the_callers_scopes(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with Client(build_server(as_bob(settings, ["maml:read"]))) as client:
        listed = [p.name for p in (await client.list_prompts()).prompts]
        refused = await get_error(client, "audit_my_calls")
        allowed = await client.get_prompt("write_workflow", {"intent": "a coin toss"})
    assert sorted(listed) == ["run_workflow", "write_workflow"]
    assert refused.code == -32003
    data: Any = refused.error.data
    assert data["code"] == "forbidden" and data["details"]["required_scope"] == "receipts:read"
    assert allowed.messages
