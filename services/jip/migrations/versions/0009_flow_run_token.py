"""flow: a run's projects (its token's scope) and when JIP closed its token

Revision ID: 0009_flow_run_token
Revises: 0008_base_token_revocation
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_flow_run_token"
down_revision = "0008_base_token_revocation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        # The projects the run works for: its token's scope, checked for cancel and review.
        batch.add_column(sa.Column("projects", sa.JSON(), nullable=True))
        # When JIP saw the run end and revoked its token (null: not yet).
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("closed_at")
        batch.drop_column("projects")
