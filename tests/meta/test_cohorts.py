"""Saved cohorts: project scoping, freezing, export and import (the service, no HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from tests.meta import reference
from tests.meta.corpus import make_series_docs

from jip.base.auth import CurrentUser
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.db import Base
from jip.errors import Conflict, Forbidden, Invalid, NotFound
from jip.meta.cohort_export import EXPORT_FORMAT, parse_export
from jip.meta.cohorts import Cohorts
from jip.meta.fields import ID_FIELD
from jip.meta.query import MATCH_ALL
from jip.meta.service import matching_uids
from jip.runtime import Runtime, build_runtime

ADMIN = CurrentUser("root", is_admin=True)
ALICE = CurrentUser("alice", projects={"liver": ProjectRole.RESEARCHER})
BOB = CurrentUser("bob", projects={"lung": ProjectRole.OWNER, "liver": ProjectRole.VIEWER})
CAROL = CurrentUser("carol", projects={"lung": ProjectRole.RESEARCHER})
CT = {"bool": {"filter": [{"term": {"Modality": "CT"}},
                          {"range": {"SliceThickness": {"lte": 3}}}]}}


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(Settings(data_dir=tmp_path / "data", auth={"enabled": False}))
    for project in ("liver", "lung"):
        runtime.identity.projects.create(project)
    yield runtime
    runtime.close()


def in_projects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Series documents as the indexer writes them: with the series' projects."""
    return [d | {"Projects": ["liver", "lung"]} for d in docs]


@pytest.fixture
def docs(runtime: Runtime) -> list[dict[str, Any]]:
    docs = in_projects(make_series_docs(80, seed=21))
    runtime.index.upsert(docs)
    return docs


@pytest.fixture
def cohorts(runtime: Runtime) -> Cohorts:
    return Cohorts(runtime.engine, runtime.index, "https://site-a.example")


def matching(docs: list[dict[str, Any]], query: dict[str, Any]) -> list[str]:
    return sorted(d[ID_FIELD] for d in reference.search(docs, query))


def test_cohorts_are_seen_only_within_the_callers_projects(cohorts: Cohorts) -> None:
    liver = cohorts.create(ALICE, name="CT liver", query=CT)
    lung = cohorts.create(CAROL, name="CT lung", query=CT, description="for the lung study")
    assert liver.project == "liver" and lung.project == "lung"  # their only project
    assert [c.id for c in cohorts.list(ALICE)] == [liver.id]
    assert {c.id for c in cohorts.list(BOB)} == {liver.id, lung.id}
    assert [c.id for c in cohorts.list(BOB, project="lung")] == [lung.id]
    assert {c.id for c in cohorts.list(ADMIN)} == {liver.id, lung.id}
    with pytest.raises(NotFound):
        cohorts.get(ALICE, lung.id)
    with pytest.raises(NotFound):
        cohorts.series(ALICE, lung.id)
    with pytest.raises(NotFound):
        cohorts.remove(ALICE, lung.id)
    assert cohorts.get(BOB, liver.id).created_by == "alice"


def test_changing_a_cohort_needs_the_researcher_role(cohorts: Cohorts) -> None:
    liver = cohorts.create(ALICE, name="CT liver", query=CT)
    with pytest.raises(Forbidden):
        cohorts.update(BOB, liver.id, name="mine now")  # a viewer of liver
    with pytest.raises(Forbidden):
        cohorts.create(BOB, name="x", query=CT, project="liver")
    with pytest.raises(NotFound):
        cohorts.create(ALICE, name="x", query=CT, project="lung")
    with pytest.raises(Invalid, match="project: name the project"):
        cohorts.create(BOB, name="x", query=CT)  # two projects: which one?
    with pytest.raises(NotFound, match="no project 'nowhere'"):
        cohorts.create(ADMIN, name="x", query=CT, project="nowhere")
    renamed = cohorts.update(ALICE, liver.id, name="CT liver thin", description="≤ 3 mm")
    assert (renamed.name, renamed.description) == ("CT liver thin", "≤ 3 mm")


def test_bad_input_is_invalid_naming_the_part_at_fault(cohorts: Cohorts) -> None:
    with pytest.raises(Invalid, match=r"query\.bool\.filter\[1\]\.range: unknown field 'Thickness'"):
        cohorts.create(ALICE, name="x", query={"bool": {"filter": [
            {"term": {"Modality": "CT"}}, {"range": {"Thickness": {"lte": 3}}}]}})
    with pytest.raises(Invalid, match="name"):
        cohorts.create(ALICE, name="  ", query=CT)
    cohorts.create(ALICE, name="CT", query=CT)
    with pytest.raises(Conflict, match="already has a cohort named 'CT'"):
        cohorts.create(ALICE, name="CT", query=None)


def test_a_live_cohort_runs_its_query_and_a_frozen_one_keeps_its_series(
    cohorts: Cohorts, runtime: Runtime, docs: list[dict[str, Any]]
) -> None:
    live = cohorts.create(ALICE, name="live", query=CT)
    frozen = cohorts.create(ALICE, name="frozen", query=CT, freeze=True)
    wanted = matching(docs, CT)
    assert frozen.frozen and frozen.frozen_series == len(wanted)
    assert cohorts.series_uids(ALICE, live.id) == cohorts.series_uids(ALICE, frozen.id) == wanted

    newer = [d | {ID_FIELD: f"2.25.{i}"} for i, d in enumerate(reference.search(docs, CT)[:3])]
    runtime.index.upsert(newer)
    assert len(cohorts.series_uids(ALICE, live.id)) == len(wanted) + 3
    page = cohorts.series(ALICE, frozen.id, offset=2, limit=5, fields=["Modality"])
    assert page.frozen and page.total == len(wanted)
    assert [h[ID_FIELD] for h in page.hits] == wanted[2:7]
    assert {h["Modality"] for h in page.hits} == {"CT"}

    with pytest.raises(Conflict, match="frozen"):
        cohorts.update(ALICE, frozen.id, query={"term": {"Modality": "MR"}})
    unfrozen = cohorts.unfreeze(ALICE, frozen.id)
    assert not unfrozen.frozen and unfrozen.frozen_series is None
    assert cohorts.series(ALICE, frozen.id, limit=0).total == len(wanted) + 3


def test_a_frozen_series_gone_from_the_index_still_shows_its_uid(
    cohorts: Cohorts, runtime: Runtime, docs: list[dict[str, Any]]
) -> None:
    frozen = cohorts.create(ALICE, name="frozen", query=CT, freeze=True)
    first = matching(docs, CT)[0]
    runtime.index.delete([first])
    assert cohorts.series(ALICE, frozen.id, limit=1).hits == [{ID_FIELD: first}]


def test_matching_uids_walks_past_any_page_size(
    runtime: Runtime, docs: list[dict[str, Any]]
) -> None:
    pages = list(matching_uids(runtime.index, MATCH_ALL, page=7))
    assert all(len(p) == 7 for p in pages[:-1])
    assert [uid for p in pages for uid in p] == sorted(d[ID_FIELD] for d in docs)


def test_export_is_self_contained_and_imports_unchanged(
    cohorts: Cohorts, docs: list[dict[str, Any]]
) -> None:
    saved = cohorts.create(ALICE, name="CT liver", query=CT, description="thin CT",
                           freeze=True)
    document = cohorts.export(ALICE, saved.id)
    assert document["format"] == EXPORT_FORMAT and document["format_version"] == 1
    assert document["query"] == CT and document["source_site"] == "https://site-a.example"
    assert "series" not in document  # site-specific: only on request
    assert document["created_at"] == saved.created_at.isoformat()

    imported = cohorts.import_document(CAROL, document)
    assert (imported.project, imported.name, imported.query) == ("lung", "CT liver", CT)
    assert imported.source_site == "https://site-a.example" and not imported.frozen
    with_series = cohorts.export(ALICE, saved.id, include_series=True)
    assert with_series["series"] == matching(docs, CT)
    again = cohorts.import_document(CAROL, with_series, name="CT liver (frozen)")
    assert again.frozen and again.frozen_series == len(with_series["series"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "format: expected 'jip.cohort'"),
        ({"format_version": 2}, "format_version: this site reads versions 1 to 1"),
        ({"name": ""}, "name:"),
        ({"query": {"range": {"SliceThickness": {"below": 3}}}},
         "query.range.SliceThickness: unknown option 'below'"),
        ({"query": {"terms": {"Modality": "CT"}}}, "query.terms.Modality: expected a list"),
        ({"series": ["1.2.3", "../etc"]}, "series[1]"),
        ({"owner": "x"}, "owner: unknown key"),
    ],
)
def test_import_refuses_a_bad_document_naming_the_part_at_fault(
    change: dict[str, Any], message: str
) -> None:
    document = {"format": EXPORT_FORMAT, "format_version": 1, "name": "CT", "query": CT,
                "description": "", "source_site": "https://a"} | change
    with pytest.raises(Invalid) as raised:
        parse_export(document)
    assert message in str(raised.value)


def test_removing_a_project_removes_its_cohorts(cohorts: Cohorts, runtime: Runtime) -> None:
    saved = cohorts.create(ALICE, name="CT liver", query=CT, freeze=True)
    runtime.identity.projects.remove("liver")
    with pytest.raises(NotFound):
        cohorts.get(ADMIN, saved.id)


def test_cohorts_work_on_every_catalog(catalog_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", catalog_url=catalog_url,
                        auth={"enabled": False})
    runtime = build_runtime(settings)
    try:
        runtime.identity.projects.create("liver")
        docs = in_projects(make_series_docs(30, seed=22))
        runtime.index.upsert(docs)
        cohorts = Cohorts(runtime.engine, runtime.index, "https://site-a.example")
        saved = cohorts.create(ALICE, name="CT", query=CT, freeze=True)
        assert cohorts.series_uids(ALICE, saved.id) == matching(docs, CT)
        assert [c.query for c in cohorts.list(ALICE)] == [CT]
        runtime.identity.projects.remove("liver")
        assert cohorts.list(ADMIN) == []
    finally:
        runtime.close()


def test_migration_creates_the_tables_the_schema_declares(runtime: Runtime) -> None:
    meta_tables = {"meta_instance_summaries", "meta_deleted_series", "meta_cohorts",
                   "meta_cohort_series"}
    with runtime.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    ours = [d for d in diff if _table_of(d) in meta_tables]
    assert ours == []


def _table_of(change: object) -> str | None:
    item = change[0] if isinstance(change, list) else change
    assert isinstance(item, tuple)
    operation = str(item[0])
    if operation.startswith("modify_") or operation.endswith("_column"):
        return str(item[2])
    if operation.endswith("_table"):
        return str(item[1].name)
    return str(item[1].table.name)
