"""`macroslow-mcp receipts list|show|verify|prove|export` on a real ledger."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from mcp_server.db import open_engine
from mcp_server.home import initialize, open_keys
from mcp_server.ledger.checkpoint import open_checkpoint
from mcp_server.ledger.store import Draft, Ledger
from mcp_server.settings import Settings
from tests.test_cli import run


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("MACROSLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    h = tmp_path / "home"
    monkeypatch.setenv("MACROSLOW_HOME", str(h))
    settings = Settings(home=h)
    initialize(settings, example=False)
    ledger = Ledger(open_engine(settings.database, durable=True), open_keys(settings))
    for i in range(7):
        ledger.append(
            Draft(
                principal=f"agent://u{i % 2}",
                issuer="local",
                token_id=None,
                scopes="maml:read",
                tool="verify_maml",
                action=None,
                decision="allowed" if i % 3 else "denied",
                reason=None if i % 3 else "forbidden: x",
                outcome="ok" if i % 3 else "forbidden",
            )
        )
    ledger.checkpoint()
    ledger.engine.dispose()
    return h


def test_list_show_verify(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "receipts", "list", "--json", "--decision", "denied")
    assert code == 0
    data = json.loads(out)
    assert [r["seq"] for r in data["receipts"]] == [6, 3, 0]
    code, out, _ = run(capsys, "receipts", "show", data["receipts"][0]["id"])
    assert code == 0 and out.startswith('---\nmu_version: "1.0"') and "## History" in out
    code, out, _ = run(capsys, "receipts", "verify")
    assert code == 0 and out.startswith("ok: 7 receipts, 7 signed checkpoints")


def test_verify_exits_1_and_names_the_first_bad_receipt(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(home / "ledger.db") as db:
        db.execute("UPDATE receipts SET principal = 'agent://mallory' WHERE seq = 4")
    code, out, _ = run(capsys, "receipts", "verify")
    assert code == 1
    assert "LEDGER INVALID" in out and "first bad receipt: 4" in out
    code, out, _ = run(capsys, "receipts", "verify", "--json")
    assert code == 1 and json.loads(out)["first_bad_seq"] == 4


def test_verify_detects_truncation(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(home / "ledger.db") as db:
        db.execute("DELETE FROM receipts WHERE seq >= 5")
        db.execute("UPDATE ledger_head SET size = 5")
    code, out, _ = run(capsys, "receipts", "verify")
    assert code == 1 and "log truncated" in out


def test_prove_and_export(home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, out, _ = run(capsys, "receipts", "list", "--json")
    receipt_id = json.loads(out)["receipts"][-1]["id"]
    code, out, _ = run(capsys, "receipts", "prove", receipt_id)
    proof = json.loads(out)
    assert code == 0 and proof["seq"] == 0 and proof["tree_size"] == 7
    code, out, _ = run(capsys, "receipts", "prove", "--consistency", "3", "7")
    assert code == 0 and json.loads(out)["new_size"] == 7
    code, out, _ = run(capsys, "receipts", "export", "-o", str(tmp_path / "all.jsonl"))
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert code == 0 and len(lines) == 7 and json.loads(lines[0])["seq"] == 0
    code, out, _ = run(capsys, "receipts", "export", "--checkpoint", str(tmp_path / "cp.note"))
    note = (tmp_path / "cp.note").read_text()
    settings = Settings(home=home)
    keys = open_keys(settings)
    ledger = Ledger(open_engine(settings.database, durable=True), keys)
    key_id = ledger.log_key_id  # the log's own ML-DSA-44 key
    ledger.engine.dispose()
    assert key_id is not None
    public = keys.public_key(key_id)
    assert public is not None
    origin = note.splitlines()[0]
    assert open_checkpoint(note, origin, public).size == 7  # verifiable outside the server


def test_unknown_receipt_is_a_clean_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "receipts", "show", "nope")
    assert code == 2 and err.startswith("macroslow-mcp: not_found: no receipt")


def test_verify_exits_1_for_receipts_no_checkpoint_covers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Uncovered receipts were never acknowledged: `receipts verify` says so and exits 1 unless
    --allow-uncovered; so does a log with no checkpoint at all."""
    from tests.ledger.test_recovery import build_0003_ledger

    for name in list(os.environ):
        if name.startswith("MACROSLOW_"):
            monkeypatch.delenv(name)
    h = tmp_path / "home"
    monkeypatch.setenv("MACROSLOW_HOME", str(h))
    settings = Settings(home=h)
    initialize(settings, example=False)
    keys = open_keys(settings)
    open_engine(settings.database).dispose()  # an empty log: no checkpoint yet
    code, out, _ = run(capsys, "receipts", "verify")
    assert code == 1 and "no signed checkpoint" in out and "NOT COVERED" in out
    assert run(capsys, "receipts", "verify", "--allow-uncovered")[0] == 0

    (h / "ledger.db").unlink()
    build_0003_ledger(settings.database, keys, 5, 3)  # a server stopped before covering 3..4
    code, out, _ = run(capsys, "receipts", "verify")
    assert code == 1 and "2 receipts past the newest checkpoint are uncovered" in out
    code, out, _ = run(capsys, "receipts", "verify", "--json")
    assert code == 1 and json.loads(out)["uncovered"] == 2 and json.loads(out)["covered"] is False
    assert run(capsys, "receipts", "verify", "--allow-uncovered")[0] == 0

    ledger = Ledger(open_engine(settings.database, durable=True), keys)
    ledger.recover()  # as the server does when it starts
    ledger.engine.dispose()
    code, out, _ = run(capsys, "receipts", "verify")
    assert code == 0 and out.startswith("ok: 6 receipts, 2 signed checkpoints; receipts 0..5 covered")


def test_vkey_prints_the_log_key_for_witnesses_and_policies(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcp_server.witness import cosignature

    code, out, _ = run(capsys, "receipts", "vkey")
    assert code == 0
    name, public = cosignature.parse_vkey(out.strip())
    settings = Settings(home=home)
    ledger = Ledger(open_engine(settings.database, durable=True), open_keys(settings))
    try:
        assert name == ledger.origin
        stored = ledger.keys.public_key(ledger.log_key_id) if ledger.keys and ledger.log_key_id else None
        assert stored is not None and stored.public_bytes_raw() == public.public_bytes_raw()
        # The newest checkpoint verifies with that vkey alone, as a witness would check it.
        latest = ledger.latest_checkpoint()
        assert latest is not None
        assert cosignature.verify_line(latest.note, name, public) > 0
    finally:
        ledger.engine.dispose()
