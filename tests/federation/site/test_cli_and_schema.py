"""`jip fed` on a site's data dir, and the fed_ tables' migration against the ORM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

import jip.federation.site.schema as fed_schema
from jip.cli.main import _register, cli
from jip.db import Base, make_engine
from jip.federation import encode_key, generate_signing_keys
from jip.migrations import upgrade


def run(data_dir: Path, *args: str) -> Any:
    _register()
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "fed", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_policy_and_trust_from_the_command_line(tmp_path: Path) -> None:
    shown = json.loads(run(tmp_path, "policy", "show", "--json"))
    assert shown["approval"] == "manual" and shown["projects"] == []  # safe defaults
    run(
        tmp_path,
        "policy",
        "set",
        "projects=prostate,liver",
        "approval=automatic",
        "min_cohort_size=20",
    )
    shown = json.loads(run(tmp_path, "policy", "show", "--json"))
    assert shown["projects"] == ["prostate", "liver"] and shown["min_cohort_size"] == 20
    key = encode_key(generate_signing_keys().public)
    assert "Trusting publisher" in run(tmp_path, "trust", "add", "publisher", key)
    assert json.loads(run(tmp_path, "trust", "list", "--json"))[0]["name"] == "publisher"
    _register()
    bad = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path), "fed", "policy", "set", "approval=sometimes"]
    )
    assert bad.exit_code != 0 and "approval" in bad.output
    assert json.loads(run(tmp_path, "queue", "--json")) == []


def test_the_fed_tables_migration_matches_the_orm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    upgrade(url)
    ours = {t.name for t in Base.metadata.sorted_tables if t.name.startswith("fed_")}
    assert ours == {
        "fed_jobs",
        "fed_policy",
        "fed_trusted_keys",
        "fed_released_cohorts",
        "fed_carried_jobs",
        "fed_vocabulary",
    }
    assert fed_schema.FedJob.__tablename__ in ours
    engine = make_engine(url)
    with engine.connect() as conn:

        def only_fed(obj: Any, name: str | None, kind: str, reflected: bool, _: Any) -> bool:
            table = name if kind == "table" else getattr(obj, "table", None)
            return str(getattr(table, "name", table)).startswith("fed_")

        context = MigrationContext.configure(
            conn, opts={"include_object": only_fed, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
