"""The receipts ledger: an append-only SQL table whose rows are the leaves of a Merkle log
(RFC 9162 hashing), with signed checkpoints kept in a table of their own.

There is no update or delete path here: `Ledger` can append, read, prove and verify.

Appends are serialised across processes by locking the one `ledger_head` row (SQLite: the
`BEGIN IMMEDIATE` of the durable engine; PostgreSQL: `SELECT ... FOR UPDATE`). In one transaction an
append reads the head (tree size and frontier), inserts the receipt as leaf `size`, advances the
frontier and, when a checkpoint is due (every `checkpoint_every` receipts, or when the last one is
older than `checkpoint_seconds`), signs the new tree head and stores it. A crash before the commit
leaves nothing; after it, everything. Within a process, appends that arrive while a commit is under
way are written together in the next transaction (group commit): one lock and one disk flush for
many receipts, each still acknowledged only once it is on disk.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from mcp_server.crypto.keys import KeyStore
from mcp_server.db import database_errors, write_transaction
from mcp_server.errors import MacroslowError, NotFound, SignatureInvalid
from mcp_server.ledger import merkle
from mcp_server.ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from mcp_server.ledger.models import CheckpointRow, LedgerHead, LedgerMeta, ReceiptRow
from mcp_server.ledger.receipts import Draft, Receipt
from mcp_server.policy import access

log = logging.getLogger(__name__)

HEAD_ID = 1
RECEIPT_COLUMNS = [getattr(ReceiptRow, name) for name in Receipt.field_names()]


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(eq=False)
class _Pending:
    draft: Draft
    receipt: Receipt | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    key_id: str
    note: str
    created_at: str

    def summary(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": "sha256:" + self.root.hex(),
            "key_id": self.key_id,
            "created_at": self.created_at,
        }


@dataclass
class VerifyReport:
    """The outcome of `Ledger.verify`: `ok` only when every check passed."""

    receipts: int = 0
    checkpoints: int = 0
    verified_size: int = 0  # receipts covered by the newest checkpoint that verified
    first_bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Page:
    receipts: list[tuple[Receipt, bytes]]
    next_cursor: str | None


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
        checkpoint_every: int = 256,
        checkpoint_seconds: float = 10.0,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self._for_update = engine.dialect.name != "sqlite"
        self.max_batch = 256
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        # Built once with bound parameters: SQLAlchemy compiles each once (appends are hot).
        head = select(LedgerHead).where(LedgerHead.id == HEAD_ID)
        self._select_head = head.with_for_update() if self._for_update else head
        self._insert_receipts = insert(ReceiptRow)
        self._update_head = (
            update(LedgerHead)
            .where(LedgerHead.id == HEAD_ID)
            .values(
                size=bindparam("new_size"),
                frontier=bindparam("new_frontier"),
                checkpoint_size=bindparam("new_checkpoint_size"),
                checkpoint_time=bindparam("new_checkpoint_time"),
            )
        )
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

    @property
    def key_name(self) -> str:
        return self.origin

    # -- appending ---------------------------------------------------------------------------
    def append(self, draft: Draft) -> Receipt:
        """Give the draft the next place in the log and commit it; returns once it is on disk.

        Group commit: callers in other threads that arrive while a commit is under way queue up, and
        the next one to go writes all of them in one transaction (one lock of the head, one commit),
        then each gets its own receipt back. A failed transaction fails every call in it.
        """
        from mcp_server.metrics import LEDGER_APPEND

        started = time.perf_counter()
        item = _Pending(draft)
        with self._cond:
            self._queue.append(item)
            while not item.done:
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._cond.release()
                try:
                    self._commit(batch)
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
        LEDGER_APPEND.observe(time.perf_counter() - started)
        if item.error is not None:
            raise item.error
        assert item.receipt is not None
        return item.receipt

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            receipts = self._write([p.draft for p in batch])
        except BaseException as exc:
            for pending in batch:
                pending.error = exc
                pending.done = True
            if not isinstance(exc, Exception):
                raise
            return
        for pending, receipt in zip(batch, receipts, strict=True):
            pending.receipt = receipt
            pending.done = True

    def _write(self, drafts: list[Draft]) -> list[Receipt]:
        with database_errors(), write_transaction(self.engine) as conn:
            head = conn.execute(self._select_head).one()
            frontier = merkle.Frontier.from_bytes(head.frontier)
            if frontier.size != head.size:
                raise MacroslowError("ledger head is inconsistent; run `macroslow-mcp receipts verify`")
            checkpoint_size, checkpoint_time = head.checkpoint_size, head.checkpoint_time
            receipts: list[Receipt] = []
            rows: list[dict[str, Any]] = []
            for draft in drafts:
                receipt = Receipt(
                    seq=frontier.size, id=str(uuid.uuid4()), created_at=utc_now(), **draft.__dict__
                )
                leaf = merkle.leaf_hash(receipt.leaf_bytes())
                rows.append({**receipt.__dict__, "leaf_hash": leaf})
                receipts.append(receipt)
                frontier.append(leaf)
                now = time.time()
                due = (
                    frontier.size - checkpoint_size >= self.checkpoint_every
                    or now - checkpoint_time >= self.checkpoint_seconds
                )
                if due and self._sign(conn, frontier.size, frontier.root()):
                    checkpoint_size, checkpoint_time = frontier.size, now
            conn.execute(self._insert_receipts, rows)
            conn.execute(
                self._update_head,
                {
                    "new_size": frontier.size,
                    "new_frontier": frontier.to_bytes(),
                    "new_checkpoint_size": checkpoint_size,
                    "new_checkpoint_time": checkpoint_time,
                },
            )
        return receipts

    def _sign(self, conn: Connection, size: int, root: bytes) -> bool:
        """Store a signed checkpoint of (size, root); False (and a warning) if it cannot be signed."""
        if self.keys is None:
            return False
        try:
            key_id = self.keys.default_key_id()
            if key_id is None:
                raise MacroslowError("no signing key")
            private = self.keys.private_key(key_id)
        except MacroslowError as exc:
            log.warning("receipts checkpoint not signed (%s); the receipts are stored", exc)
            return False
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.key_name, private)
        conn.execute(
            insert(CheckpointRow).values(size=size, root=root, key_id=key_id, note=note, created_at=utc_now())
        )
        return True

    def checkpoint(self) -> StoredCheckpoint | None:
        """Sign the current tree head now, unless it is already the newest checkpoint."""
        with database_errors(), write_transaction(self.engine) as conn:
            query = select(LedgerHead).where(LedgerHead.id == HEAD_ID)
            head = conn.execute(query.with_for_update() if self._for_update else query).one()
            if head.size == 0 or head.size == head.checkpoint_size:
                return self.latest_checkpoint(conn)
            frontier = merkle.Frontier.from_bytes(head.frontier)
            if self._sign(conn, head.size, frontier.root()):
                conn.execute(
                    update(LedgerHead)
                    .where(LedgerHead.id == HEAD_ID)
                    .values(checkpoint_size=head.size, checkpoint_time=time.time())
                )
            return self.latest_checkpoint(conn)

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
        proof = merkle.inclusion_proof(hashes, receipt.seq, checkpoint.size)
        merkle.verify_inclusion(leaf, receipt.seq, checkpoint.size, proof, checkpoint.root)
        return {
            "seq": receipt.seq,
            "leaf_hash": leaf.hex(),
            "tree_size": checkpoint.size,
            "root": checkpoint.root.hex(),
            "proof": [h.hex() for h in proof],
            "checkpoint": checkpoint.note,
        }

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
