"""enrolled devices and the result ledger

Revision ID: 0002
Revises: 0001
Create Date: 2024-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("salt", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=True),
        sa.Column("last_seen", sa.Float(), nullable=True),
        sa.Column("state", sa.String(), server_default="offline", nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_devices"),
    )
    op.create_table(
        "results",
        sa.Column("constellation_id", sa.String(), nullable=False),
        sa.Column("star_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("constellation_id", "star_id", "attempt", name="pk_results"),
    )


def downgrade() -> None:
    op.drop_table("results")
    op.drop_table("devices")
