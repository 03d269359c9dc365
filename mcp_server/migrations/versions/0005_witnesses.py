"""Witnesses: the cosignatures witnesses gave the log's checkpoints, and, for this server acting as
a witness (`macroslow-mcp witness serve`), the latest checkpoint it cosigned per log.

The log's own checkpoints are signed with an ML-DSA-44 key from now on (its id in `ledger_meta`,
made at the next start); older checkpoints keep their signatures and still verify.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_cosignatures",
        sa.Column("size", COUNTER, primary_key=True, autoincrement=False),
        sa.Column("witness", sa.String(255), primary_key=True),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "witness_checkpoints",
        sa.Column("origin", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("witness_checkpoints")
    op.drop_table("checkpoint_cosignatures")
