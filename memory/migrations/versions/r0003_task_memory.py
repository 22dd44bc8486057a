"""the task memory tree, consolidated requests and tool durations

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "memory_nodes",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["memory_nodes.id"],
            name="fk_memory_nodes_parent_id_memory_nodes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_memory_nodes"),
    )
    op.create_index("ix_memory_nodes_parent_id", "memory_nodes", ["parent_id"])
    op.create_index("ix_memory_nodes_request_id", "memory_nodes", ["request_id"])
    op.create_table(
        "memory_revisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["memory_nodes.id"],
            name="fk_memory_revisions_node_id_memory_nodes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_memory_revisions"),
        sa.UniqueConstraint("node_id", "revision", name="uq_memory_revisions_node_id_revision"),
    )
    op.create_table(
        "memory_requests",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("constellation_id", sa.String(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("indexed", sa.Boolean(), nullable=False),
        sa.Column("forgotten", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["id"],
            ["memory_nodes.id"],
            name="fk_memory_requests_id_memory_nodes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_memory_requests"),
    )
    op.create_index("ix_memory_requests_created_at", "memory_requests", ["created_at"])
    op.create_index(
        "ix_memory_requests_indexed_forgotten", "memory_requests", ["indexed", "forgotten"]
    )
    op.create_table(
        "tool_durations",
        sa.Column("tool", sa.String(), nullable=False),
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("total_seconds", sa.Float(), nullable=False),
        sa.Column("mean_seconds", sa.Float(), nullable=False),
        sa.Column("last_seconds", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tool", "device", name="pk_tool_durations"),
    )


def downgrade() -> None:
    op.drop_table("tool_durations")
    op.drop_index("ix_memory_requests_indexed_forgotten", table_name="memory_requests")
    op.drop_index("ix_memory_requests_created_at", table_name="memory_requests")
    op.drop_table("memory_requests")
    op.drop_table("memory_revisions")
    op.drop_index("ix_memory_nodes_request_id", table_name="memory_nodes")
    op.drop_index("ix_memory_nodes_parent_id", table_name="memory_nodes")
    op.drop_table("memory_nodes")
