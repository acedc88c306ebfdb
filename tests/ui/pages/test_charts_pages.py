"""The Explore and cohort pages' charts: the caller's series only, as the page selects them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.base.support import add_user, auth_for
from tests.ui.pages.support import browser_login

from jip.base.schema import ProjectRole
from jip.meta.indexer import Indexer
from jip.runtime import Runtime
from jip.samples import synthetic_site, write_datasets
from jip.store import SeriesProjects

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def seen(runtime: Runtime, client: TestClient, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """A site whose first study belongs to project "other" only; rita (default) logged in.
    Returns what rita may see: series UID -> its headers."""
    datasets = synthetic_site(
        patients=3, studies_per_patient=2, series_per_study=2, slices=1, rows=16, columns=16, seed=7
    )
    for path in write_datasets(datasets, tmp_path / "spool"):
        runtime.ingestor.ingest_file(path)
    add_user(runtime, "rita", projects={"default": ProjectRole.RESEARCHER})
    add_user(runtime, "olga", projects={"other": ProjectRole.RESEARCHER})
    hidden_study = datasets[0].StudyInstanceUID
    assignments = SeriesProjects(runtime.engine)
    for uid in {d.SeriesInstanceUID for d in datasets if d.StudyInstanceUID == hidden_study}:
        assignments.assign(uid, "other")
        assignments.unassign(uid, "default")
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).run_once()
    browser_login(client, "rita")
    return {
        d.SeriesInstanceUID: {
            "Modality": d.Modality, "study": d.StudyInstanceUID, "year": d.StudyDate[:4],
            "Manufacturer": d.Manufacturer,
        }
        for d in datasets
        if d.StudyInstanceUID != hidden_study
    }  # fmt: skip


def _bars(client: TestClient, url: str) -> dict[str, int]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(response.text)
    return {g.get("data-label", ""): int(g.get("data-value", "-1")) for g in root.iter(f"{SVG}g")}


def test_explore_shows_the_four_charts_of_its_selection(
    client: TestClient, seen: dict[str, dict[str, Any]]
) -> None:
    page = client.get("/ui/explore?Modality=CT").text
    for name in ("age", "years", "modalities", "manufacturers"):
        assert f'src="/ui/charts/{name}.svg?Modality=CT"' in page
    assert 'alt="Studies per year of the series found' in page
    assert _bars(client, "/ui/charts/modalities.svg") == dict(
        Counter(s["Modality"] for s in seen.values())
    )
    assert _bars(client, "/ui/charts/modalities.svg?Modality=CT") == {
        "CT": sum(s["Modality"] == "CT" for s in seen.values())
    }
    studies_per_year = Counter(year for year, _ in {(s["year"], s["study"]) for s in seen.values()})
    assert _bars(client, "/ui/charts/years.svg") == {
        year: studies_per_year.get(year, 0)
        for year in map(
            str, range(min(map(int, studies_per_year)), max(map(int, studies_per_year)) + 1)
        )
    }
    assert sum(_bars(client, "/ui/charts/age.svg").values()) == len(seen)
    assert _bars(client, "/ui/charts/manufacturers.svg") == dict(
        Counter(s["Manufacturer"] for s in seen.values())
    )


def test_a_bad_query_is_drawn_as_a_note_and_an_unknown_chart_is_not_found(
    client: TestClient, seen: dict[str, dict[str, Any]]
) -> None:
    refused = client.get("/ui/charts/modalities.svg", params={"q": '{"nonsense": 1}'})
    assert refused.status_code == 200 and "not available" in refused.text
    assert client.get("/ui/charts/nope.svg").status_code == 404


def test_a_cohorts_charts_count_its_series_and_other_projects_get_none(
    client: TestClient, seen: dict[str, dict[str, Any]]
) -> None:
    rita = auth_for(client, "rita")
    made = client.post(
        "/api/meta/cohorts",
        json={"name": "mr-only", "project": "default", "query": {"term": {"Modality": "MR"}}},
        headers=rita,
    )
    assert made.status_code == 201, made.text
    cohort = made.json()["id"]
    page = client.get(f"/ui/cohorts/{cohort}").text
    assert f'src="/ui/charts/years.svg?cohort={cohort}"' in page
    mr = sum(s["Modality"] == "MR" for s in seen.values())
    assert _bars(client, f"/ui/charts/modalities.svg?cohort={cohort}") == ({"MR": mr} if mr else {})
    frozen = client.post(f"/api/meta/cohorts/{cohort}/freeze", headers=rita)
    assert frozen.status_code == 200, frozen.text
    assert _bars(client, f"/ui/charts/modalities.svg?cohort={cohort}") == ({"MR": mr} if mr else {})
    client.cookies.clear()
    browser_login(client, "olga")
    assert client.get(f"/ui/charts/modalities.svg?cohort={cohort}").status_code == 404
    # Olga's own Explore charts count her project's study only.
    assert sum(_bars(client, "/ui/charts/modalities.svg").values()) == 2
