"""Sequencing apart from integration: the receipt queue, and each checkpoint's frontier.

A ledger from 0003 is upgraded in place: its receipts and checkpoints stay as they are (older
checkpoints get no frontier), and receipts that no checkpoint covers yet are covered at the next
start, behind a recovery receipt that names them (`Ledger.recover`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipt_queue",
        sa.Column("entry", COUNTER, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("writer", sa.String(64), nullable=False),
        sa.Column("draft", sa.Text, nullable=False),
    )
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("frontier", sa.LargeBinary, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # The integrator LISTENs: each transaction that queues receipts wakes it once, at commit.
        op.execute(
            "CREATE FUNCTION macroslow_receipt_queued() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_notify('macroslow_ledger_queued', ''); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER receipt_queued AFTER INSERT ON receipt_queue "
            "FOR EACH STATEMENT EXECUTE FUNCTION macroslow_receipt_queued()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS receipt_queued ON receipt_queue")
        op.execute("DROP FUNCTION IF EXISTS macroslow_receipt_queued()")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("frontier")
    op.drop_table("receipt_queue")
