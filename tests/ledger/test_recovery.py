"""Receipts found uncovered: a ledger from before schema 0004 upgraded in place, and receipts queued by
a server process that is gone. They are covered behind a recovery receipt that names them; until
then `verify` counts them as uncovered (and `receipts verify` exits 1). What recovery can and cannot
tell about rows edited before it ran."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, insert, text, update

from mcp_server.crypto.keys import KeyStore
from mcp_server.db import MIGRATIONS, open_engine
from mcp_server.errors import MacroslowError
from mcp_server.home import initialize, open_keys
from mcp_server.ledger import merkle
from mcp_server.ledger.checkpoint import Checkpoint, sign_checkpoint
from mcp_server.ledger.integrate import RECOVERY_TOOL, Entry, utc_now
from mcp_server.ledger.models import CheckpointRow, LedgerHead, LedgerMeta, QueuedReceipt, ReceiptRow
from mcp_server.ledger.receipts import Receipt
from mcp_server.ledger.sequencers import WRITER_NAMESPACE, _key
from mcp_server.ledger.store import Draft, Ledger
from mcp_server.settings import Settings


def draft(i: int) -> Draft:
    return Draft(
        principal=f"agent://user{i}",
        issuer="local",
        token_id=None,
        scopes="maml:read",
        tool="verify_maml",
        action="read",
        decision="allowed",
        reason=None,
        outcome="ok",
        duration_us=i,
    )


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    initialize(settings, example=False)
    return open_keys(settings)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def build_0003_ledger(url: str, keys: KeyStore, size: int, covered: int) -> str:
    """A ledger as schema 0003 and the appends of that time left it: `size` receipts, the newest
    checkpoint at `covered` (a server that stopped between appends and its next checkpoint)."""
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.commit()
    origin = f"macroslow-mcp/receipts/{uuid.uuid4()}"
    frontier = merkle.Frontier()
    key_id = keys.default_key_id()
    assert key_id is not None
    with engine.begin() as conn:
        conn.execute(insert(LedgerMeta).values(key="origin", value=origin))
        for seq in range(size):
            receipt = Receipt(seq=seq, id=str(uuid.uuid4()), created_at=utc_now(), **draft(seq).__dict__)
            leaf = merkle.leaf_hash(receipt.leaf_bytes())
            conn.execute(insert(ReceiptRow).values(**receipt.__dict__, leaf_hash=leaf))
            frontier.append(leaf)
            if frontier.size == covered:
                note = sign_checkpoint(
                    Checkpoint(origin, covered, frontier.root()), origin, keys.private_key(key_id)
                )
                conn.execute(
                    insert(CheckpointRow).values(
                        size=covered, root=frontier.root(), key_id=key_id, note=note, created_at=utc_now()
                    )
                )
        conn.execute(
            insert(LedgerHead).values(
                id=1, size=size, frontier=frontier.to_bytes(), checkpoint_size=covered, checkpoint_time=0.0
            )
        )
    engine.dispose()
    return origin


@pytest.fixture
def upgraded(url: str, keys: KeyStore) -> Iterator[Callable[[], Ledger]]:
    """A 0003 ledger of 12 receipts, 10 covered, opened (and so upgraded to 0004) on demand."""
    origin = build_0003_ledger(url, keys, 12, 10)
    opened: list[Ledger] = []

    def open_ledger() -> Ledger:
        ledger = Ledger(open_engine(url, durable=True), keys)
        assert ledger.origin == origin
        opened.append(ledger)
        return ledger

    yield open_ledger
    for ledger in opened:
        ledger.close()
        ledger.engine.dispose()


def sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def test_an_upgraded_ledger_is_covered_behind_a_recovery_receipt(upgraded: Callable[[], Ledger]) -> None:
    ledger = upgraded()
    before = ledger.verify()
    assert before.ok and (before.receipts, before.verified_size, before.uncovered) == (12, 10, 2)
    ledger.recover()
    report = ledger.verify()
    assert report.ok and (report.receipts, report.verified_size, report.uncovered) == (13, 13, 0)
    recovery, _ = ledger.page(limit=1).receipts[0]
    assert (recovery.seq, recovery.tool, recovery.outcome) == (12, RECOVERY_TOOL, "recovered")
    assert recovery.reason is not None and "receipts 10..11 were stored but no signed checkpoint" in (
        recovery.reason
    )
    for receipt, _ in ledger.rows():  # old and new receipts alike have proofs now
        assert ledger.prove(receipt.id)["tree_size"] == 13
    ledger.recover()  # nothing left: no second recovery receipt
    assert ledger.size() == 13
    # And the log goes on: the next call's proof comes from the checkpoint at 13's frontier.
    evidence = ledger.record(draft(99))
    assert (evidence.receipt.seq, evidence.checkpoint.size) == (13, 14)
    merkle.verify_inclusion(evidence.leaf_hash, 13, 14, evidence.proof, evidence.checkpoint.root)


def test_the_first_call_after_the_upgrade_recovers_too(upgraded: Callable[[], Ledger]) -> None:
    evidence = upgraded().record(draft(99))
    assert (evidence.receipt.seq, evidence.checkpoint.size) == (13, 14)  # 12 is the recovery receipt
    merkle.verify_inclusion(evidence.leaf_hash, 13, 14, evidence.proof, evidence.checkpoint.root)


def test_an_edited_uncovered_receipt_is_not_covered(upgraded: Callable[[], Ledger]) -> None:
    ledger = upgraded()
    sql(ledger.engine, "UPDATE receipts SET outcome = 'forged' WHERE seq = 11")
    with pytest.raises(MacroslowError, match="receipt 11 does not match its leaf hash"):
        ledger.recover()
    assert ledger.verify().uncovered == 2 and ledger.size() == 12


def test_an_edit_with_a_recomputed_leaf_but_not_the_head_is_not_covered(
    upgraded: Callable[[], Ledger],
) -> None:
    ledger = upgraded()
    receipt, _ = next(r for r in ledger.rows() if r[0].seq == 11)
    forged = Receipt(**{**receipt.__dict__, "outcome": "forged"})
    sql(
        ledger.engine,
        "UPDATE receipts SET outcome = 'forged', leaf_hash = :leaf WHERE seq = 11",
        leaf=merkle.leaf_hash(forged.leaf_bytes()),
    )
    with pytest.raises(MacroslowError, match="do not match the ledger head"):
        ledger.recover()


def test_an_edit_with_leaf_and_head_recomputed_cannot_be_told_apart(upgraded: Callable[[], Ledger]) -> None:
    """The documented limit: rows no checkpoint covers, rewritten consistently with the public
    algorithm before recovery, are covered as they are (docs/receipts.md, "What is detected")."""
    ledger = upgraded()
    rows = [r for r, _ in ledger.rows()]
    rows[11] = Receipt(**{**rows[11].__dict__, "outcome": "forged"})
    frontier = merkle.Frontier()
    for receipt in rows:
        frontier.append(merkle.leaf_hash(receipt.leaf_bytes()))
    with ledger.engine.begin() as conn:
        conn.execute(
            update(ReceiptRow)
            .where(ReceiptRow.seq == 11)
            .values(outcome="forged", leaf_hash=merkle.leaf_hash(rows[11].leaf_bytes()))
        )
        conn.execute(update(LedgerHead).values(frontier=frontier.to_bytes()))
    ledger.recover()
    assert ledger.verify().ok and ledger.get(rows[11].id)[0].outcome == "forged"


def queue(engine: Engine, entry: Entry) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(QueuedReceipt).values(
                id=entry.id, created_at=entry.created_at, writer=entry.writer, draft=entry.draft_json()
            )
        )


def test_receipts_queued_by_a_process_that_is_gone_are_recovered(postgres_url: str, keys: KeyStore) -> None:
    ledger = Ledger(open_engine(postgres_url, durable=True), keys)
    try:
        ledger.record(draft(0))
        gone = Entry.new(draft(1), writer="4242-deadbeef0000")  # holds no writer lock: it is gone
        queue(ledger.engine, gone)
        # This process integrates (it recorded first): it may take the row at once, or at recover().
        ledger.recover()
        rows = [r for r, _ in ledger.rows()]
        assert [r.tool for r in rows] == ["verify_maml", RECOVERY_TOOL, "verify_maml"]
        assert rows[2].id == gone.id
        assert "receipts 2..2 were sequenced by a server process that stopped" in (rows[1].reason or "")
        report = ledger.verify()
        assert report.ok and (report.verified_size, report.queued) == (3, 0)
    finally:
        ledger.close()
        ledger.engine.dispose()


def test_receipts_queued_by_a_live_process_need_no_recovery(postgres_url: str, keys: KeyStore) -> None:
    import psycopg

    ledger = Ledger(open_engine(postgres_url, durable=True), keys)
    plain = postgres_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as other:  # another replica, alive: its writer lock
        writer = "4343-feedface0000"
        other.execute("SELECT pg_advisory_lock(%s, %s)", (WRITER_NAMESPACE, _key(writer)))
        try:
            queue(ledger.engine, Entry.new(draft(1), writer=writer))
            ledger.recover()
            assert [r.tool for r, _ in ledger.rows()] == ["verify_maml"]
            assert ledger.verify().ok
        finally:
            ledger.close()
            ledger.engine.dispose()
