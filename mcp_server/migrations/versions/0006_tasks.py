"""Tasks (the MCP tasks extension, `io.modelcontextprotocol/tasks`): one row per task a tool call
was answered with, so any server process sharing the database can answer `tasks/get`,
`tasks/update` and `tasks/cancel` for it. A task backed by a quantum job names the job
(`job_id`) and follows its row; a task whose work runs in a server process (`runner`, with a
heartbeat) keeps its own status and its final result or error.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(300), nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("ttl_seconds", sa.Float),
        sa.Column("job_id", sa.String(36)),
        sa.Column("view", sa.Text),
        sa.Column("runner", sa.String(64)),
        sa.Column("heartbeat_at", sa.Float),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_tasks_status", "tasks", ["status"])


def downgrade() -> None:
    op.drop_table("tasks")
