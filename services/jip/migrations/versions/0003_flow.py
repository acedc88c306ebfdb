"""flow: runs started by JIP, their results, human review steps, auto-rules and firings

Revision ID: 0003_flow
Revises: 0002_base_identity
Create Date: 2026-11-27 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_flow"
down_revision = "0002_base_identity"
branch_labels = None
depends_on = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=16, create_constraint=False)


def upgrade() -> None:
    op.create_table(
        "flow_runs",
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("series", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("cohort_id", sa.String(length=64), nullable=True),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_flow_runs_dag_id", "flow_runs", ["dag_id"])
    op.create_index("ix_flow_runs_rule_id", "flow_runs", ["rule_id"])
    op.create_index("ix_flow_runs_created_at", "flow_runs", ["created_at"])
    op.create_table(
        "flow_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("kind", _enum("resultkind", "dicom", "file"), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("result_series_uid", sa.String(length=64), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "kind", "key", name="uq_flow_results_key"),
    )
    op.create_index("ix_flow_results_run_id", "flow_results", ["run_id"])
    op.create_index("ix_flow_results_series_instance_uid", "flow_results", ["series_instance_uid"])
    op.create_index("ix_flow_results_result_series_uid", "flow_results", ["result_series_uid"])
    op.create_table(
        "flow_reviews",
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("seg_series_uid", sa.String(length=64), nullable=True),
        sa.Column("done_by", sa.String(length=64), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "series_instance_uid"),
    )
    op.create_table(
        "flow_rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("query", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "flow_rule_firings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("outcome", _enum("firingoutcome", "started", "failed"), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["rule_id"], ["flow_rules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rule_id", "series_instance_uid", name="uq_flow_rule_firings"),
    )


def downgrade() -> None:
    op.drop_table("flow_rule_firings")
    op.drop_table("flow_rules")
    op.drop_table("flow_reviews")
    op.drop_index("ix_flow_results_result_series_uid", table_name="flow_results")
    op.drop_index("ix_flow_results_series_instance_uid", table_name="flow_results")
    op.drop_index("ix_flow_results_run_id", table_name="flow_results")
    op.drop_table("flow_results")
    op.drop_index("ix_flow_runs_created_at", table_name="flow_runs")
    op.drop_index("ix_flow_runs_rule_id", table_name="flow_runs")
    op.drop_index("ix_flow_runs_dag_id", table_name="flow_runs")
    op.drop_table("flow_runs")
