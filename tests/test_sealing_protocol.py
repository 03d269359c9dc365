"""encrypt_maml / decrypt_maml through the in-memory MCP client, and `seal` / `open` on the CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client

from mcp_server import sealing
from mcp_server.adapters import error_of
from mcp_server.home import example_workflow, open_kem_keys, open_keys
from mcp_server.server import build_server
from mcp_server.settings import Settings
from mcp_server.signing import sign_document
from tests.test_cli import run

pytestmark = pytest.mark.anyio

READ_LINE = "  read: [agent://*, scope:maml:read]\n"
WRITE_LINE = "  write: [agent://local]\n"
SECRET_WORD = "Greenberger"  # in the example's body: must never reach a caller who may not read it


def readable_only_by(sub: str) -> str:
    text = example_workflow()
    for old, new in ((READ_LINE, f"  read: [agent://{sub}]\n"), (WRITE_LINE, f"  write: [agent://{sub}]\n")):
        assert text.count(old) == 1
        text = text.replace(old, new)
    return text


async def receipts(client: Client) -> list[dict[str, Any]]:
    result = await client.call_tool("list_receipts", {"limit": 100})
    assert not result.is_error, result.content
    return list(result.structured_content["receipts"])


def with_recipient_key(settings: Settings) -> str:
    return str(open_kem_keys(settings).generate().key_id)


async def test_encrypt_then_decrypt_round_trip(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    kid = with_recipient_key(settings)
    signed = sign_document(example_workflow(), open_keys(settings)).signed_document
    async with Client(build_server(settings)) as client:
        enc = await client.call_tool("encrypt_maml", {"document": signed, "recipients": [kid]})
        assert not enc.is_error, enc.content
        sealed = enc.structured_content["sealed"]
        assert SECRET_WORD not in sealed and enc.structured_content["recipients"] == [kid]
        dec = await client.call_tool("decrypt_maml", {"sealed": sealed})
        assert not dec.is_error, dec.content
        rows = await receipts(client)
    out = dec.structured_content
    assert out["document"] == signed and out["recipient_key_id"] == kid
    assert out["signed"] and out["signature_valid"] and out["signature_trusted"]
    assert [(r["tool"], r["decision"], r["outcome"], r["action"]) for r in rows] == [
        ("decrypt_maml", "allowed", "ok", "read"),
        ("encrypt_maml", "allowed", "ok", "read"),
    ]
    assert rows[0]["document_id"] == out["document_id"] and rows[0]["document_digest"].startswith("sha256:")
    blob = json.dumps(rows)
    assert SECRET_WORD not in blob and sealed[-40:] not in blob  # digests only


async def test_caller_without_read_gets_nothing_and_receipt_says_denied(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    kid = with_recipient_key(settings)
    public = open_kem_keys(settings).public_key(kid)
    assert public is not None
    sealed = sealing.seal(readable_only_by("alice"), [public])  # sealed elsewhere, for this server
    async with Client(build_server(settings)) as client:  # the caller is agent://local
        result = await client.call_tool("decrypt_maml", {"sealed": sealed})
        rows = await receipts(client)
    assert result.is_error
    error = error_of(result)
    assert error["code"] == "forbidden" and "permissions.read" in error["message"]
    shown = json.dumps(result.model_dump(mode="json"))
    assert SECRET_WORD not in shown and "GHZ" not in shown and "qiskit" not in shown
    [row] = rows
    assert row["tool"] == "decrypt_maml" and row["decision"] == "denied" and row["outcome"] == "forbidden"
    assert row["document_digest"] is None  # not even a digest of what the caller may not read
    assert SECRET_WORD not in json.dumps(rows)


async def test_encrypt_needs_read_on_the_document(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    kid = with_recipient_key(settings)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "encrypt_maml", {"document": readable_only_by("alice"), "recipients": [kid]}
        )
    assert result.is_error and error_of(result)["code"] == "forbidden"


async def test_scopes_hide_and_refuse(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(local_scopes=["maml:read", "maml:encrypt", "receipts:read"])
    kid = with_recipient_key(settings)
    async with Client(build_server(settings)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "encrypt_maml" in names and "decrypt_maml" not in names
        enc = await client.call_tool("encrypt_maml", {"document": example_workflow(), "recipients": [kid]})
        dec = await client.call_tool("decrypt_maml", {"sealed": enc.structured_content["sealed"]})
    assert dec.is_error and error_of(dec)["details"]["required_scope"] == "maml:decrypt"


async def test_tool_errors(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(max_document_bytes=4096)
    kid = with_recipient_key(settings)
    signing_kid = open_keys(settings).default_key_id()
    async with Client(build_server(settings)) as client:

        async def code(tool: str, **args: Any) -> str:
            result = await client.call_tool(tool, args)
            assert result.is_error
            return str(error_of(result)["code"])

        doc = example_workflow()
        assert await code("encrypt_maml", document=doc, recipients=[signing_kid]) == "key_error"
        assert await code("encrypt_maml", document=doc, recipients=["0" * 32]) == "not_found"
        assert await code("decrypt_maml", sealed="not sealed") == "invalid_document"
        too_big = "x" * (sealing.max_sealed_bytes(4096) + 1)
        assert await code("decrypt_maml", sealed=too_big) == "request_too_large"
        sealed = (
            await client.call_tool("encrypt_maml", {"document": doc, "recipients": [kid]})
        ).structured_content["sealed"]
        assert await code("decrypt_maml", sealed=sealed.replace(sealed[-10:-6], "AAAA")) == "invalid_document"
        rows = await receipts(client)
    by_outcome = {r["outcome"]: r["decision"] for r in rows}
    assert by_outcome["request_too_large"] == "denied" and by_outcome["invalid_document"] == "allowed"


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home for the CLI, as tests/test_cli.py makes one, with a key passphrase."""
    for name in list(os.environ):
        if name.startswith("MACROSLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MACROSLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MACROSLOW_KEY_PASSPHRASE", "cli passphrase")
    return tmp_path / "home"


def test_cli_generate_export_import_seal_open(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "init")[0] == 0
    code, out, _ = run(capsys, "keys", "generate", "--kem")
    assert code == 0 and "encrypted" in out and "unencrypted" not in out
    kid = out.strip().splitlines()[-1]
    assert (home / "kem" / f"{kid}.key.pem").stat().st_mode & 0o777 == 0o600
    code, out, _ = run(capsys, "keys", "list")
    assert f"{kid}  ML-KEM-768+X25519  recipient private encrypted" in out
    pem = tmp_path / "recipient.pub.pem"
    assert run(capsys, "keys", "export", kid, "-o", str(pem))[0] == 0

    # a second home imports the public key and seals for it
    other = tmp_path / "other"
    code, out, _ = run(capsys, "--home", str(other), "keys", "import", str(pem))
    assert code == 0 and kid in out
    doc = tmp_path / "w.maml.md"
    doc.write_text(example_workflow(), encoding="utf-8")
    code, out, _ = run(capsys, "--home", str(other), "seal", str(doc), "--to", kid)
    assert code == 0 and (tmp_path / "w.maml.md.sealed").exists()
    # the first home opens it
    code, out, err = run(capsys, "open", str(tmp_path / "w.maml.md.sealed"))
    assert code == 0 and out == example_workflow() and "unsigned" in err
    code, out, err = run(capsys, "open", str(tmp_path / "w.maml.md.sealed"), "-o", str(tmp_path / "back.md"))
    assert code == 0 and (tmp_path / "back.md").read_text(encoding="utf-8") == example_workflow()
    # the second home holds no private key for it
    code, _, err = run(capsys, "--home", str(other), "open", str(tmp_path / "w.maml.md.sealed"))
    assert code == 2 and "not_found" in err
    # a signing key is the wrong kind of recipient, by id or as a PEM file
    signing = open_keys(Settings(home=home, _env_file=None)).default_key_id()  # type: ignore[call-arg]
    code, _, err = run(capsys, "seal", str(doc), "--to", str(signing))
    assert code == 2 and "not a recipient" in err
    run(capsys, "keys", "export", str(signing), "-o", str(tmp_path / "signing.pem"))
    code, _, err = run(capsys, "keys", "import", str(tmp_path / "signing.pem"))
    assert code == 2 and "not a recipient" in err
    # tampering is exit 1 (a failed check)
    sealed = (tmp_path / "w.maml.md.sealed").read_text(encoding="ascii")
    (tmp_path / "bad.sealed").write_text(sealed.replace(sealed[-10:-6], "AAAA"), encoding="ascii")
    code, out, err = run(capsys, "open", str(tmp_path / "bad.sealed"))
    assert code == 1 and "authentication" in err and out == ""
