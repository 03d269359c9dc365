"""The policy as a client sees it, through the SDK's in-memory client against `build_server`."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from mcp_server.adapters import error_of
from mcp_server.auth.local_issuer import mint
from mcp_server.home import EXAMPLE_NAME, example_workflow
from mcp_server.server import build_server
from mcp_server.settings import Settings

pytestmark = pytest.mark.anyio

READ_LINE = "  read: [agent://*, scope:maml:read]\n"
WRITE_LINE = "  write: [agent://local]\n"
EXAMPLE_ID = "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"


def readable_only_by(sub: str, doc_id: str) -> str:
    """The example, readable (and writable) only by agent://<sub>, with its own id."""
    text = example_workflow()
    for old, new in (
        (READ_LINE, f"  read: [agent://{sub}]\n"),
        (WRITE_LINE, f"  write: [agent://{sub}]\n"),
        (EXAMPLE_ID, doc_id),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


async def tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def listing(client: Client) -> dict[str, str]:
    """File name -> document id of the workflows the caller is shown."""
    data = json.loads((await client.read_resource("maml://workflows")).contents[0].text)
    return {e["file"]: e["id"] for e in data["workflows"]}


async def test_limited_scopes_hide_and_refuse_tools(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(local_scopes=["maml:read"])
    async with Client(build_server(settings)) as client:
        assert await tool_names(client) == {"validate_maml", "verify_maml"}
        result = await client.call_tool("sign_maml", {"document": example_workflow()})
        valid = await client.call_tool("validate_maml", {"document": example_workflow()})
    assert result.is_error
    error = error_of(result)
    assert error["code"] == "forbidden"
    assert "maml:sign" in error["message"]
    assert error["details"]["required_scope"] == "maml:sign"
    assert result.content[0].text.startswith("forbidden: ")
    assert not valid.is_error and valid.structured_content["valid"] is True


async def test_all_scopes_show_all_tools(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        assert await tool_names(client) == {
            "validate_maml",
            "sign_maml",
            "verify_maml",
            "list_receipts",
            "verify_receipt",
            "run_quantum_circuit",
            "cancel_job",
            "query_openai",
            "encrypt_maml",
            "decrypt_maml",
        }


async def test_no_read_scope_hides_the_resources(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(local_scopes=["maml:sign"])
    async with Client(build_server(settings)) as client:
        assert await tool_names(client) == {"sign_maml"}
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        with pytest.raises(MCPError) as info:
            await client.read_resource("maml://workflows")
    assert info.value.code == -32003
    assert info.value.data["details"]["required_scope"] == "maml:read"


async def test_reading_a_workflow_the_caller_may_not_read(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(local_scopes=["maml:read"])
    (settings.workflows_path / EXAMPLE_NAME).write_text(
        readable_only_by("someone-else", EXAMPLE_ID), encoding="utf-8"
    )
    async with Client(build_server(settings)) as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource("maml://workflows/ghz")
        with pytest.raises(MCPError) as by_id:
            await client.read_resource(f"maml://workflows/{EXAMPLE_ID}")
    for error in (info.value, by_id.value):
        assert error.code == -32003
        assert error.data["code"] == "forbidden"
        assert error.data["details"]["permission"] == "read"
        assert "agent://local" in error.message
        assert "GHZ" not in error.message  # the document's text is not revealed


async def test_listing_leaves_out_what_the_caller_may_not_read(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(local_scopes=["maml:read"])
    hidden_id = "urn:uuid:00000000-0000-4000-8000-000000000001"
    (settings.workflows_path / "hidden.maml.md").write_text(
        readable_only_by("someone-else", hidden_id), encoding="utf-8"
    )
    async with Client(build_server(settings)) as client:
        shown = await listing(client)
        readable = (await client.read_resource("maml://workflows/ghz")).contents[0].text
    assert shown == {EXAMPLE_NAME: EXAMPLE_ID}
    assert readable == example_workflow()


async def test_token_caller_is_that_agent(make_settings: Callable[..., Settings]) -> None:
    token = mint(make_settings(), sub="bob", scopes=["maml:read"], ttl=300)
    settings = make_settings(token=token)
    wf = settings.workflows_path
    (wf / "for-bob.maml.md").write_text(
        readable_only_by("bob", "urn:uuid:00000000-0000-4000-8000-00000000000b"), encoding="utf-8"
    )
    (wf / "for-local.maml.md").write_text(
        readable_only_by("local", "urn:uuid:00000000-0000-4000-8000-00000000000c"), encoding="utf-8"
    )
    async with Client(build_server(settings)) as client:
        assert await tool_names(client) == {"validate_maml", "verify_maml"}
        signed = await client.call_tool("sign_maml", {"document": example_workflow()})
        shown = await listing(client)
        bobs = (await client.read_resource("maml://workflows/for-bob")).contents[0].text
        with pytest.raises(MCPError) as info:
            await client.read_resource("maml://workflows/for-local")
    assert signed.is_error and error_of(signed)["code"] == "forbidden"
    assert "maml:sign" in error_of(signed)["message"]
    assert set(shown) == {EXAMPLE_NAME, "for-bob.maml.md"}  # the example is readable by agent://*
    assert "agent://bob" in bobs
    assert info.value.data["code"] == "forbidden" and "agent://bob" in info.value.message


async def test_garbage_token_is_unauthenticated_everywhere(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(token="garbage")
    async with Client(build_server(settings)) as client:
        assert (await client.list_tools()).tools == []
        assert (await client.list_resources()).resources == []
        results = [
            await client.call_tool(name, {"document": example_workflow()})
            for name in ("validate_maml", "sign_maml", "verify_maml")
        ]
        with pytest.raises(MCPError) as info:
            await client.read_resource("maml://workflows")
    for result in results:
        assert result.is_error
        assert error_of(result)["code"] == "unauthenticated"
        assert "garbage" not in result.content[0].text
    assert info.value.code == -32001 and info.value.data["code"] == "unauthenticated"


async def test_read_only_server_hides_sign(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings(read_only=True))) as client:
        assert await tool_names(client) == {
            "validate_maml",
            "verify_maml",
            "list_receipts",
            "verify_receipt",
            "encrypt_maml",
            "decrypt_maml",
        }
        result = await client.call_tool("sign_maml", {"document": example_workflow()})
    assert result.is_error and error_of(result)["code"] == "forbidden"
    assert "read-only" in error_of(result)["message"]


async def test_filtered_lists_are_private_to_the_caller(make_settings: Callable[..., Settings]) -> None:
    """A list filtered for one caller must never be cached and shown to another, even where the
    server's cache hints would call it public."""
    from types import SimpleNamespace

    from mcp_server.admission import Admission
    from mcp_server.visibility import ScopeVisibility

    state = Admission(make_settings(local_scopes=["maml:read"]))
    listing = {
        "tools": [{"name": "verify_maml"}, {"name": "sign_maml"}],
        "cacheScope": "public",
        "ttlMs": 60_000,
    }

    async def call_next(_: object) -> dict[str, object]:
        return listing

    result = await ScopeVisibility(state)(SimpleNamespace(method="tools/list"), call_next)  # type: ignore[arg-type]
    assert result == {"tools": [{"name": "verify_maml"}], "cacheScope": "private", "ttlMs": 60_000}
