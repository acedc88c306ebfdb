"""store: DICOM peers editable at runtime (they add to and override store.peers),
with the projects each may query and retrieve

Revision ID: 0006_dicom_peers
Revises: 0005_projects_data
Create Date: 2026-11-25 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_dicom_peers"
down_revision = "0005_projects_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_peers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        # What the peer's C-FIND/C-MOVE/C-GET see when it calls us; [] for everything.
        sa.Column("projects", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # C-MOVE looks a destination up by AE title (PS3.4 C.4.2.1.4.1).
    op.create_index("ix_dicom_peers_ae_title", "dicom_peers", ["ae_title"])


def downgrade() -> None:
    op.drop_index("ix_dicom_peers_ae_title", table_name="dicom_peers")
    op.drop_table("dicom_peers")
