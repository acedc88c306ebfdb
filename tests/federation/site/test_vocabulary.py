"""One vocabulary: a cohort query in network terms selects the same series at two sites
that write body parts and series descriptions differently, once each maps its own
values; proposals come from the site's frequent values and change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine

from jip.cli.main import _register, cli
from jip.db import Base, make_engine
from jip.errors import Invalid, NotFound
from jip.federation.site import Vocabulary, suggest
from jip.meta import cohort_values
from jip.meta.index_sqlite import SqliteIndex
from jip.migrations import upgrade

PROJECT = "prostate"
UID = "1.2.826.0.1.3680043.8.498.{}"
# What each series is, in the network's words, and how each site writes it.
SERIES = [("prostate", "dwi")] * 5 + [("prostate", "dwi")] * 2 + [("prostate", "t2")] * 3
SERIES += [("liver", "t2")] * 4
SITE_A = (
    {"prostate": "PROSTATA", "liver": "LIVER"},
    ["ep2d_diff_b50_800"] * 5 + ["ep2d_diff_tra"] * 2 + ["t2_tse_tra"] * 7,
)
SITE_B = (
    {"prostate": "PROSTATE_GLAND", "liver": "Leber"},
    ["DWI b800"] * 5 + ["dwi_tra"] * 2 + ["T2W"] * 7,
)
MAPPINGS_A = [
    ("BodyPartExamined", "PROSTATA", "prostate"),
    ("SeriesDescription", "ep2d_diff*", "dwi"),
    ("SeriesDescription", "t2_tse*", "t2"),
]
MAPPINGS_B = [
    ("BodyPartExamined", "PROSTATE_GLAND", "Prostate"),  # network terms compare case-folded
    ("BodyPartExamined", "Leber", "liver"),
    ("SeriesDescription", "DWI b800", "dwi"),
    ("SeriesDescription", "dwi_tra", "dwi"),
    ("SeriesDescription", "T2W", "t2"),
]


@dataclass
class Site:
    engine: Engine
    index: SqliteIndex
    vocabulary: Vocabulary

    def cohort(self, query: dict[str, Any]) -> set[str]:
        local = self.vocabulary.translate(query)
        return set(cohort_values(self.index, local, PROJECT, ["BodyPartExamined"]))


def documents(words: tuple[dict[str, str], list[str]]) -> list[dict[str, Any]]:
    parts, descriptions = words
    return [
        {
            "SeriesInstanceUID": UID.format(i + 1),
            "StudyInstanceUID": UID.format(1000 + i),
            "Modality": "MR",
            "BodyPartExamined": parts[part],
            "SeriesDescription": description,
            "Projects": [PROJECT],
        }
        for i, ((part, _), description) in enumerate(zip(SERIES, descriptions, strict=True))
    ]


def make(directory: Path, words: tuple[dict[str, str], list[str]]) -> Site:
    directory.mkdir()
    url = f"sqlite:///{directory / 'catalog.db'}"
    upgrade(url)
    index = SqliteIndex.from_url(f"sqlite:///{directory / 'index.db'}")
    index.upsert(documents(words))
    engine = make_engine(url)
    return Site(engine, index, Vocabulary(engine))


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    a, b = make(tmp_path / "a", SITE_A), make(tmp_path / "b", SITE_B)
    yield a, b
    for site in (a, b):
        site.index.close()
        site.engine.dispose()


def expected(*wanted: tuple[str, str] | str) -> set[str]:
    return {
        UID.format(i + 1)
        for i, (part, kind) in enumerate(SERIES)
        if (part, kind) in wanted or part in wanted
    }


def mapped(sites: tuple[Site, Site]) -> tuple[Site, Site]:
    for site, mappings in zip(sites, (MAPPINGS_A, MAPPINGS_B), strict=True):
        for field, local, network in mappings:
            site.vocabulary.set(field, local, network, by="cli:admin")
    return sites


PROSTATE_DWI = {
    "bool": {
        "filter": [
            {"term": {"BodyPartExamined": "prostate"}},
            {"term": {"SeriesDescription.keyword": "dwi"}},
        ]
    }
}


def test_a_network_query_selects_the_same_series_at_two_sites(
    sites: tuple[Site, Site],
) -> None:
    a, b = sites
    assert a.cohort(PROSTATE_DWI) == b.cohort(PROSTATE_DWI) == set()  # nothing is mapped yet
    mapped(sites)
    assert a.cohort(PROSTATE_DWI) == b.cohort(PROSTATE_DWI) == expected(("prostate", "dwi"))
    as_text = {"bool": {"must": [{"term": {"BodyPartExamined": {"value": "PROSTATE"}}}, {"match": {"SeriesDescription": "DWI"}}]}}  # fmt: skip
    assert a.cohort(as_text) == b.cohort(as_text) == expected(("prostate", "dwi"))
    not_dwi = {
        "bool": {
            "filter": {"term": {"BodyPartExamined": "prostate"}},
            "must_not": [{"term": {"SeriesDescription.keyword": "dwi"}}],
        }
    }
    assert a.cohort(not_dwi) == b.cohort(not_dwi) == expected(("prostate", "t2"))
    t2 = {"bool": {"should": [{"term": {"SeriesDescription.keyword": "t2"}}]}}
    assert a.cohort(t2) == b.cohort(t2) == expected(("prostate", "t2"), ("liver", "t2"))


def test_unmapped_terms_pass_through_and_mix_with_mapped_ones(
    sites: tuple[Site, Site],
) -> None:
    a, b = mapped(sites)
    # "Leber" is no network term: it passes through as the local value it is at site B.
    mixed = {"terms": {"BodyPartExamined": ["prostate", "Leber"]}}
    assert a.cohort(mixed) == expected("prostate")
    assert b.cohort(mixed) == expected("prostate", "liver")
    # Site A never mapped its LIVER: the network's "liver" finds nothing there.
    liver = {"term": {"BodyPartExamined": "liver"}}
    assert a.cohort(liver) == set() and b.cohort(liver) == expected("liver")


def test_translate_rewrites_only_mapped_terms_and_leaves_its_input_alone(
    sites: tuple[Site, Site],
) -> None:
    a, _ = mapped(sites)
    query = {
        "bool": {
            "filter": [
                {"term": {"BodyPartExamined": "prostate"}},
                {"term": {"SeriesDescription.keyword": "dwi"}},
                {"range": {"PatientAgeYears": {"gte": 50}}},
                {"term": {"Modality": "MR"}},
            ],
            "minimum_should_match": 0,
        }
    }
    before = json.dumps(query, sort_keys=True)
    local = a.vocabulary.translate(query)
    assert json.dumps(query, sort_keys=True) == before
    expected_filter = [
        {"term": {"BodyPartExamined": "PROSTATA"}},
        {"wildcard": {"SeriesDescription.keyword": "ep2d_diff*"}},
        *query["bool"]["filter"][2:],  # range and Modality: not mapped, as they were
    ]
    assert local == {"bool": {"filter": expected_filter, "minimum_should_match": 0}}
    a.vocabulary.set("SeriesDescription", "DIFF_TRACE", "dwi", by="cli:admin")
    assert a.vocabulary.translate({"match": {"SeriesDescription": "dwi"}}) == {
        "bool": {
            "should": [
                {"term": {"SeriesDescription.keyword": "DIFF_TRACE"}},
                {"wildcard": {"SeriesDescription.keyword": "ep2d_diff*"}},
            ],
            "minimum_should_match": 1,
        }
    }
    for untouched in ({}, {"match_all": {}}, {"wildcard": {"BodyPartExamined": "pros*"}}):
        assert a.vocabulary.translate(untouched) == untouched


def test_a_local_value_means_one_network_term_and_fields_are_checked(
    sites: tuple[Site, Site],
) -> None:
    a, _ = sites
    a.vocabulary.set("BodyPartExamined", "PROSTATA", "pelvis", by="cli:admin")
    a.vocabulary.set("BodyPartExamined", "PROSTATA", " Prostate ", by="cli:admin")
    (only,) = a.vocabulary.list()
    assert (only.local, only.network, only.pattern) == ("PROSTATA", "prostate", False)
    a.vocabulary.remove("BodyPartExamined", "PROSTATA")
    assert a.vocabulary.list() == []
    with pytest.raises(NotFound, match="not mapped"):
        a.vocabulary.remove("BodyPartExamined", "PROSTATA")
    with pytest.raises(Invalid, match="mappable"):
        a.vocabulary.set("PatientAgeYears", "60", "old", by="cli:admin")
    with pytest.raises(Invalid, match="mappable"):
        a.vocabulary.set("NoSuchField", "x", "y", by="cli:admin")


def test_suggestions_come_from_frequent_values_with_counts_and_apply_nothing(
    sites: tuple[Site, Site],
) -> None:
    a, b = sites
    found = {(s.local, s.network, s.count, s.rule) for s in suggest(b.vocabulary, b.index, "BodyPartExamined")}  # fmt: skip
    assert found == {
        ("PROSTATE_GLAND", "prostate", 10, "synonym"),
        ("Leber", "liver", 4, "synonym"),
    }
    series = {s.local: s.network for s in suggest(a.vocabulary, a.index, "SeriesDescription")}
    assert series == {"ep2d_diff_b50_800": "dwi", "ep2d_diff_tra": "dwi", "t2_tse_tra": "t2"}
    assert a.vocabulary.list() == [] and b.vocabulary.list() == []
    a.vocabulary.set("SeriesDescription", "ep2d_diff_tra", "dwi", by="cli:admin")
    now = {s.local: s.mapped for s in suggest(a.vocabulary, a.index, "SeriesDescription", top=2)}
    assert now == {"t2_tse_tra": None, "ep2d_diff_b50_800": None}  # the two most frequent


def test_mapping_from_the_command_line(tmp_path: Path) -> None:
    _register()
    data_dir = tmp_path / "data"

    def fed(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "fed", "mapping", *args])
        assert result.exit_code == 0, result.output
        return result.output

    data_dir.mkdir()
    index = SqliteIndex.from_url(f"sqlite:///{data_dir / 'index.db'}")
    index.upsert(documents(SITE_A))
    index.close()
    proposed = json.loads(fed("suggest", "--field", "BodyPartExamined", "--json"))
    assert [(p["local"], p["network"], p["count"]) for p in proposed] == [
        ("PROSTATA", "prostate", 10),
        ("LIVER", "liver", 4),
    ]
    assert json.loads(fed("list", "--json")) == []
    fed("set", "SeriesDescription", "ep2d_diff*", "DWI")
    assert json.loads(fed("list", "--json")) == [
        {"field": "SeriesDescription", "local": "ep2d_diff*", "network": "dwi", "pattern": True}
    ]
    fed("remove", "SeriesDescription", "ep2d_diff*")
    assert "SeriesDescription" not in fed("list")


def test_the_vocabulary_and_carried_tables_migrate_as_the_orm_says(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    upgrade(url)
    ours = {"fed_vocabulary", "fed_carried_jobs"}
    engine = make_engine(url)
    with engine.connect() as conn:

        def only_ours(obj: Any, name: str | None, kind: str, reflected: bool, _: Any) -> bool:
            table = name if kind == "table" else getattr(obj, "table", None)
            return str(getattr(table, "name", table)) in ours

        context = MigrationContext.configure(
            conn, opts={"include_object": only_ours, "compare_type": True}
        )
        assert compare_metadata(context, Base.metadata) == []
        assert ours <= set(Base.metadata.tables)
    engine.dispose()
