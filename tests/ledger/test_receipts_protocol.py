"""Receipts through the MCP interface: one per call, denials and failures included; who sees what."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from mcp_server.adapters import error_of
from mcp_server.auth.local_issuer import mint
from mcp_server.home import example_workflow, open_keys
from mcp_server.server import build_server
from mcp_server.settings import Settings

pytestmark = pytest.mark.anyio


async def receipts(client: Client, **filters: Any) -> list[dict[str, Any]]:
    result = await client.call_tool("list_receipts", {"limit": 500, **filters})
    assert not result.is_error, result.content
    return list(result.structured_content["receipts"])


async def test_every_call_leaves_exactly_one_receipt(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        signed = await client.call_tool("sign_maml", {"document": example_workflow()})
        await client.call_tool("verify_maml", {"document": signed.structured_content["signed_document"]})
        await client.call_tool("validate_maml", {"document": "not maml"})
        await client.call_tool("sign_maml", {"document": "not maml"})
        rows = await receipts(client)
    # newest first; the list call itself is receipted after it answers, so it is not in its own page
    assert [r["tool"] for r in rows] == ["sign_maml", "validate_maml", "verify_maml", "sign_maml"]
    assert [r["seq"] for r in rows] == [3, 2, 1, 0]
    first = rows[-1]
    assert first["decision"] == "allowed" and first["outcome"] == "ok" and first["action"] == "write"
    assert first["document_id"] == "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
    assert first["document_digest"] == signed.structured_content["digest"]
    assert first["result_digest"].startswith("sha256:") and first["arguments_digest"].startswith("sha256:")
    assert rows[0]["decision"] == "denied" and rows[0]["outcome"] == "invalid_document"
    # digests only: no document text in the ledger
    blob = json.dumps(rows)
    assert "Greenberger" not in blob and "not maml" not in blob


async def test_a_denial_leaves_a_receipt(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings(local_scopes=["maml:read", "receipts:read"]))) as client:
        refused = await client.call_tool("sign_maml", {"document": example_workflow()})
        rows = await receipts(client)
    assert refused.is_error
    [row] = rows
    assert row["tool"] == "sign_maml" and row["decision"] == "denied" and row["outcome"] == "forbidden"
    assert "maml:sign" in row["reason"]


async def test_a_backend_failure_leaves_a_receipt(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    async with Client(build_server(settings)) as client:
        await client.call_tool("verify_maml", {"document": "x"})  # the home and its default key exist
        other = open_keys(settings).generate()
        for key in settings.keys_path.glob(f"{other.key_id}*.key.pem"):
            key.chmod(0o644)  # the key store now refuses that private key (not the default one)
        failed = await client.call_tool("sign_maml", {"document": example_workflow(), "key_id": other.key_id})
        rows = [r for r in await receipts(client) if r["tool"] == "sign_maml"]
    assert failed.is_error and error_of(failed)["code"] == "key_error"
    [row] = rows
    assert row["decision"] == "allowed" and row["outcome"] == "key_error"
    assert row["reason"].startswith("key_error: ")


async def test_no_answer_without_a_signed_checkpoint(make_settings: Callable[..., Settings]) -> None:
    """With the log's signing key unusable no checkpoint can cover a receipt, so no result is
    answered: the caller gets backend_unavailable, not a result the log cannot vouch for."""
    from mcp_server.db import open_engine
    from mcp_server.home import initialize
    from mcp_server.ledger.store import Ledger

    settings = make_settings()
    initialize(settings, example=False)
    Ledger(open_engine(settings.database, durable=True), open_keys(settings)).engine.dispose()  # its key
    for key in settings.keys_path.glob("*.key.pem"):
        key.chmod(0o644)  # the key store now refuses every private key, the log's among them
    async with Client(build_server(settings)) as client:
        withheld = await client.call_tool("verify_maml", {"document": "x"})
    assert withheld.is_error and error_of(withheld)["code"] == "backend_unavailable"
    assert "covered by a signed checkpoint" in error_of(withheld)["message"]
    assert withheld.structured_content is None and "macroslow-mcp/receipt" not in (withheld.meta or {})


async def test_callers_see_only_their_own_receipts(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    bob = mint(settings, sub="bob", scopes=["maml:read", "receipts:read"], ttl=300)
    async with Client(build_server(settings)) as local:
        await local.call_tool("verify_maml", {"document": "x"})
        local_rows = await receipts(local)
    bob_settings = settings.model_copy(update={"token": SecretStr(bob)})
    async with Client(build_server(bob_settings)) as client:
        await client.call_tool("verify_maml", {"document": "x"})
        mine = await receipts(client)
        peek = await client.call_tool("list_receipts", {"principal": "agent://local"})
        other = await client.call_tool("verify_receipt", {"receipt_id": local_rows[0]["id"]})
        unknown = await client.call_tool("verify_receipt", {"receipt_id": "0" * 36})
        with pytest.raises(MCPError) as info:
            await client.read_resource(f"receipts://{local_rows[0]['id']}")
        with pytest.raises(MCPError) as unknown_info:
            await client.read_resource(f"receipts://{'0' * 36}")
    assert {r["principal"] for r in mine} == {"agent://bob"}
    assert peek.is_error and error_of(peek)["code"] == "forbidden"
    assert "receipts:audit" in error_of(peek)["message"]
    # Another caller's receipt answers as an unknown one does (no existence oracle), and the
    # caller's own receipts of the two calls say the same.
    assert other.is_error and error_of(other)["code"] == "not_found"
    hidden, absent = error_of(other)["message"], error_of(unknown)["message"]
    assert hidden.replace(local_rows[0]["id"], "ID") == absent.replace("0" * 36, "ID")
    assert info.value.code == unknown_info.value.code == -32002
    own = [r for r in mine if r["tool"] == "verify_receipt"]
    assert own == []  # listed before those calls; read them now
    async with Client(build_server(bob_settings)) as client:
        calls = [r for r in await receipts(client) if r["tool"] == "verify_receipt"]
    assert [(r["decision"], r["outcome"]) for r in calls] == [("allowed", "not_found")] * 2
    # the local principal holds receipts:audit and sees everyone's
    async with Client(build_server(settings)) as local:
        everyone = {r["principal"] for r in await receipts(local)}
    assert everyone == {"agent://local", "agent://bob"}


async def test_verify_receipt_and_the_mu_resource(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        await client.call_tool("sign_maml", {"document": example_workflow()})
        await client.call_tool("verify_maml", {"document": "x"})
        rows = await receipts(client)
        proof = await client.call_tool("verify_receipt", {"receipt_id": rows[-1]["id"]})
        mu = (await client.read_resource(rows[-1]["uri"])).contents[0]
        missing = await client.call_tool("verify_receipt", {"receipt_id": "nope"})
    assert not proof.is_error, proof.content
    sc = proof.structured_content
    assert sc["verified"] is True and sc["seq"] == 0 and sc["tree_size"] >= 2
    assert sc["checkpoint"].startswith("macroslow-mcp/receipts/")
    assert mu.mime_type == "text/markdown"
    _, front, body = mu.text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["mu_version"] == "1.0" and meta["type"] == "receipt" and meta["tool"] == "sign_maml"
    assert meta["source_maml"] == "urn:uuid:6f1c2a3e-8b4d-4e7a-9c1f-2d3b4a5c6e7f"
    assert meta["checkpoint"]["size"] >= 2
    assert "## History" in body and "agent://local called sign_maml" in body
    assert missing.is_error and error_of(missing)["code"] == "not_found"


async def test_paging_through_list_receipts(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as client:
        for _ in range(5):
            await client.call_tool("verify_maml", {"document": "x"})
        seen: list[int] = []
        cursor = None
        while True:
            args: dict[str, Any] = {"limit": 2, "tool": "verify_maml"}
            if cursor:
                args["cursor"] = cursor
            page = (await client.call_tool("list_receipts", args)).structured_content
            seen += [r["seq"] for r in page["receipts"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == [4, 3, 2, 1, 0]


async def test_no_receipt_no_result(make_settings: Callable[..., Settings]) -> None:
    """If the receipt cannot be written, the call's result is withheld."""
    settings = make_settings()
    server = build_server(settings)
    async with Client(server) as client:
        await server.host.ready()  # the ledger's tables exist (they are made when the services open)
        engine = create_engine(settings.database)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE receipts RENAME TO receipts_gone"))
        engine.dispose()
        result = await client.call_tool("sign_maml", {"document": example_workflow()})
    assert result.is_error and error_of(result)["code"] == "backend_unavailable"
    assert "signed_document" not in json.dumps(result.structured_content)


async def test_redacted_payloads_only_when_asked(make_settings: Callable[..., Settings]) -> None:
    from sqlalchemy import select

    from mcp_server.db import open_engine
    from mcp_server.ledger.models import ReceiptRow

    settings = make_settings(receipt_payloads="redacted")
    async with Client(build_server(settings)) as client:
        await client.call_tool("sign_maml", {"document": example_workflow(), "key_id": "0" * 32})
        await client.call_tool("verify_maml", {"document": "short text"})
    engine = open_engine(settings.database)
    with engine.connect() as conn:
        payloads = conn.execute(select(ReceiptRow.payload).order_by(ReceiptRow.seq)).scalars().all()
    engine.dispose()
    signed, short = (json.loads(p) for p in payloads)
    assert signed["key_id"] == "[redacted]"  # names that look like secrets are dropped
    assert signed["document"].startswith("[") and "bytes, sha256:" in signed["document"]
    assert "Greenberger" not in payloads[0]
    assert short == {"document": "short text"}  # the arguments as the caller sent them
    # by default (same database, setting off), the next receipt stores no payload
    async with Client(build_server(make_settings())) as client:
        await client.call_tool("verify_maml", {"document": "short text"})
    engine = open_engine(settings.database)
    with engine.connect() as conn:
        newest = conn.execute(select(ReceiptRow.payload).where(ReceiptRow.seq == 2)).scalar_one()
    engine.dispose()
    assert newest is None


async def test_a_page_of_receipts_fits_the_result_budget(make_settings: Callable[..., Settings]) -> None:
    """With a small budget, list_receipts cuts its page short (saying so) and its cursor continues
    exactly after the last receipt it kept: nothing skipped, nothing twice."""
    async with Client(build_server(make_settings(max_result_bytes=4096))) as client:
        for _ in range(12):
            await client.call_tool("verify_maml", {"document": "x"})
        seen: list[int] = []
        cursor = None
        trimmed = False
        while True:
            args = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            result = await client.call_tool("list_receipts", args)
            page = result.structured_content
            assert page is not None and len(json.dumps(page)) <= 4096
            trimmed = trimmed or page["trimmed"]
            seen += [r["seq"] for r in page["receipts"]]
            assert result.content[0].text.startswith(f"{len(page['receipts'])} receipts")
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert trimmed and seen == sorted(set(seen), reverse=True) and seen[-1] == 0
