"""store: retrievals from DICOM peers (the PACS page) and saved queries run nightly

Revision ID: 0012_pacs_retrievals
Revises: 0011_fed_bundles_vocabulary
Create Date: 2026-12-07 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_pacs_retrievals"
down_revision = "0011_fed_bundles_vocabulary"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_retrievals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("saved_query_id", sa.Integer(), nullable=True),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("study_uids", sa.JSON(), nullable=False),
        sa.Column("found", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("studies_done", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("warning", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_dicom_retrievals_saved_query_id", "dicom_retrievals", ["saved_query_id"])
    op.create_index("ix_dicom_retrievals_created_at", "dicom_retrievals", ["created_at"])
    op.create_table(
        "dicom_saved_queries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("query", sa.JSON(), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("run_at", sa.String(5), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dicom_saved_queries_next_run_at", "dicom_saved_queries", ["next_run_at"])


def downgrade() -> None:
    op.drop_index("ix_dicom_saved_queries_next_run_at", "dicom_saved_queries")
    op.drop_table("dicom_saved_queries")
    op.drop_index("ix_dicom_retrievals_created_at", "dicom_retrievals")
    op.drop_index("ix_dicom_retrievals_saved_query_id", "dicom_retrievals")
    op.drop_table("dicom_retrievals")
