"""The ledger's tables (SQLAlchemy 2.0 typed ORM). The schema itself is made by the Alembic
migrations in `mcp_server/migrations`; these classes must match them.

- `receipts`: one row per tool call, `seq` = its leaf index in the Merkle log (0-based, contiguous).
- `receipt_queue`: receipts sequenced but not yet integrated (PostgreSQL: any process writes one
  row, without a log-wide lock; the integrator moves them into `receipts`). `entry` orders them.
- `ledger_head`: one row (`id = 1`): the tree size and its frontier (compact range). Only the
  integrator writes it (one at a time: a PostgreSQL advisory lock, SQLite's write lock), so the log
  never forks.
- `checkpoints`: signed tree heads (C2SP signed notes), one per integrated batch, with the frontier
  at that size (null for checkpoints older than schema 0004), from which proofs of the next batch
  are made without reading the log.
- `checkpoint_cosignatures`: witnesses' cosignature lines, per checkpoint and witness.
- `ledger_meta`: the log's identity (its random origin name) and the id of its ML-DSA-44 key.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db import Base

# 64-bit counters on PostgreSQL (INT4 would run out after 2^31 receipts); plain INTEGER on SQLite,
# where it is 64-bit anyway and an INTEGER PRIMARY KEY is the fast rowid.
Counter = BigInteger().with_variant(Integer(), "sqlite")


class ReceiptRow(Base):
    __tablename__ = "receipts"
    __table_args__ = (Index("ix_receipts_principal_seq", "principal", "seq"),)

    seq: Mapped[int] = mapped_column(Counter, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[str] = mapped_column(String(32))
    principal: Mapped[str] = mapped_column(String(300))
    issuer: Mapped[str] = mapped_column(String(300))
    token_id: Mapped[str | None] = mapped_column(String(128))
    scopes: Mapped[str] = mapped_column(Text)
    tool: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    document_id: Mapped[str | None] = mapped_column(String(64))
    document_digest: Mapped[str | None] = mapped_column(String(80))
    arguments_digest: Mapped[str | None] = mapped_column(String(80))
    result_digest: Mapped[str | None] = mapped_column(String(80))
    backend_job_id: Mapped[str | None] = mapped_column(String(128))
    duration_us: Mapped[int] = mapped_column(Counter)
    payload: Mapped[str | None] = mapped_column(Text)
    attestation: Mapped[str | None] = mapped_column(Text)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class QueuedReceipt(Base):
    __tablename__ = "receipt_queue"

    entry: Mapped[int] = mapped_column(Counter, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[str] = mapped_column(String(32))
    writer: Mapped[str] = mapped_column(String(64))
    draft: Mapped[str] = mapped_column(Text)  # the Draft's fields as canonical JSON


class LedgerHead(Base):
    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(Counter)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    checkpoint_size: Mapped[int] = mapped_column(Counter)
    checkpoint_time: Mapped[float] = mapped_column()


class CheckpointRow(Base):
    __tablename__ = "checkpoints"

    size: Mapped[int] = mapped_column(Counter, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    key_id: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(32))
    frontier: Mapped[bytes | None] = mapped_column(LargeBinary)


class CosignatureRow(Base):
    """A witness's cosignature line of one checkpoint (c2sp.org/tlog-cosignature), as it answered."""

    __tablename__ = "checkpoint_cosignatures"

    size: Mapped[int] = mapped_column(Counter, primary_key=True, autoincrement=False)
    witness: Mapped[str] = mapped_column(String(255), primary_key=True)
    line: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(32))


class LedgerMeta(Base):
    __tablename__ = "ledger_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
