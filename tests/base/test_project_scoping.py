"""Series belong to projects, and every data query is limited to the caller's projects.

One site, two projects (``liver``, ``lung``) and the default project; a series reaches
``liver`` by an AE-title rule, ``lung`` by a StudyDescription rule, the default project
by no rule, and ``lung`` again by hand. Outside their projects a caller gets 404 on
every DICOMweb route, never 403, so a series' existence does not leak.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from tests.base.support import DW, Site, ingest_series, series_datasets
from tests.store.dicomweb.support import part10

from jip.app import build_app
from jip.errors import NotFound
from jip.runtime import build_runtime
from jip.store.dicomweb.multipart import Part, new_boundary, write_parts


def _projects_of(site: Site, key: str) -> set[str]:
    from jip.store import SeriesProjects

    uid = site.series[key].series
    return SeriesProjects(site.runtime.engine).projects_of([uid])[uid]


def _qido_series(site: Site, user: str) -> set[str]:
    response = site.client.get(f"{DW}/series", headers=site.tokens[user])
    assert response.status_code in (200, 204), response.text
    return {obj["0020000E"]["Value"][0] for obj in (response.json() if response.content else [])}


def _search(site: Site, user: str, path: str = "/api/meta/search") -> set[str]:
    response = site.client.post(path, json={"limit": 100}, headers=site.tokens[user])
    assert response.status_code == 200, response.text
    return {hit["SeriesInstanceUID"] for hit in response.json()["hits"]}


def test_rules_and_the_default_project_assign_new_series(site: Site) -> None:
    assert _projects_of(site, "liver") == {"liver"}
    assert _projects_of(site, "lung") == {"lung"}
    assert _projects_of(site, "other") == {"default"}


def test_each_researcher_finds_only_the_series_of_their_projects(site: Site) -> None:
    s = site.series
    assert _qido_series(site, "alice") == {s["liver"].series}
    assert _qido_series(site, "bob") == {s["lung"].series}
    assert _qido_series(site, "root") == {x.series for x in s.values()}
    studies = site.client.get(f"{DW}/studies", headers=site.tokens["alice"]).json()
    assert [st["0020000D"]["Value"][0] for st in studies] == [s["liver"].study]
    instances = site.client.get(f"{DW}/instances", headers=site.tokens["bob"]).json()
    assert {i["00080018"]["Value"][0] for i in instances} == set(s["lung"].sops)
    # The other's study by its UID, at every QIDO level, finds nothing.
    for path in (
        f"{DW}/studies?StudyInstanceUID={s['lung'].study}",
        f"{DW}/studies/{s['lung'].study}/series",
        f"{DW}/studies/{s['lung'].study}/instances",
    ):
        response = site.client.get(path, headers=site.tokens["alice"])
        assert response.status_code in (200, 204) and not (response.content and response.json())


def test_the_other_projects_series_is_404_on_every_dicomweb_route(site: Site) -> None:
    lung = site.series["lung"]
    instance = f"{lung.path}/instances/{lung.sops[0]}"
    routes = [
        f"{DW}/studies/{lung.study}",
        f"{DW}/studies/{lung.study}/metadata",
        f"{DW}/studies/{lung.study}/rendered",
        f"{DW}/studies/{lung.study}/thumbnail",
        lung.path,
        f"{lung.path}/metadata",
        f"{lung.path}/rendered",
        f"{lung.path}/thumbnail",
        instance,
        f"{instance}/metadata",
        f"{instance}/frames/1",
        f"{instance}/rendered",
        f"{instance}/thumbnail",
        f"{instance}/pixeldata",
        f"{instance}/bulkdata/7FE00010",
    ]
    for route in routes:
        response = site.client.get(route, headers=site.tokens["alice"])
        assert response.status_code == 404, (route, response.status_code)
        assert site.client.get(route, headers=site.tokens["bob"]).status_code != 404, route
    for route in (f"{DW}/studies/{lung.study}", lung.path):
        assert site.client.delete(route, headers=site.tokens["alice"]).status_code == 404


def test_own_series_is_served_with_thumbnail_and_metadata(site: Site) -> None:
    liver = site.series["liver"]
    for route in (f"{liver.path}/metadata", f"{liver.path}/thumbnail", liver.path):
        response = site.client.get(route, headers=site.tokens["alice"])
        assert response.status_code == 200, (route, response.text)
    for user in ("root", "olga"):
        assert site.client.get(f"{liver.path}/metadata", headers=site.tokens[user]).is_success


def test_deleting_needs_the_owner_role_in_a_project_of_the_series(site: Site) -> None:
    liver = site.series["liver"]
    assert site.client.delete(liver.path, headers=site.tokens["alice"]).status_code == 403
    assert site.client.delete(liver.path, headers=site.tokens["olga"]).status_code == 204
    assert site.client.get(liver.path, headers=site.tokens["root"]).status_code == 404


def test_meta_search_facets_and_values_see_only_the_callers_projects(site: Site) -> None:
    site.index()
    s = site.series
    assert _search(site, "alice") == {s["liver"].series}
    assert _search(site, "bob") == {s["lung"].series}
    assert _search(site, "root") == {x.series for x in s.values()}
    facets = site.client.post(
        "/api/meta/aggregate",
        headers=site.tokens["bob"],
        json={"aggs": {"n": {"terms": {"field": "StudyInstanceUID"}}}},
    )
    assert facets.status_code == 200, facets.text
    buckets = facets.json()["aggregations"]["n"]["buckets"]
    assert [b["key"] for b in buckets] == [s["lung"].study]
    values = site.client.get(
        "/api/meta/fields/SeriesInstanceUID/values", headers=site.tokens["alice"]
    )
    assert [v["key"] for v in values.json()["values"]] == [s["liver"].series]


def test_a_cohort_runs_over_the_series_of_its_project(site: Site) -> None:
    site.index()
    created = site.client.post(
        "/api/meta/cohorts",
        headers=site.tokens["alice"],
        json={"name": "everything", "query": None, "freeze": True},
    )
    assert created.status_code == 201, created.text
    assert created.json()["frozen_series"] == 1
    series = site.client.get(
        f"/api/meta/cohorts/{created.json()['id']}/series", headers=site.tokens["alice"]
    ).json()
    assert [hit["SeriesInstanceUID"] for hit in series["hits"]] == [site.series["liver"].series]


def test_manual_assignment_by_an_owner_or_admin_shows_the_series(site: Site) -> None:
    site.index()
    other = site.series["other"]
    url = f"/api/projects/lung/series/{other.series}"
    assert site.client.put(url, headers=site.tokens["bob"]).status_code == 403  # researcher
    # An owner cannot pull a series they cannot see into their project.
    response = site.client.put(
        f"/api/projects/liver/series/{other.series}", headers=site.tokens["olga"]
    )
    assert response.status_code == 404
    response = site.client.put(url, headers=site.tokens["root"])
    assert response.status_code == 200, response.text
    assert set(response.json()["projects"]) == {"default", "lung"}
    assert _qido_series(site, "bob") == {site.series["lung"].series, other.series}
    site.index()  # the assignment put the series back into META's outbox
    assert other.series in _search(site, "bob")
    assert site.client.delete(url, headers=site.tokens["root"]).status_code == 204
    assert site.client.delete(url, headers=site.tokens["root"]).status_code == 404
    assert other.series not in _qido_series(site, "bob")
    site.index()
    assert other.series not in _search(site, "bob")


def test_rules_are_for_site_admins_and_checked(site: Site) -> None:
    client, tokens = site.client, site.tokens
    assert client.get("/api/projects/rules", headers=tokens["olga"]).status_code == 403
    rules = client.get("/api/projects/rules", headers=tokens["root"]).json()
    assert [(r["project"], r["calling_ae_title"], r["field"]) for r in rules] == [
        ("liver", "LIVER_CT", ""),
        ("lung", "", "StudyDescription"),
    ]
    bad = client.post(
        "/api/projects/rules",
        headers=tokens["root"],
        json={"project": "lung", "field": "PixelData", "pattern": "*"},
    )
    assert bad.status_code == 400 and "PixelData" in bad.text
    unknown = client.post(
        "/api/projects/rules",
        headers=tokens["root"],
        json={"project": "nope", "calling_ae_title": "X"},
    )
    assert unknown.status_code == 404
    rule_id = rules[0]["id"]
    patched = client.patch(
        f"/api/projects/rules/{rule_id}", headers=tokens["root"], json={"enabled": False}
    )
    assert patched.json()["enabled"] is False
    spool = Path(str(site.runtime.settings.data_dir)) / "spool-late"
    late = ingest_series(site.runtime, spool, series_datasets(4), "LIVER_CT")
    assert late.series not in _qido_series(site, "alice")  # the rule is off: default
    assert (
        client.delete(f"/api/projects/rules/{rule_id}", headers=tokens["root"]).status_code == 204
    )


def _stow(site: Site, user: str, datasets: list[Any], project: str | None = None) -> Any:
    boundary = new_boundary()
    body = b"".join(
        write_parts([Part("application/dicom", [part10(ds)]) for ds in datasets], boundary)
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    params = {"project": project} if project else {}
    return site.client.post(
        f"{DW}/studies",
        content=body,
        params=params,
        headers={**site.tokens[user], "Content-Type": content_type},
    )


def test_stow_assigns_to_the_named_or_the_single_project(site: Site) -> None:
    mine = series_datasets(10)
    assert _stow(site, "alice", mine).status_code == 200
    assert str(mine[0].SeriesInstanceUID) in _qido_series(site, "alice")

    either = series_datasets(11)
    response = _stow(site, "carol", either)
    assert response.status_code == 400 and "liver, lung" in response.text
    assert _stow(site, "carol", either, project="lung").status_code == 200
    assert str(either[0].SeriesInstanceUID) in _qido_series(site, "bob")
    assert str(either[0].SeriesInstanceUID) not in _qido_series(site, "alice")

    assert _stow(site, "alice", series_datasets(12), project="lung").status_code == 404
    assert _stow(site, "vic", series_datasets(13)).status_code == 403
    assert _stow(site, "vic", series_datasets(13), project="lung").status_code == 403


def test_without_auth_everything_is_visible(tmp_path: Path) -> None:
    from jip.config import Settings

    runtime = build_runtime(Settings(data_dir=tmp_path / "data", auth={"enabled": False}))
    try:
        stored = ingest_series(runtime, tmp_path / "spool", series_datasets(20))
        client = TestClient(build_app(runtime))
        assert client.get(f"{stored.path}/metadata").status_code == 200
        assert "default" in runtime.identity.projects.names()
    finally:
        runtime.close()


def test_a_study_shared_by_two_projects_shows_each_only_its_series(site: Site) -> None:
    liver = site.series["liver"]
    shared = series_datasets(1, StudyDescription="Chest LUNG", SeriesDescription="LUNG SECRET")
    for ds in shared:
        ds.StudyInstanceUID = liver.study
    lung_part = ingest_series(
        site.runtime, Path(str(site.runtime.settings.data_dir)) / "spool-2", shared, "MR_ROOM"
    )
    for user, visible in (("alice", liver.series), ("bob", lung_part.series)):
        response = site.client.get(
            f"{DW}/studies",
            params={"StudyInstanceUID": liver.study, "includefield": "SeriesDescription"},
            headers=site.tokens[user],
        )
        (study,) = response.json()
        assert study["00201206"]["Value"] == [1], user  # NumberOfStudyRelatedSeries
        assert "LUNG SECRET" not in str(study) or user == "bob"
        assert _qido_series(site, user) & {liver.series, lung_part.series} == {visible}
    response = site.client.get(
        f"{DW}/studies", params={"StudyInstanceUID": liver.study}, headers=site.tokens["root"]
    )
    assert response.json()[0]["00201206"]["Value"] == [2]


def test_ingest_conflicts_are_for_site_admins(site: Site) -> None:
    assert site.client.get("/api/store/conflicts", headers=site.tokens["alice"]).status_code == 403
    assert site.client.get("/api/store/conflicts", headers=site.tokens["root"]).status_code == 200


# -- STOW-RS into another project's data --------------------------------------------------
FAILED, REFERENCED, FAILURE_REASON, ERROR_COMMENT = "00081198", "00081199", "00081197", "00000902"
NOT_AUTHORISED = 0x0124  # PS3.7 Annex C, "Refused: Not Authorized"


def _failures(response: Any) -> list[tuple[int, str]]:
    """(FailureReason, ErrorComment without its "part N: " prefix) of each failed part."""
    items = response.json().get(FAILED, {}).get("Value", [])
    return [
        (item[FAILURE_REASON]["Value"][0], item[ERROR_COMMENT]["Value"][0].split(": ", 1)[1])
        for item in items
    ]


def _warnings(response: Any) -> list[str]:
    return [re.sub(r"part \d+", "part N", w) for w in response.headers.get_list("warning")]


def _sop_uids(datasets: list[Any]) -> list[str]:
    return [str(ds.SOPInstanceUID) for ds in datasets]


def _stored_anywhere(site: Site, sop: str) -> bool:
    try:
        site.runtime.catalog.instance(sop)
    except NotFound:
        return any(Path(str(site.runtime.settings.data_dir)).rglob(f"{sop}.*"))
    return True


def _as_part_of(datasets: list[Any], **uids: str) -> list[Any]:
    for ds in datasets:
        for keyword, value in uids.items():
            setattr(ds, keyword, value)
    return datasets


def test_stow_into_another_projects_series_or_study_fails_alone_and_tells_nothing(
    site: Site,
) -> None:
    liver = site.series["liver"]
    a_before = site.client.get(f"{liver.path}/metadata", headers=site.tokens["alice"]).json()
    attempts = {
        "A's series": _as_part_of(
            series_datasets(30), StudyInstanceUID=liver.study, SeriesInstanceUID=liver.series
        ),
        "A's series, another study": _as_part_of(
            series_datasets(31), SeriesInstanceUID=liver.series
        ),
        "A's SOP Instance UID": _as_part_of(series_datasets(32)[:1], SOPInstanceUID=liver.sops[0]),
        "a new series in A's study": _as_part_of(series_datasets(33), StudyInstanceUID=liver.study),
    }
    answers = set()
    for what, datasets in attempts.items():
        response = _stow(site, "bob", datasets)
        assert response.status_code == 409, (what, response.text)
        assert REFERENCED not in response.json(), what
        failures = _failures(response)
        assert len(failures) == len(datasets), (what, failures)
        assert {reason for reason, _ in failures} == {NOT_AUTHORISED}, what
        answers |= {
            (reason, comment, frozenset(_warnings(response))) for reason, comment in failures
        }
        assert liver.series not in response.text and liver.study not in str(_warnings(response))
    # One answer whichever UID was taken: it tells nothing of what exists where.
    assert len(answers) == 1, answers
    for what, datasets in attempts.items():
        sops = _sop_uids(datasets)
        if what != "A's SOP Instance UID":
            assert not [sop for sop in sops if _stored_anywhere(site, sop)], what
    after = site.client.get(f"{liver.path}/metadata", headers=site.tokens["alice"]).json()
    assert after == a_before
    assert {
        i.sop_instance_uid for i in site.runtime.catalog.instances_of_series(liver.series)
    } == set(liver.sops)
    assert _projects_of(site, "liver") == {"liver"}


def test_stow_refuses_only_the_parts_into_another_projects_series(site: Site) -> None:
    liver = site.series["liver"]
    intruder = _as_part_of(
        series_datasets(34)[:1], StudyInstanceUID=liver.study, SeriesInstanceUID=liver.series
    )
    own = series_datasets(35)
    response = _stow(site, "bob", [*intruder, *own])
    assert response.status_code == 202, response.text
    assert [reason for reason, _ in _failures(response)] == [NOT_AUTHORISED]
    referenced = response.json()[REFERENCED]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == _sop_uids(own)
    assert str(own[0].SeriesInstanceUID) in _qido_series(site, "bob")
    assert not _stored_anywhere(site, _sop_uids(intruder)[0])
    # B's own series and study, once stored, take more of B's instances.
    more = _as_part_of(
        series_datasets(36),
        StudyInstanceUID=str(own[0].StudyInstanceUID),
        SeriesInstanceUID=str(own[0].SeriesInstanceUID),
    )
    assert _stow(site, "bob", more).status_code == 200


def test_stow_into_a_series_needs_the_researcher_role_in_its_project(site: Site) -> None:
    from tests.base.support import add_user, auth_for

    from jip.base.schema import ProjectRole

    add_user(
        site.runtime, "vera", projects={"liver": ProjectRole.VIEWER, "lung": ProjectRole.RESEARCHER}
    )
    site.tokens["vera"] = auth_for(site.client, "vera")
    liver = site.series["liver"]
    into_series = _as_part_of(
        series_datasets(37), StudyInstanceUID=liver.study, SeriesInstanceUID=liver.series
    )
    response = _stow(site, "vera", into_series)
    assert response.status_code == 409 and {r for r, _ in _failures(response)} == {NOT_AUTHORISED}
    # A study she sees takes a new series of hers (in her project, not in A's).
    new_series = _as_part_of(series_datasets(38), StudyInstanceUID=liver.study)
    assert _stow(site, "vera", new_series).status_code == 200
    uid = str(new_series[0].SeriesInstanceUID)
    from jip.store import SeriesProjects

    assert SeriesProjects(site.runtime.engine).projects_of([uid])[uid] == {"lung"}
    # carol, a researcher of both, may add to A's series.
    joined = _as_part_of(
        series_datasets(39), StudyInstanceUID=liver.study, SeriesInstanceUID=liver.series
    )
    assert _stow(site, "carol", joined, project="lung").status_code == 200
    assert set(_sop_uids(joined)) <= {
        i.sop_instance_uid for i in site.runtime.catalog.instances_of_series(liver.series)
    }


def test_a_site_admin_stows_into_any_projects_series(site: Site) -> None:
    liver = site.series["liver"]
    added = _as_part_of(
        series_datasets(40), StudyInstanceUID=liver.study, SeriesInstanceUID=liver.series
    )
    response = _stow(site, "root", added)
    assert response.status_code == 200, response.text
    seen = site.client.get(f"{liver.path}/metadata", headers=site.tokens["alice"]).json()
    assert {obj["00080018"]["Value"][0] for obj in seen} == {*liver.sops, *_sop_uids(added)}
    assert _projects_of(site, "liver") == {"liver"}
    # Naming a project that does not exist stores nothing (the series would be in none).
    assert _stow(site, "root", series_datasets(41), project="nowhere").status_code == 404


def test_without_auth_stow_adds_to_any_series(tmp_path: Path) -> None:
    from jip.config import Settings

    runtime = build_runtime(Settings(data_dir=tmp_path / "data", auth={"enabled": False}))
    try:
        stored = ingest_series(runtime, tmp_path / "spool", series_datasets(42))
        added = _as_part_of(
            series_datasets(43), StudyInstanceUID=stored.study, SeriesInstanceUID=stored.series
        )
        boundary = new_boundary()
        body = b"".join(
            write_parts([Part("application/dicom", [part10(ds)]) for ds in added], boundary)
        )
        response = TestClient(build_app(runtime)).post(
            f"{DW}/studies",
            content=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            },
        )
        assert response.status_code == 200, response.text
        assert len(runtime.catalog.instances_of_series(stored.series)) == 4
    finally:
        runtime.close()
