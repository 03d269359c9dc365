"""Protocol tests through the SDK's in-memory client against `build_server`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from mcp_server.adapters import error_of
from mcp_server.home import EXAMPLE_NAME, example_workflow, initialize
from mcp_server.server import build_server
from mcp_server.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    initialize(s)
    return s


async def test_tools_are_typed_and_annotated(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    read_only = {"validate_maml", "verify_maml", "list_receipts", "verify_receipt"}
    read_only |= {"encrypt_maml", "decrypt_maml"}  # they return text and change nothing
    # sign_maml uses the server's key on the caller's behalf: never read-only (a host that
    # auto-approves read-only tools must ask before it)
    assert set(tools) == read_only | {"sign_maml", "run_quantum_circuit", "cancel_job", "query_openai"}
    for tool in tools.values():
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (tool.name in read_only), tool.name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        assert tool.description and len(tool.description) > 40
        assert all(p.get("description") for p in tool.input_schema["properties"].values()), tool.name
    assert set(tools["verify_maml"].output_schema["properties"]) >= {"valid", "trusted", "key_id", "reasons"}


async def test_sign_then_verify_round_trip(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        signed = await client.call_tool("sign_maml", {"document": example_workflow()})
        assert not signed.is_error
        sc = signed.structured_content
        assert (
            sc["algorithm"] == "ML-DSA-65" and len(sc["key_id"]) == 32 and sc["digest"].startswith("sha256:")
        )
        assert json.loads(signed.content[0].text) == sc
        verified = await client.call_tool("verify_maml", {"document": sc["signed_document"]})
    assert verified.structured_content == {
        "valid": True,
        "trusted": True,
        "signed": True,
        "document_id": sc["document_id"],
        "key_id": sc["key_id"],
        "algorithm": "ML-DSA-65",
        "digest": sc["digest"],
        "reasons": [],
    }


async def test_tampered_and_garbage_documents_are_answers_not_crashes(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        signed = (await client.call_tool("sign_maml", {"document": example_workflow()})).structured_content
        text = signed["signed_document"]
        tampered = text.replace("Prepare a three-qubit", "Prepare a four-qubit")
        for document in (tampered, "not a maml document", "---\nid: [\n---\n", ""):
            result = await client.call_tool("verify_maml", {"document": document})
            assert not result.is_error
            assert result.structured_content["valid"] is False
            assert result.structured_content["reasons"]


async def test_validate_reports_field_and_line(settings: Settings) -> None:
    bad = example_workflow().replace("type: quantum_workflow", "type: spaceship")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("validate_maml", {"document": bad})
    sc = result.structured_content
    assert sc["valid"] is False
    assert sc["errors"][0]["field"] == "type" and sc["errors"][0]["line"] == 4


async def test_sign_errors_have_stable_codes(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        invalid = await client.call_tool("sign_maml", {"document": "no front matter"})
        unknown_key = await client.call_tool(
            "sign_maml", {"document": example_workflow(), "key_id": "0" * 32}
        )
        bad_key = await client.call_tool("sign_maml", {"document": example_workflow(), "key_id": "../../etc"})
    assert invalid.is_error and error_of(invalid)["code"] == "invalid_document"
    assert invalid.content[0].text.startswith("invalid_document: ")
    assert unknown_key.is_error and error_of(unknown_key)["code"] == "not_found"
    assert bad_key.is_error and error_of(bad_key)["code"] == "key_error"


async def test_oversized_document_is_refused_before_parsing(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "h", max_document_bytes=4096, _env_file=None)  # type: ignore[call-arg]
    big = example_workflow() + "x" * 5000
    async with Client(build_server(s)) as client:
        for tool in ("validate_maml", "sign_maml", "verify_maml"):
            result = await client.call_tool(tool, {"document": big})
            assert result.is_error, tool
            error = error_of(result)
            assert error["code"] == "request_too_large"
            assert error["details"] == {"requested": len(big.encode()), "allowed": 4096}
            assert "xxxx" not in result.content[0].text  # the document is not echoed back


async def test_workflow_resources(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        listing = json.loads((await client.read_resource("maml://workflows")).contents[0].text)
        [entry] = listing["workflows"]
        assert entry["file"] == EXAMPLE_NAME and entry["signature"] == "unsigned"
        by_id = (await client.read_resource(entry["uri"])).contents[0]
        by_name = (await client.read_resource("maml://workflows/ghz")).contents[0]
    assert by_id.text == by_name.text == example_workflow()
    assert by_id.mime_type == "text/markdown"


async def test_workflow_listing_reports_signature_status(settings: Settings) -> None:
    wf = settings.workflows_path
    async with Client(build_server(settings)) as client:
        signed = (await client.call_tool("sign_maml", {"document": example_workflow()})).structured_content
        (wf / EXAMPLE_NAME).write_text(signed["signed_document"])
        (wf / "tampered.maml.md").write_text(signed["signed_document"].replace("three", "four", 1))
        (wf / "broken.maml.md").write_text("---\nnot: [closed\n---\n")
        listing = json.loads((await client.read_resource("maml://workflows")).contents[0].text)
    status = {e["file"]: e["signature"] for e in listing["workflows"]}
    # A document that does not parse has no permissions that could admit anyone: it is not listed.
    assert status == {EXAMPLE_NAME: "trusted", "tampered.maml.md": "invalid"}


@pytest.mark.parametrize(
    "uri",
    [
        "maml://workflows/..%2F..%2Fetc%2Fpasswd",
        "maml://workflows/%2Fetc%2Fpasswd",
        "maml://workflows/../secret",
        "maml://workflows/secret",
        "maml://workflows/outside",
        "maml://workflows/urn:uuid:00000000-0000-0000-0000-000000000000",
    ],
)
async def test_workflow_lookup_never_leaves_the_directory(
    settings: Settings, tmp_path: Path, uri: str
) -> None:
    secret = tmp_path / "secret.maml.md"
    secret.write_text(example_workflow().replace("GHZ state", "SECRET"))
    os.symlink(secret, settings.workflows_path / "outside.maml.md")
    async with Client(build_server(settings)) as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource(uri)
        listing = (await client.read_resource("maml://workflows")).contents[0].text
    assert "SECRET" not in str(info.value) and "SECRET" not in listing
    assert "outside" not in listing
