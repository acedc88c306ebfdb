"""flow: a run is recorded before it is triggered; a trigger that fails marks it failed

Revision ID: 0007_flow_run_start
Revises: 0006_dicom_peers
Create Date: 2026-12-01 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_flow_run_start"
down_revision = "0006_dicom_peers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null: triggered (or being triggered); else why Airflow never got the run.
    with op.batch_alter_table("flow_runs") as batch:
        batch.add_column(sa.Column("start_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("start_error")
