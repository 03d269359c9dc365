"""Integration: receipts that wait for a place in the log get one, and a signed checkpoint covers
them, in one transaction.

The integrator (one at a time per log: the caller holds the integration lock, see `sequencers`)
reads the head, gives each entry the next leaf index, extends the frontier, stores the receipts,
the new head and a checkpoint signed over the new tree, with the frontier at that size. Either all
of it commits or none of it: a receipt is never in the log without a checkpoint over it, except in a
ledger written before schema 0004, or by hand.

Recovery. Receipts that no checkpoint covers are found in two places: rows past the newest
checkpoint (a ledger from before 0004 stopped between an append and its checkpoint) and queued
receipts whose writer process is gone (it stopped between sequencing a receipt and seeing it
covered, so it never answered that call). Before such receipts are covered, a recovery receipt
(tool `ledger_recovery`) is integrated that names their leaf indices; the queued ones follow it.
What recovery can check: the stored rows past the checkpoint still hash to their leaf hashes and to
the head's frontier. What it cannot: an edit made before recovery by someone who recomputed the leaf
hashes and the frontier with the public algorithm (docs/receipts.md, "What is detected").
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update

from mcp_server.errors import MacroslowError
from mcp_server.ledger import merkle
from mcp_server.ledger.checkpoint import Checkpoint, body
from mcp_server.ledger.models import CheckpointRow, LedgerHead, ReceiptRow
from mcp_server.ledger.receipts import Draft, Receipt, canonical_json

if TYPE_CHECKING:
    from mcp_server.crypto.keys import KeyStore

log = logging.getLogger(__name__)

HEAD_ID = 1
RECOVERY_TOOL = "ledger_recovery"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Entry:
    """A receipt waiting for its place: its id and time are fixed when it is sequenced."""

    id: str
    created_at: str
    draft: Draft
    writer: str | None = None  # the sequencing process, for queued entries

    @classmethod
    def new(cls, draft: Draft, writer: str | None = None) -> Entry:
        return cls(str(uuid.uuid4()), utc_now(), draft, writer)

    def draft_json(self) -> str:
        return canonical_json(self.draft.__dict__).decode("utf-8")

    @classmethod
    def from_row(cls, row: Any) -> Entry:
        return cls(row.id, row.created_at, Draft(**json.loads(row.draft)), row.writer)

    def receipt(self, seq: int) -> Receipt:
        return Receipt(seq=seq, id=self.id, created_at=self.created_at, **self.draft.__dict__)


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


@dataclass(frozen=True)
class Evidence:
    """What a caller gets for its receipt: the receipt, and its inclusion proof in the checkpoint
    that first covered it."""

    receipt: Receipt
    leaf_hash: bytes
    proof: list[bytes]
    checkpoint: StoredCheckpoint

    def tlog_proof(self) -> str:
        """The proof as a c2sp.org/tlog-proof@v1 text, the receipt's leaf bytes as its extra data."""
        from mcp_server.ledger.proofs import format_proof

        return format_proof(self.receipt.seq, self.proof, self.checkpoint.note, self.receipt.leaf_bytes())


@dataclass
class Batch:
    """One integration: the frontier before it, its receipts and leaf hashes, its checkpoint."""

    start: merkle.Frontier
    receipts: list[Receipt]
    leaves: list[bytes]
    checkpoint: StoredCheckpoint

    def evidence(self, ids: Collection[str] | None = None) -> dict[str, Evidence]:
        """Evidence for the receipts of this batch with these ids (all of them by default)."""
        chosen = [
            (receipt, leaf)
            for receipt, leaf in zip(self.receipts, self.leaves, strict=True)
            if ids is None or receipt.id in ids
        ]
        proofs = merkle.inclusion_proofs_after(self.start, self.leaves, [r.seq for r, _ in chosen])
        return {r.id: Evidence(r, leaf, proofs[r.seq], self.checkpoint) for r, leaf in chosen}


class Integrator:
    """Integrates batches into one log. Holds no lock itself: its caller does."""

    def __init__(
        self, origin: str, keys: KeyStore | None, log_key_id: str | None, *, for_update: bool
    ) -> None:
        self.origin = origin
        self.keys = keys
        self.log_key_id = log_key_id
        self._private: Any = None
        head = select(LedgerHead).where(LedgerHead.id == HEAD_ID)
        self._select_head = head.with_for_update() if for_update else head

    def uncovered(self, conn: Connection) -> tuple[int, int]:
        """(first, end) of the stored receipts no checkpoint covers (first == end: none)."""
        head = conn.execute(select(LedgerHead.size, LedgerHead.checkpoint_size)).one()
        return int(head.checkpoint_size), int(head.size)

    def integrate(
        self, conn: Connection, entries: list[Entry], orphans: Collection[str] = ()
    ) -> Batch | None:
        """Integrate `entries` (those whose writer is in `orphans` behind a recovery receipt) and
        sign a checkpoint over the new tree; None when there is nothing to cover."""
        head = conn.execute(self._select_head).one()
        frontier = merkle.Frontier.from_bytes(head.frontier)
        if frontier.size != head.size:
            raise MacroslowError("ledger head is inconsistent; run `macroslow-mcp receipts verify`")
        if not entries and head.checkpoint_size >= head.size:
            return None
        notes = []
        if head.checkpoint_size < head.size:
            self._check_uncovered(conn, head.checkpoint_size, frontier)
            notes.append(
                f"receipts {head.checkpoint_size}..{head.size - 1} were stored but no signed checkpoint "
                "covered them (the server stopped between storing them and signing)"
            )
        lost = [e for e in entries if e.writer in orphans]
        if lost:
            first = frontier.size + 1
            notes.append(
                f"receipts {first}..{first + len(lost) - 1} were sequenced by a server process that stopped "
                "before a checkpoint covered them, so their calls were never answered"
            )
            entries = lost + [e for e in entries if e.writer not in orphans]
        if notes:
            entries = [Entry.new(recovery_draft("; ".join(notes))), *entries]
            log.warning("receipts recovered: %s", "; ".join(notes))
        start = frontier.copy()
        receipts, leaves, rows = [], [], []
        for entry in entries:
            receipt = entry.receipt(frontier.size)
            leaf = merkle.leaf_hash(receipt.leaf_bytes())
            receipts.append(receipt)
            leaves.append(leaf)
            rows.append({**receipt.__dict__, "leaf_hash": leaf})
            frontier.append(leaf)
        conn.execute(insert(ReceiptRow), rows)
        checkpoint = self._sign(conn, frontier)
        conn.execute(
            update(LedgerHead)
            .where(LedgerHead.id == HEAD_ID)
            .values(
                size=frontier.size,
                frontier=frontier.to_bytes(),
                checkpoint_size=frontier.size,
                checkpoint_time=time.time(),
            )
        )
        if head.checkpoint_size < head.size:  # the uncovered rows' leaves belong to this batch's proofs
            start = self._frontier_at(conn, head.checkpoint_size)
            stored = self._leaves(conn, head.checkpoint_size, head.size)
            receipts = self._receipts(conn, head.checkpoint_size, head.size) + receipts
            leaves = stored + leaves
        return Batch(start, receipts, leaves, checkpoint)

    def _sign(self, conn: Connection, frontier: merkle.Frontier) -> StoredCheckpoint:
        """Store a checkpoint of the tree signed with the log's key; the batch fails without one.

        The signature is the C2SP post-quantum checkpoint signature: an ML-DSA-44 timestamped
        signature over the tlog-cosignature `cosigned_message` (label `subtree/v1`, the log's origin
        as the signer's name, the time, start 0, end = the size, the root), on a signature line
        whose key ID is SHA-256(origin || "\n" || 0x06 || public key)[:4]
        (`mcp_server.witness.cosignature`). Standard C2SP tooling verifies it with the log's vkey.
        """
        from mcp_server.witness import cosignature

        key_id, private = self._log_key()
        root = frontier.root()
        text = body(Checkpoint(self.origin, frontier.size, root)).decode("utf-8")
        note = text + "\n" + cosignature.sign_line(text, self.origin, private, int(time.time()))
        created = utc_now()
        conn.execute(
            insert(CheckpointRow).values(
                size=frontier.size,
                root=root,
                key_id=key_id,
                note=note,
                created_at=created,
                frontier=frontier.to_bytes(),
            )
        )
        return StoredCheckpoint(frontier.size, root, key_id, note, created)

    def _log_key(self) -> tuple[str, Any]:
        """The log's ML-DSA-44 signing key (its id and private key), loaded once."""
        if self._private is None:
            if self.keys is None or self.log_key_id is None:
                raise MacroslowError("no log key: receipts cannot be covered by a signed checkpoint")
            try:
                self._private = self.keys.private_key(self.log_key_id)
            except MacroslowError as exc:
                raise MacroslowError(
                    f"this server cannot use the ledger's log key {self.log_key_id} ({exc.message}); "
                    "servers sharing a ledger share the home's keys (keys/ and keys/log)"
                ) from exc
        return self.log_key_id or "", self._private

    # -- recovery -------------------------------------------------------------------------------
    def _frontier_at(self, conn: Connection, size: int) -> merkle.Frontier:
        """The frontier of the first `size` leaves: from the checkpoint at that size if it kept one,
        else rebuilt from the leaf hashes (ledgers from before schema 0004, once)."""
        stored = conn.execute(select(CheckpointRow.frontier).where(CheckpointRow.size == size)).scalar()
        if stored is not None:
            return merkle.Frontier.from_bytes(stored)
        frontier = merkle.Frontier()
        for leaf in self._leaves(conn, 0, size):
            frontier.append(leaf)
        return frontier

    @staticmethod
    def _leaves(conn: Connection, first: int, end: int) -> list[bytes]:
        query = (
            select(ReceiptRow.leaf_hash)
            .where(ReceiptRow.seq >= first, ReceiptRow.seq < end)
            .order_by(ReceiptRow.seq)
        )
        return [bytes(h) for h in conn.execute(query).scalars()]

    @staticmethod
    def _receipts(conn: Connection, first: int, end: int) -> list[Receipt]:
        query = (
            select(ReceiptRow).where(ReceiptRow.seq >= first, ReceiptRow.seq < end).order_by(ReceiptRow.seq)
        )
        return [Receipt(**{n: getattr(r, n) for n in Receipt.field_names()}) for r in conn.execute(query)]

    def _check_uncovered(self, conn: Connection, first: int, head: merkle.Frontier) -> None:
        """Rows past the newest checkpoint must hash to their leaves and to the head's frontier
        before a checkpoint vouches for them."""
        frontier = self._frontier_at(conn, first)
        receipts = self._receipts(conn, first, head.size)
        stored = self._leaves(conn, first, head.size)
        if len(receipts) != head.size - first:
            raise MacroslowError(
                f"receipts {first}..{head.size - 1} are not all present; run `macroslow-mcp receipts verify`"
            )
        for receipt, leaf in zip(receipts, stored, strict=True):
            if merkle.leaf_hash(receipt.leaf_bytes()) != leaf:
                raise MacroslowError(
                    f"receipt {receipt.seq} does not match its leaf hash; it will not be covered "
                    "(run `macroslow-mcp receipts verify`)"
                )
            frontier.append(leaf)
        if frontier != head:
            raise MacroslowError(
                "the receipts past the newest checkpoint do not match the ledger head; they will not be "
                "covered (run `macroslow-mcp receipts verify`)"
            )


def recovery_draft(reason: str) -> Draft:
    return Draft(
        principal="system",
        issuer="",
        token_id=None,
        scopes="",
        tool=RECOVERY_TOOL,
        action=None,
        decision="allowed",
        reason=reason,
        outcome="recovered",
    )
