"""store: series belong to projects; project assignment rules; the default project

Revision ID: 0005_projects_data
Revises: 0004_meta_cohorts
Create Date: 2026-11-25 15:30:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005_projects_data"
down_revision = "0004_meta_cohorts"
branch_labels = None
depends_on = None

DEFAULT_PROJECT = "default"  # store.default_project's default; jip up creates another


def upgrade() -> None:
    op.create_table(
        "series_projects",
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assigned_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_instance_uid"], ["series.series_instance_uid"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["project"], ["projects.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("series_instance_uid", "project"),
    )
    op.create_index("ix_series_projects_project", "series_projects", ["project"])
    op.create_table(
        "project_rules",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=False),
        sa.Column("pattern", sa.String(length=128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project"], ["projects.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_project_rules_project", "project_rules", ["project"])
    # Series catalogued before projects existed go to the default project, so a site
    # that upgrades keeps showing its data to that project's members.
    projects = sa.table(
        "projects",
        sa.column("name", sa.String),
        sa.column("description", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    now = datetime.now(UTC)
    exists = bind.execute(
        sa.select(projects.c.name).where(projects.c.name == DEFAULT_PROJECT)
    ).first()
    if exists is None:
        op.bulk_insert(
            projects,
            [{"name": DEFAULT_PROJECT, "description": "Series that no assignment rule matches",
              "created_at": now}],
        )
    bind.execute(
        sa.text(
            "INSERT INTO series_projects (series_instance_uid, project, assigned_at,"
            " assigned_by) SELECT series_instance_uid, :project, :now, 'default' FROM series"
        ).bindparams(project=DEFAULT_PROJECT, now=now)
    )


def downgrade() -> None:
    op.drop_index("ix_project_rules_project", table_name="project_rules")
    op.drop_table("project_rules")
    op.drop_index("ix_series_projects_project", table_name="series_projects")
    op.drop_table("series_projects")
