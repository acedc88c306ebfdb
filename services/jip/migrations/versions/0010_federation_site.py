"""federation: the site agent's jobs, policy, trusted keys and released-cohort ledger

Revision ID: 0010_federation_site
Revises: 0009_flow_run_token
Create Date: 2026-12-04 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_federation_site"
down_revision = "0009_flow_run_token"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fed_jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("result_posted", sa.Boolean(), nullable=False),
        sa.Column("reported_state", sa.String(32), nullable=True),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "round", name="uq_fed_jobs_round"),
    )
    op.create_index("ix_fed_jobs_job_id", "fed_jobs", ["job_id"])
    op.create_table(
        "fed_policy",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fed_trusted_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("public_key", sa.String(44), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fed_released_cohorts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("series", sa.JSON(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_fed_released_cohorts_job_id", "fed_released_cohorts", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_fed_released_cohorts_job_id", "fed_released_cohorts")
    op.drop_table("fed_released_cohorts")
    op.drop_table("fed_trusted_keys")
    op.drop_table("fed_policy")
    op.drop_index("ix_fed_jobs_job_id", "fed_jobs")
    op.drop_table("fed_jobs")
