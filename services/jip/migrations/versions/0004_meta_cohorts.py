"""meta: instance summaries, series deletion tombstones, saved cohorts

Revision ID: 0004_meta_cohorts
Revises: 0003_flow
Create Date: 2026-11-28 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_meta_cohorts"
down_revision = "0003_flow"
branch_labels = None
depends_on = None

# A deleted series leaves a tombstone in the store's own transaction, so the indexer
# removes it from the index even after a crash. A later batch (copy-and-move) migration
# of `series` on SQLite drops this trigger and must create it again.
SQLITE_TRIGGERS = [
    "CREATE TRIGGER meta_series_deleted AFTER DELETE ON series "
    "BEGIN INSERT INTO meta_deleted_series (series_instance_uid, deleted_at) "
    "VALUES (OLD.series_instance_uid, CURRENT_TIMESTAMP); END",
]
POSTGRES_TRIGGERS = [
    "CREATE FUNCTION meta_series_deleted() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN INSERT INTO meta_deleted_series (series_instance_uid, deleted_at) "
    "VALUES (OLD.series_instance_uid, now()); RETURN OLD; END $$",
    "CREATE TRIGGER meta_series_deleted AFTER DELETE ON series "
    "FOR EACH ROW EXECUTE FUNCTION meta_series_deleted()",
]


def upgrade() -> None:
    op.create_table(
        "meta_instance_summaries",
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("extracted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sop_instance_uid"], ["instances.sop_instance_uid"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sop_instance_uid"),
    )
    op.create_index(
        "ix_meta_instance_summaries_series_instance_uid",
        "meta_instance_summaries",
        ["series_instance_uid"],
    )
    op.create_table(
        "meta_deleted_series",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_table(
        "meta_cohorts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("query", sa.JSON(), nullable=False),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_site", sa.String(length=512), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project"], ["projects.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "name", name="uq_meta_cohorts_project_name"),
    )
    op.create_index("ix_meta_cohorts_project", "meta_cohorts", ["project"])
    op.create_table(
        "meta_cohort_series",
        sa.Column("cohort_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["cohort_id"], ["meta_cohorts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("cohort_id", "position"),
    )
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS}.get(
        dialect, []
    ):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS meta_series_deleted")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS meta_series_deleted ON series")
        op.execute("DROP FUNCTION IF EXISTS meta_series_deleted()")
    op.drop_table("meta_cohort_series")
    op.drop_index("ix_meta_cohorts_project", table_name="meta_cohorts")
    op.drop_table("meta_cohorts")
    op.drop_table("meta_deleted_series")
    op.drop_index(
        "ix_meta_instance_summaries_series_instance_uid", table_name="meta_instance_summaries"
    )
    op.drop_table("meta_instance_summaries")
