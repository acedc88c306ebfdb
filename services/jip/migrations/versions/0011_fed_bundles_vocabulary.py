"""federation: jobs carried by hand in signed bundles, and the site's vocabulary mapping

Revision ID: 0011_fed_bundles_vocabulary
Revises: 0010_federation_site
Create Date: 2026-12-07 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_fed_bundles_vocabulary"
down_revision = "0010_federation_site"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fed_carried_jobs",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("signer", sa.String(16), nullable=False),
        sa.Column("bundle_size", sa.Integer(), nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("imported_by", sa.String(64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fed_vocabulary",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("local", sa.String(256), nullable=False),
        sa.Column("network", sa.String(128), nullable=False),
        sa.Column("pattern", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("field", "local", name="uq_fed_vocabulary_local"),
    )
    op.create_index("ix_fed_vocabulary_field", "fed_vocabulary", ["field"])


def downgrade() -> None:
    op.drop_index("ix_fed_vocabulary_field", "fed_vocabulary")
    op.drop_table("fed_vocabulary")
    op.drop_table("fed_carried_jobs")
