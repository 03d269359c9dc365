"""Initial schema: per-principal quotas, and the receipts ledger (receipts, head, checkpoints, meta).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# 64-bit counters on PostgreSQL; INTEGER on SQLite (64-bit there, and the rowid for a primary key).
COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("principal", sa.String(512), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "llm_budgets",
        sa.Column("principal", sa.String(512), primary_key=True),
        sa.Column("period", sa.Integer, nullable=False),
        sa.Column("used", sa.Integer, nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
    )
    op.create_table(
        "receipts",
        sa.Column("seq", COUNTER, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(300), nullable=False),
        sa.Column("issuer", sa.String(300), nullable=False),
        sa.Column("token_id", sa.String(128)),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16)),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("document_id", sa.String(64)),
        sa.Column("document_digest", sa.String(80)),
        sa.Column("arguments_digest", sa.String(80)),
        sa.Column("result_digest", sa.String(80)),
        sa.Column("backend_job_id", sa.String(128)),
        sa.Column("duration_us", COUNTER, nullable=False),
        sa.Column("payload", sa.Text),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    )
    # One secondary index: a caller's own receipts, newest first (what list_receipts shows most).
    # Other filters walk the primary key from the newest receipt down; every index is one more
    # B-tree written, and flushed, on each append.
    op.create_index("ix_receipts_principal_seq", "receipts", ["principal", "seq"])
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", COUNTER, nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
        sa.Column("checkpoint_size", COUNTER, nullable=False),
        sa.Column("checkpoint_time", sa.Float, nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("size", COUNTER, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "ledger_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("ledger_meta", "checkpoints", "ledger_head", "receipts", "llm_budgets", "rate_buckets"):
        op.drop_table(table)
