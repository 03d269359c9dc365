"""Quantum jobs: one row per run_quantum_circuit job (local or Azure), in the ledger's database so
every server process sharing it can answer for any job; and a receipt's `attestation` (what a
backend run attests: circuit, backend, target, shots, seed, counts digest).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

COUNTER = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("receipts") as batch:
        batch.add_column(sa.Column("attestation", sa.Text))
    op.create_table(
        "quantum_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("principal", sa.String(300), nullable=False),
        sa.Column("issuer", sa.String(300), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("qubits", sa.Integer, nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("shots", sa.Integer, nullable=False),
        sa.Column("seed", COUNTER),
        sa.Column("gate_counts", sa.Text, nullable=False),
        sa.Column("circuit_digest", sa.String(80), nullable=False),
        sa.Column("document_id", sa.String(64)),
        sa.Column("method", sa.String(32)),
        sa.Column("remote_id", sa.String(128)),
        sa.Column("runner", sa.String(64)),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_quantum_jobs_principal_created", "quantum_jobs", ["principal", "created_at"])
    op.create_index("ix_quantum_jobs_status", "quantum_jobs", ["status"])


def downgrade() -> None:
    op.drop_table("quantum_jobs")
    with op.batch_alter_table("receipts") as batch:
        batch.drop_column("attestation")
