"""QIDO-RS over a realistic multi-patient site (PS3.18 §10.6, §8.3.4)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from tests.store.dicomweb.support import Site, part10, serve

from jip.samples import synthetic_site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site of its own for this module, served by uvicorn over real HTTP."""
    yield from serve(tmp_path_factory.mktemp("dicomweb") / "data")


@pytest.fixture(scope="module")
def datasets(site: Site) -> Iterator[list[Dataset]]:
    found = synthetic_site(patients=4, studies_per_patient=2, series_per_study=2, slices=2, seed=3)
    for ds in found:
        site.runtime.ingestor.ingest_bytes(part10(ds))
    yield found


def search(site: Site, resource: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{site.url}/{resource}", params=params, timeout=30)


def values(results: list[dict[str, Any]], tag: str) -> list[Any]:
    return [r[tag]["Value"][0] if "Value" in r.get(tag, {}) else None for r in results]


def test_no_match_is_200_with_an_empty_array(site: Site, datasets: list[Dataset]) -> None:
    response = search(site, "studies", PatientID="NOBODY")
    assert (response.status_code, response.json()) == (200, [])


def test_study_return_attributes(site: Site, datasets: list[Dataset]) -> None:
    (study,) = search(site, "studies", AccessionNumber=datasets[0].AccessionNumber).json()
    required = {
        "00080005", "00080020", "00080030", "00080050", "00080056", "00080061", "00080090",
        "00081190", "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010",
        "00201206", "00201208",
    }  # fmt: skip
    assert required <= study.keys()
    assert study["00201206"]["Value"] == [2] and study["00201208"]["Value"] == [4]


def test_series_and_instance_return_attributes(site: Site, datasets: list[Dataset]) -> None:
    ds = datasets[0]
    (series,) = search(site, "series", SeriesInstanceUID=ds.SeriesInstanceUID).json()
    assert {"00080060", "0008103E", "0020000E", "00200011", "00201209", "00081190"} <= series.keys()
    assert series["0020000D"]["Value"] == [ds.StudyInstanceUID]  # parent attributes too
    (instance,) = search(site, "instances", SOPInstanceUID=ds.SOPInstanceUID).json()
    assert {
        "00080016",
        "00080018",
        "00200013",
        "00280010",
        "00280011",
        "00280100",
    } <= instance.keys()
    assert instance["00081190"]["Value"][0].endswith(f"/instances/{ds.SOPInstanceUID}")


def test_uid_lists_with_commas(site: Site, datasets: list[Dataset]) -> None:
    wanted = sorted({datasets[0].StudyInstanceUID, datasets[-1].StudyInstanceUID})
    found = search(site, "studies", StudyInstanceUID=",".join(wanted)).json()
    assert sorted(values(found, "0020000D")) == wanted


def test_wildcards_and_tags(site: Site, datasets: list[Dataset]) -> None:
    patient_id = datasets[0].PatientID
    by_tag = search(site, "studies", **{"00100020": patient_id[:-1] + "?"}).json()
    assert patient_id in values(by_tag, "00100020")
    family = str(datasets[0].PatientName).split("^")[0]
    by_name = search(site, "studies", PatientName=family.lower() + "*").json()
    assert by_name and all(v["Alphabetic"].startswith(family) for v in values(by_name, "00100010"))


def test_modalities_in_study_matches_studies_with_that_modality(
    site: Site,
    datasets: list[Dataset],
) -> None:
    found = search(site, "studies", ModalitiesInStudy="MR").json()
    expected = {ds.StudyInstanceUID for ds in datasets if ds.Modality == "MR"}
    assert set(values(found, "0020000D")) == expected


def test_includefield_by_keyword_tag_and_all(site: Site, datasets: list[Dataset]) -> None:
    ds = datasets[0]
    (series,) = search(
        site,
        "series",
        SeriesInstanceUID=ds.SeriesInstanceUID,
        includefield=["Manufacturer", "00181030"],
    ).json()
    assert series["00080070"]["Value"] == [ds.Manufacturer]  # not catalogued: from the header
    (study,) = search(
        site, "studies", StudyInstanceUID=ds.StudyInstanceUID, includefield="all"
    ).json()
    assert study["00101010"]["Value"] == [ds.PatientAge]
    assert "00280010" not in study  # Rows is no study attribute
    (instance,) = search(
        site, "instances", SOPInstanceUID=ds.SOPInstanceUID, includefield="all"
    ).json()
    assert instance["00200032"]["Value"] == [float(v) for v in ds.ImagePositionPatient]


def test_unsupported_matching_and_fuzzy_matching_are_warned(
    site: Site,
    datasets: list[Dataset],
) -> None:
    response = search(site, "studies", fuzzymatching="true", InstitutionName="Nowhere")
    assert response.status_code == 200
    warning = response.headers["warning"]
    assert warning.startswith("299 ")
    assert "fuzzymatching" in warning and "InstitutionName" in warning
    assert len(response.json()) == len({ds.StudyInstanceUID for ds in datasets})


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "-1"},
        {"offset": "x"},
        {"NotAKeyword": "1"},
        {"StudyDate": "2024"},
        {"fuzzymatching": "maybe"},
        {"includefield": "NoSuchThing"},
    ],
)
def test_bad_query_parameters_are_400(site: Site, params: dict[str, str]) -> None:
    response = search(site, "studies", **params)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_series_of_a_study_and_contradicting_parameter(site: Site, datasets: list[Dataset]) -> None:
    study = datasets[0].StudyInstanceUID
    found = httpx.get(f"{site.url}/studies/{study}/series").json()
    assert len(found) == 2
    other = datasets[-1].StudyInstanceUID
    response = httpx.get(f"{site.url}/studies/{study}/series", params={"StudyInstanceUID": other})
    assert response.status_code == 400
    bad = httpx.get(f"{site.url}/studies/1.2.abc/series")
    assert bad.status_code == 400 and "StudyInstanceUID" in bad.json()["detail"]


def test_offset_pages_through_instances_in_a_stable_order(
    site: Site,
    datasets: list[Dataset],
) -> None:
    everything = search(site, "instances").json()
    assert len(everything) == len(datasets)
    paged = [
        r
        for o in range(0, len(datasets), 5)
        for r in search(site, "instances", limit=5, offset=o).json()
    ]
    assert values(paged, "00080018") == values(everything, "00080018")


def test_date_range_on_series_of_study(site: Site, datasets: list[Dataset]) -> None:
    dates = sorted({ds.StudyDate for ds in datasets})
    found = search(site, "series", StudyDate=f"{dates[0]}-{dates[0]}").json()
    assert set(values(found, "00080020")) == {dates[0]}
    first = pydicom.dcmread(io.BytesIO(part10(datasets[0])))
    assert first.StudyDate in dates
