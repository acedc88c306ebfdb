"""``POST /api/store/upload``: files and zips into a project, one result per file.

Runs with auth on (the ``site`` of tests/base/conftest.py: projects ``liver`` and
``lung`` and their members), so every refusal is the real one.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from tests.base import conftest as base_site
from tests.base.support import Site, series_datasets
from tests.store.dicomweb.support import part10

from jip.errors import Invalid
from jip.store.upload import check_form

# The auth-enabled site of tests/base (its fixtures, as this module's own).
cheap_password_hashing = base_site.cheap_password_hashing  # autouse
issuer_key = base_site.issuer_key
site = base_site.site

URL = "/api/store/upload"


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _files(**named: bytes) -> dict[str, Any]:
    return {
        "files": [
            ("files", (name, data, "application/octet-stream")) for name, data in named.items()
        ]
    }


def _by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in body["results"]}


def _instances(site: Site) -> int:
    return site.runtime.catalog.counts()["instances"]


def test_a_zip_is_stored_member_by_member_with_a_result_each(site: Site) -> None:
    first, second = (part10(ds) for ds in series_datasets(11))
    upload = _zip({
        "export/a.dcm": first,
        "export/b.dcm": second,
        "export/again.dcm": first,
        "export/DICOMDIR": b"index",
        "export/readme.txt": b"not dicom",
        "__MACOSX/._a.dcm": b"resource fork",
    })  # fmt: skip
    before = _instances(site)
    response = site.client.post(
        f"{URL}?project=lung", headers=site.tokens["bob"], **_files(**{"cd.zip": upload})
    )
    assert response.status_code == 200, response.text
    body = response.json()
    results = _by_name(body)
    assert results["cd.zip/export/a.dcm"]["status"] == "stored"
    assert results["cd.zip/export/b.dcm"]["status"] == "stored"
    assert results["cd.zip/export/again.dcm"]["status"] == "duplicate"
    assert results["cd.zip/export/DICOMDIR"]["status"] == "skipped"
    assert results["cd.zip/__MACOSX/._a.dcm"]["status"] == "skipped"
    refused = results["cd.zip/export/readme.txt"]
    assert refused["status"] == "refused" and refused["reason"]
    assert (body["stored"], body["duplicate"], body["refused"], body["skipped"]) == (2, 1, 1, 2)
    assert _instances(site) == before + 2
    series = results["cd.zip/export/a.dcm"]["series_instance_uid"]
    projects = site.runtime.catalog.scoped(["lung"]).instances_of_series(series)
    assert len(projects) == 2  # the new series is in the project asked for


def test_files_and_a_zip_in_one_upload(site: Site) -> None:
    one, two, three = (part10(ds) for ds in series_datasets(12)[:2] + series_datasets(13)[:1])
    response = site.client.post(
        f"{URL}?project=liver",
        headers=site.tokens["alice"],
        **_files(**{"scan/1.dcm": one, "scan/2.dcm": two, "more.zip": _zip({"3.dcm": three})}),
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 3
    assert set(_by_name(response.json())) == {"scan/1.dcm", "scan/2.dcm", "more.zip/3.dcm"}


@pytest.mark.parametrize(
    ("user", "project", "status"),
    [("vic", "lung", 403), ("bob", "liver", 404)],
    ids=["a viewer of the project", "a member of another project"],
)
def test_who_may_not_store_into_a_project_stores_nothing(
    site: Site, user: str, project: str, status: int
) -> None:
    before = _instances(site)
    data = part10(series_datasets(14)[0])
    response = site.client.post(
        f"{URL}?project={project}", headers=site.tokens[user], **_files(**{"a.dcm": data})
    )
    assert response.status_code == status, response.text
    assert _instances(site) == before


def test_an_instance_joining_another_projects_series_is_refused(site: Site) -> None:
    liver = site.series["liver"]
    ds = series_datasets(16)[0]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = liver.study, liver.series
    before = _instances(site)
    response = site.client.post(
        f"{URL}?project=lung", headers=site.tokens["bob"], **_files(**{"x.dcm": part10(ds)})
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "refused"
    assert "no right to store" in result["reason"]
    assert _instances(site) == before


def test_a_zip_member_over_the_limit_is_refused_alone(site: Site) -> None:
    small = part10(series_datasets(17)[0])
    site.runtime.settings.store.max_upload_bytes = 200_000
    upload = _zip({"small.dcm": small, "huge.bin": b"\0" * 300_000})
    response = site.client.post(
        f"{URL}?project=lung", headers=site.tokens["bob"], **_files(**{"u.zip": upload})
    )
    assert response.status_code == 200, response.text
    results = _by_name(response.json())
    assert results["u.zip/small.dcm"]["status"] == "stored"
    assert results["u.zip/huge.bin"]["status"] == "refused"
    assert "store.max_upload_bytes" in results["u.zip/huge.bin"]["reason"]


def test_a_broken_zip_is_refused_with_its_reason(site: Site) -> None:
    broken = _zip({"a.dcm": part10(series_datasets(18)[0])})[:-30]
    response = site.client.post(
        f"{URL}?project=lung", headers=site.tokens["bob"], **_files(**{"cut.zip": broken})
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "refused" and "zip" in result["reason"]


def test_an_upload_without_a_project_for_a_member_of_several_is_a_clear_error(
    site: Site,
) -> None:
    data = part10(series_datasets(19)[0])
    response = site.client.post(URL, headers=site.tokens["carol"], **_files(**{"a.dcm": data}))
    assert response.status_code == 400
    assert "?project=" in response.json()["detail"]


def test_a_body_that_is_no_form_is_a_clear_error(site: Site) -> None:
    response = site.client.post(
        f"{URL}?project=lung",
        headers={**site.tokens["bob"], "Content-Type": "application/dicom"},
        content=part10(series_datasets(20)[0]),
    )
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["detail"]


def test_every_upload_is_audited_with_its_counts(site: Site) -> None:
    data = part10(series_datasets(21)[0])
    site.client.post(f"{URL}?project=lung", headers=site.tokens["bob"], **_files(**{"a.dcm": data}))
    entries = site.client.get(
        "/api/audit", params={"action": "store.upload"}, headers=site.tokens["root"]
    ).json()
    (entry,) = [e for e in entries if e["username"] == "bob"]
    assert entry["target"] == "project:lung"
    assert entry["detail"]["stored"] == 1 and entry["detail"]["files"] == 1


@pytest.mark.parametrize(
    "content_type",
    ["multipart/related; boundary=x", "multipart/form-data", "text/plain"],
)
def test_only_a_form_with_a_boundary_is_taken(content_type: str) -> None:
    with pytest.raises(Invalid, match="multipart/form-data"):
        check_form(content_type)
