"""forwarding: rules that send matching series to a peer, and their queue (dead letters)

Revision ID: 0013_forwarding
Revises: 0012_pacs_retrievals
Create Date: 2026-12-07 13:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# Registers the tables on Base.metadata for processes that compare it with the database.
import jip.flow.forwarding_schema  # noqa: F401

revision = "0013_forwarding"
down_revision = "0012_pacs_retrievals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forward_rules",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("query", sa.JSON(), nullable=False),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "forward_items",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "rule_id",
            sa.Integer(),
            sa.ForeignKey("forward_rules.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("rule_id", "series_instance_uid", name="uq_forward_items_rule_series"),
    )
    op.create_index("ix_forward_items_state_due", "forward_items", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_forward_items_state_due", "forward_items")
    op.drop_table("forward_items")
    op.drop_table("forward_rules")
