"""The receipts ledger: an append-only SQL table whose rows are the leaves of a Merkle log
(RFC 9162 hashing), with signed checkpoints kept in a table of their own.

There is no update or delete path here: `Ledger` can record, read, prove and verify.

`record(draft)` returns only once a signed checkpoint covers the new receipt, with the receipt's
inclusion proof in that checkpoint (`Evidence`); what no checkpoint covers was never acknowledged.
How receipts are sequenced and integrated (group commit on SQLite; a queue, one integrator at a
time and LISTEN/NOTIFY on PostgreSQL) is in `sequencers`; the integration transaction itself, and
the recovery of receipts found uncovered, in `integrate`.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from mcp_server.crypto.keys import KeyStore
from mcp_server.db import database_errors, write_transaction
from mcp_server.errors import MacroslowError, NotFound, SignatureInvalid
from mcp_server.ledger import merkle
from mcp_server.ledger.checkpoint import open_checkpoint
from mcp_server.ledger.integrate import HEAD_ID, Evidence, Integrator, StoredCheckpoint, utc_now
from mcp_server.ledger.models import CheckpointRow, LedgerHead, LedgerMeta, QueuedReceipt, ReceiptRow
from mcp_server.ledger.receipts import Draft, Receipt
from mcp_server.ledger.sequencers import DirectSequencer, QueuedSequencer
from mcp_server.ledger.witnessing import Witnessing, cosigned_note
from mcp_server.policy import access

if TYPE_CHECKING:
    from mcp_server.witness.policy import Policy

log = logging.getLogger(__name__)

LOG_KEY = "log_key_id"  # ledger_meta: the id of the log's ML-DSA-44 checkpoint key
RECEIPT_COLUMNS = [getattr(ReceiptRow, name) for name in Receipt.field_names()]
__all__ = ["HEAD_ID", "Draft", "Evidence", "Ledger", "StoredCheckpoint", "VerifyReport", "utc_now"]


@dataclass
class VerifyReport:
    """The outcome of `Ledger.verify`: `ok` only when every check passed. Receipts no checkpoint
    covers (`uncovered`, `queued`) are not problems of integrity, but were never acknowledged."""

    receipts: int = 0
    checkpoints: int = 0
    verified_size: int = 0  # receipts covered by the newest checkpoint that verified
    uncovered: int = 0  # stored receipts past the newest checkpoint
    queued: int = 0  # receipts sequenced but not yet integrated
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Page:
    receipts: list[tuple[Receipt, bytes]]
    next_cursor: str | None


def page_cursor(seq: int) -> str:
    """The cursor of a page that ends at receipt `seq`: the next page starts below it."""
    return _cursor(seq)


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _from_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        if not text.startswith("seq:"):
            raise ValueError
        return int(text[4:])
    except (ValueError, UnicodeDecodeError):
        from mcp_server.errors import InvalidDocument

        raise InvalidDocument("cursor is not one this server handed out") from None


def _receipt(row: Any) -> Receipt:
    return Receipt(**{name: getattr(row, name) for name in Receipt.field_names()})


class Ledger:
    def __init__(
        self,
        engine: Engine,
        keys: KeyStore | None,
        *,
        batch_max: int = 256,
        batch_wait: float = 0.0,
        cover_seconds: float = 10.0,
        witnesses: Policy | None = None,
        witness_strict: bool = False,
        witness_timeout: float = 5.0,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self._for_update = engine.dialect.name != "sqlite"
        # A write transaction: on SQLite, BEGIN IMMEDIATE serialises processes opening a new ledger.
        with database_errors():
            try:
                with write_transaction(engine) as conn:
                    self.origin = self._init(conn)
            except IntegrityError:
                # PostgreSQL: another process made the head at the same moment (our insert waited for
                # its transaction, which committed, and then failed): read the log it made.
                with write_transaction(engine) as conn:
                    self.origin = self._init(conn)
        self.log_key_id = self._log_key() if keys is not None else self._stored_log_key()
        integrator = Integrator(self.origin, keys, self.log_key_id, for_update=self._for_update)
        self._sequencer: DirectSequencer | QueuedSequencer
        if engine.dialect.name == "postgresql":
            self._sequencer = QueuedSequencer(
                engine, integrator, batch_max=batch_max, batch_wait=batch_wait, cover_seconds=cover_seconds
            )
        else:
            self._sequencer = DirectSequencer(engine, integrator, batch_max=batch_max)
        self.witnesses = witnesses
        if witnesses is not None and any(w.url for w in witnesses.witnesses):
            self._sequencer.witnessing = Witnessing(
                engine,
                witnesses,
                self.origin,
                integrator._frontier_at,
                timeout=witness_timeout,
                strict=witness_strict,
            )

    # -- set-up ------------------------------------------------------------------------------
    def _init(self, conn: Connection) -> str:
        head = conn.execute(select(LedgerHead.size).where(LedgerHead.id == HEAD_ID)).first()
        if head is None:
            conn.execute(
                insert(LedgerHead).values(
                    id=HEAD_ID,
                    size=0,
                    frontier=merkle.Frontier().to_bytes(),
                    checkpoint_size=0,
                    checkpoint_time=time.time(),
                )
            )
            conn.execute(
                insert(LedgerMeta).values(key="origin", value=f"macroslow-mcp/receipts/{uuid.uuid4()}")
            )
        origin = conn.execute(select(LedgerMeta.value).where(LedgerMeta.key == "origin")).scalar_one()
        return str(origin)

    def _stored_log_key(self) -> str | None:
        with database_errors(), self.engine.connect() as conn:
            found = conn.execute(select(LedgerMeta.value).where(LedgerMeta.key == LOG_KEY)).scalar()
        return None if found is None else str(found)

    def _log_key(self) -> str:
        """The id of the log's ML-DSA-44 key: the home's log key (keys/log, made by `init`; a home
        copied to another replica shares it), recorded in `ledger_meta` the first time a ledger is
        opened with keys, so every process signs with it. A ledger from before has signed with the
        home's default key (ML-DSA-65, the older signature type): those checkpoints still verify."""
        stored = self._stored_log_key()
        if stored is not None:
            return stored
        assert self.keys is not None
        made = self.keys.make_log_key()  # the home's (made by `init`), or made now
        with database_errors():
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(insert(LedgerMeta).values(key=LOG_KEY, value=made))
            except IntegrityError:
                pass  # another process made one at the same moment: use the recorded one
        recorded = self._stored_log_key()
        assert recorded is not None
        return recorded

    @property
    def key_name(self) -> str:
        return self.origin

    def close(self) -> None:
        """Stop this process's ledger threads (PostgreSQL); callers still waiting get an error."""
        self._sequencer.close()
        if self._sequencer.witnessing is not None:
            self._sequencer.witnessing.close()

    # -- recording ---------------------------------------------------------------------------
    def record(self, draft: Draft) -> Evidence:
        """Put the draft in the log; returns once a signed checkpoint covers it, with the proof."""
        from mcp_server.metrics import LEDGER_APPEND

        started = time.perf_counter()
        evidence = self._sequencer.record(draft)
        LEDGER_APPEND.observe(time.perf_counter() - started)
        return evidence

    def append(self, draft: Draft) -> Receipt:
        """`record`, for callers that need only the receipt."""
        return self.record(draft).receipt

    def recover(self) -> StoredCheckpoint | None:
        """Cover, now, what is stored or queued but uncovered (behind a recovery receipt where
        `integrate` says so); returns the newest checkpoint."""
        self._sequencer.cover()
        return self.latest_checkpoint()

    checkpoint = recover  # the newest checkpoint, after covering everything

    # -- reading -----------------------------------------------------------------------------
    def latest_checkpoint(self, conn: Connection | None = None) -> StoredCheckpoint | None:
        query = select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1)
        with database_errors():
            if conn is not None:
                row = conn.execute(query).first()
            else:
                with self.engine.connect() as own:
                    row = own.execute(query).first()
        return (
            None
            if row is None
            else StoredCheckpoint(row.size, row.root, row.key_id, row.note, row.created_at)
        )

    def get(self, receipt_id: str) -> tuple[Receipt, bytes]:
        with database_errors(), self.engine.connect() as conn:
            row = conn.execute(select(ReceiptRow).where(ReceiptRow.id == receipt_id)).first()
        if row is None:
            raise access.unknown_receipt(receipt_id)
        return _receipt(row), row.leaf_hash

    def size(self) -> int:
        with database_errors(), self.engine.connect() as conn:
            return int(conn.execute(select(LedgerHead.size).where(LedgerHead.id == HEAD_ID)).scalar_one())

    def page(
        self,
        *,
        principal: str | None = None,
        issuer: str | None = None,
        tool: str | None = None,
        decision: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first; `cursor` (from a previous page) continues below that page, so pages stay
        stable while receipts are appended."""
        query = select(ReceiptRow).order_by(ReceiptRow.seq.desc()).limit(limit + 1)
        for column, value in (
            (ReceiptRow.principal, principal),
            (ReceiptRow.issuer, issuer),
            (ReceiptRow.tool, tool),
            (ReceiptRow.decision, decision),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(ReceiptRow.created_at >= since)
        if until is not None:
            query = query.where(ReceiptRow.created_at < until)
        if cursor is not None:
            query = query.where(ReceiptRow.seq < _from_cursor(cursor))
        with database_errors(), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        page = [(_receipt(r), r.leaf_hash) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(page, _cursor(page[-1][0].seq) if more and page else None)

    def _leaf_hashes(self, conn: Connection, size: int) -> list[bytes]:
        query = select(ReceiptRow.leaf_hash).where(ReceiptRow.seq < size).order_by(ReceiptRow.seq)
        return [bytes(h) for h in conn.execute(query).scalars()]

    # -- proofs ------------------------------------------------------------------------------
    def prove(self, receipt_id: str) -> dict[str, Any]:
        """An inclusion proof of the receipt in the newest signed checkpoint, checked before it is
        returned: the checkpoint's signature by a trusted key, then the proof against its root."""
        receipt, stored_leaf = self.get(receipt_id)
        leaf = merkle.leaf_hash(receipt.leaf_bytes())
        if leaf != stored_leaf:
            raise SignatureInvalid(f"receipt {receipt.seq} does not match its leaf hash (edited?)")
        checkpoint = self.latest_checkpoint()
        if checkpoint is None or checkpoint.size <= receipt.seq:
            raise NotFound(
                f"receipt {receipt.seq} is not covered by a signed checkpoint yet; try again in a few seconds"
            )
        self._open(checkpoint)
        with database_errors(), self.engine.connect() as conn:
            hashes = self._leaf_hashes(conn, checkpoint.size)
            note = cosigned_note(conn, checkpoint)
        proof = merkle.inclusion_proof(hashes, receipt.seq, checkpoint.size)
        merkle.verify_inclusion(leaf, receipt.seq, checkpoint.size, proof, checkpoint.root)
        return {
            "seq": receipt.seq,
            "leaf_hash": leaf.hex(),
            "tree_size": checkpoint.size,
            "root": checkpoint.root.hex(),
            "proof": [h.hex() for h in proof],
            "checkpoint": note,
            "witnessed": self.witnessed(note),
        }

    def cosigned(self, checkpoint: StoredCheckpoint) -> str:
        """The checkpoint's note with the cosignatures the witnesses gave it."""
        with database_errors(), self.engine.connect() as conn:
            return cosigned_note(conn, checkpoint)

    def witnessed(self, note: str) -> str | None:
        """Whether the witness policy's quorum cosigned this checkpoint note: None when it did (or
        there is no policy), else why not."""
        if self.witnesses is None:
            return None
        try:
            self.witnesses.check(note, self.origin)
        except MacroslowError as exc:
            return exc.message
        return None

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        with database_errors(), self.engine.connect() as conn:
            hashes = self._leaf_hashes(conn, new_size)
        if len(hashes) != new_size:
            raise NotFound(f"the log has {len(hashes)} receipts, fewer than {new_size}")
        return merkle.consistency_proof(hashes, old_size, new_size)

    def _open(self, checkpoint: StoredCheckpoint) -> None:
        """Verify a stored checkpoint: signed by a trusted key, and saying what its row says."""
        if self.keys is None:
            raise SignatureInvalid("no key store to check checkpoint signatures with")
        if not self.keys.trust.contains(checkpoint.key_id):
            raise SignatureInvalid(
                f"checkpoint {checkpoint.size} is signed by untrusted key {checkpoint.key_id}"
            )
        public = self.keys.public_key(checkpoint.key_id)
        if public is None:
            raise SignatureInvalid(f"checkpoint {checkpoint.size}: unknown key {checkpoint.key_id}")
        opened = open_checkpoint(checkpoint.note, self.key_name, public)
        if (opened.origin, opened.size, opened.root) != (self.origin, checkpoint.size, checkpoint.root):
            raise SignatureInvalid(f"checkpoint {checkpoint.size}: the signed note and its row disagree")

    def checkpoints(self) -> list[StoredCheckpoint]:
        with database_errors(), self.engine.connect() as conn:
            rows = conn.execute(select(CheckpointRow).order_by(CheckpointRow.size)).all()
        return [StoredCheckpoint(r.size, r.root, r.key_id, r.note, r.created_at) for r in rows]

    def rows(self, batch: int = 2000) -> Iterator[tuple[Receipt, bytes]]:
        """Every receipt in order of `seq`, streamed."""
        with database_errors(), self.engine.connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(
                select(ReceiptRow).order_by(ReceiptRow.seq)
            )
            for row in result:
                yield _receipt(row), row.leaf_hash

    # -- verification ------------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Recompute the whole log and check it against every signed checkpoint.

        Reports the first receipt whose content does not match its leaf hash, a gap or reordering
        in the sequence numbers, checkpoints with bad signatures, a log whose tree at a checkpoint's
        size does not have that checkpoint's root, and a log shorter than a checkpoint (truncation).
        """
        report = VerifyReport()
        checkpoints = self.checkpoints()
        report.checkpoints = len(checkpoints)
        good: dict[int, bytes] = {}
        for cp in checkpoints:
            try:
                self._open(cp)
                good[cp.size] = cp.root
            except MacroslowError as exc:
                report.problems.append(f"checkpoint at size {cp.size}: {exc.message}")
        frontier = merkle.Frontier()
        expected = 0
        for receipt, stored_leaf in self.rows():
            if receipt.seq != expected:
                self._bad(
                    report, expected, f"receipt {expected} is missing (sequence jumps to {receipt.seq})"
                )
                expected = receipt.seq
            leaf = merkle.leaf_hash(receipt.leaf_bytes())
            if leaf != bytes(stored_leaf):
                self._bad(report, receipt.seq, f"receipt {receipt.seq} does not match its leaf hash (edited)")
            frontier.append(leaf)
            expected += 1
            root = good.get(frontier.size)
            if root is not None:
                if frontier.root() == root:
                    report.verified_size = frontier.size
                else:
                    self._bad(
                        report,
                        None,
                        f"receipts 0..{frontier.size - 1} do not match the signed checkpoint at size "
                        f"{frontier.size} (a receipt was edited, removed or moved)",
                    )
        report.receipts = frontier.size
        newest = max((cp.size for cp in checkpoints), default=0)
        if newest > frontier.size:
            report.problems.append(
                f"log truncated: the signed checkpoint at size {newest} covers more receipts than the "
                f"{frontier.size} present"
            )
        with database_errors(), self.engine.connect() as conn:
            head = conn.execute(select(LedgerHead).where(LedgerHead.id == HEAD_ID)).one()
            report.queued = int(conn.execute(select(func.count()).select_from(QueuedReceipt)).scalar_one())
        report.uncovered = max(0, frontier.size - newest)
        if head.size != frontier.size:
            report.problems.append(f"ledger head says {head.size} receipts; {frontier.size} are present")
        if head.checkpoint_size > newest:
            report.problems.append(
                f"checkpoints missing: the head records one at size {head.checkpoint_size}, the newest "
                f"stored is at size {newest}"
            )
        return report

    @staticmethod
    def _bad(report: VerifyReport, seq: int | None, message: str) -> None:
        if seq is not None and report.first_bad_seq is None:
            report.first_bad_seq = seq
        if len(report.problems) < 100:
            report.problems.append(message)
