"""``GET /api/meta/cohorts/{id}/download``: a cohort as a zip, scoped, audited.

Auth on (the ``site`` of tests/base/conftest.py): ``liver`` and ``lung``, a series in
each and one in neither; bob is a researcher of ``lung`` only.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import SimpleITK as sitk
from tests.base import conftest as base_site
from tests.base.support import Site, Stored, ingest_series, series_datasets

# The auth-enabled site of tests/base (its fixtures, as this module's own).
cheap_password_hashing = base_site.cheap_password_hashing  # autouse
issuer_key = base_site.issuer_key
site = base_site.site


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def _cohort(site: Site, user: str, **body: Any) -> str:
    site.index()
    response = site.client.post("/api/meta/cohorts", json=body, headers=site.tokens[user])
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _download(site: Site, user: str, cohort_id: str, **params: str) -> zipfile.ZipFile:
    response = site.client.get(
        f"/api/meta/cohorts/{cohort_id}/download", params=params, headers=site.tokens[user]
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment;")
    return zipfile.ZipFile(io.BytesIO(response.content))


def _stored_bytes(site: Site, stored: Stored) -> dict[str, bytes]:
    return {
        f"{stored.study}/{stored.series}/{i.sop_instance_uid}.dcm": site.runtime.storage.read_bytes(
            i.blob_key
        )
        for i in site.runtime.catalog.instances_of_series(stored.series)
    }


def test_the_zip_holds_the_stored_instances_byte_for_byte(site: Site) -> None:
    cohort = _cohort(site, "bob", name="lung all", project="lung", query=None)
    archive = _download(site, "bob", cohort)
    expected = _stored_bytes(site, site.series["lung"])
    members = {n: archive.read(n) for n in archive.namelist() if n != "manifest.json"}
    assert members == expected
    assert archive.testzip() is None
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["instances"] == len(expected) and manifest["cohort"] == "lung all"


def test_series_of_projects_the_caller_cannot_read_are_never_in_the_zip(site: Site) -> None:
    # alice's frozen liver cohort, imported by bob with its series list: the cohort names
    # liver's series, bob's download holds none of them.
    liver = _cohort(site, "alice", name="liver", project="liver", query=None, freeze=True)
    document = site.client.get(
        f"/api/meta/cohorts/{liver}/export?include_series=true", headers=site.tokens["alice"]
    ).json()
    assert site.series["liver"].series in document["series"]
    imported = site.client.post(
        "/api/meta/cohorts/import", json=document, headers=site.tokens["bob"]
    ).json()
    archive = _download(site, "bob", imported["id"])
    assert archive.namelist() == ["manifest.json"]
    assert "outside your projects" in archive.read("manifest.json").decode()
    # A query matching every series of the site: only lung's are bob's to read.
    everything = _cohort(site, "bob", name="all of it", project="lung", query=None)
    names = _download(site, "bob", everything).namelist()
    assert {n.split("/")[1] for n in names if n != "manifest.json"} == {site.series["lung"].series}


def test_a_cohort_of_another_project_is_not_found(site: Site) -> None:
    liver = _cohort(site, "alice", name="liver", project="liver", query=None)
    response = site.client.get(f"/api/meta/cohorts/{liver}/download", headers=site.tokens["bob"])
    assert response.status_code == 404
    assert "liver" not in response.text


def test_nifti_is_one_volume_per_image_series_and_dicom_for_the_rest(
    site: Site, tmp_path: Path
) -> None:
    no_geometry = series_datasets(30, StudyDescription="lung no geometry")
    for ds in no_geometry:
        del ds.ImagePositionPatient
    flat = ingest_series(site.runtime, tmp_path / "spool-n", no_geometry)
    cohort = _cohort(site, "bob", name="nifti", project="lung", query=None)
    archive = _download(site, "bob", cohort, format="nifti")
    lung = site.series["lung"]
    volume_name = f"{lung.study}/{lung.series}.nii.gz"
    assert volume_name in archive.namelist()
    target = tmp_path / "volume.nii.gz"
    target.write_bytes(archive.read(volume_name))
    volume = sitk.ReadImage(str(target))
    assert volume.GetSize()[2] == len(lung.sops)
    kept = {n for n in archive.namelist() if n.startswith(f"{flat.study}/{flat.series}/")}
    assert len(kept) == len(flat.sops)
    notes = json.loads(archive.read("manifest.json"))["notes"]
    assert any(flat.series == note.get("series") for note in notes)


def test_a_download_is_audited_when_asked_and_when_sent(site: Site) -> None:
    cohort = _cohort(site, "bob", name="audited", project="lung", query=None)
    _download(site, "bob", cohort)
    entries = site.client.get(
        "/api/audit", params={"action": "meta.cohort."}, headers=site.tokens["root"]
    ).json()
    by_action = {e["action"]: e for e in entries if e["target"] == f"cohort:{cohort}"}
    asked, sent = by_action["meta.cohort.download"], by_action["meta.cohort.download.done"]
    assert asked["username"] == sent["username"] == "bob"
    lung = site.series["lung"]
    assert asked["detail"]["instances"] == len(lung.sops) and asked["detail"]["stored_bytes"] > 0
    assert sent["detail"]["complete"] is True
    assert sent["detail"]["instances"] == len(lung.sops)
