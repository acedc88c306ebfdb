"""PS3.4 C.2.2.2 attribute matching over the catalog (shared by C-FIND and QIDO-RS)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from jip.config import Settings
from jip.errors import Invalid
from jip.runtime import Runtime, build_runtime
from jip.samples import image_series, random_patient, synthetic_site, write_datasets
from jip.store.catalog.queries import QueryLevel, find


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, list[Dataset]]]:
    root = tmp_path_factory.mktemp("site")
    runtime = build_runtime(Settings(data_dir=root / "data"))
    datasets = synthetic_site(
        patients=6, studies_per_patient=2, series_per_study=2, slices=3, seed=7
    )
    for path in write_datasets(datasets, root / "in"):
        runtime.ingestor.ingest_file(path)
    yield runtime, datasets
    runtime.close()


def _uids(results: list[Dataset], keyword: str) -> set[str]:
    return {str(ds.get(keyword)) for ds in results}


def _expected(datasets: list[Dataset], keyword: str, predicate: object) -> set[str]:
    return {str(ds.get(keyword)) for ds in datasets if predicate(ds)}  # type: ignore[operator]


def test_empty_identifier_matches_every_study(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    found = find(runtime.catalog, QueryLevel.STUDY, {})
    assert _uids(found, "StudyInstanceUID") == _expected(
        datasets, "StudyInstanceUID", lambda d: True
    )


def test_date_range_is_inclusive(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    dates = sorted({ds.StudyDate for ds in datasets})
    low, high = dates[1], dates[-2]
    found = find(runtime.catalog, QueryLevel.STUDY, {"StudyDate": f"{low}-{high}"})
    expected = _expected(datasets, "StudyInstanceUID", lambda d: low <= d.StudyDate <= high)
    assert _uids(found, "StudyInstanceUID") == expected
    assert low in {ds.StudyDate for ds in found} and high in {ds.StudyDate for ds in found}


def test_open_ended_date_ranges(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    pivot = sorted({ds.StudyDate for ds in datasets})[3]
    before = find(runtime.catalog, QueryLevel.STUDY, {"StudyDate": f"-{pivot}"})
    after = find(runtime.catalog, QueryLevel.STUDY, {"StudyDate": f"{pivot}-"})
    assert _uids(before, "StudyInstanceUID") == _expected(
        datasets, "StudyInstanceUID", lambda d: d.StudyDate <= pivot
    )
    assert _uids(after, "StudyInstanceUID") == _expected(
        datasets, "StudyInstanceUID", lambda d: d.StudyDate >= pivot
    )


def test_person_name_wildcard_is_case_insensitive(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    family = str(datasets[0].PatientName).split("^")[0]
    found = find(runtime.catalog, QueryLevel.PATIENT, {"PatientName": family.upper()[:3] + "*"})
    expected = _expected(
        datasets, "PatientID", lambda d: str(d.PatientName).lower().startswith(family[:3].lower())
    )
    assert _uids(found, "PatientID") == expected


def test_single_character_wildcard(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, _ = site
    found = find(runtime.catalog, QueryLevel.PATIENT, {"PatientID": "PAT0000?"})
    assert _uids(found, "PatientID") == {f"PAT0000{i}" for i in range(6)}


def test_uid_list_matching(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    wanted = sorted({ds.SeriesInstanceUID for ds in datasets})[:3]
    found = find(runtime.catalog, QueryLevel.SERIES, {"SeriesInstanceUID": "\\".join(wanted)})
    assert _uids(found, "SeriesInstanceUID") == set(wanted)


def test_modalities_in_study_matches_any_series(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    found = find(runtime.catalog, QueryLevel.STUDY, {"ModalitiesInStudy": "MR"})
    assert _uids(found, "StudyInstanceUID") == _expected(
        datasets, "StudyInstanceUID", lambda d: d.Modality == "MR"
    )
    assert all(ds.ModalitiesInStudy == "MR" for ds in found)


def test_counts_are_computed_per_level(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    study_uid = datasets[0].StudyInstanceUID
    (study,) = find(runtime.catalog, QueryLevel.STUDY, {"StudyInstanceUID": study_uid})
    in_study = [d for d in datasets if d.StudyInstanceUID == study_uid]
    assert study.NumberOfStudyRelatedSeries == len({d.SeriesInstanceUID for d in in_study})
    assert study.NumberOfStudyRelatedInstances == len(in_study)
    series = find(runtime.catalog, QueryLevel.SERIES, {"StudyInstanceUID": study_uid})
    assert [s.NumberOfSeriesRelatedInstances for s in series] == [3, 3]


def test_image_level_returns_instances_in_order(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    series_uid = datasets[0].SeriesInstanceUID
    found = find(runtime.catalog, QueryLevel.IMAGE, {"SeriesInstanceUID": series_uid})
    assert [int(ds.InstanceNumber) for ds in found] == [1, 2, 3]
    assert all(ds.Rows == 64 and ds.SOPClassUID == datasets[0].SOPClassUID for ds in found)


def test_limit_and_offset_page_through_results(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, _ = site
    everything = find(runtime.catalog, QueryLevel.SERIES, {})
    pages = [
        find(runtime.catalog, QueryLevel.SERIES, {}, limit=5, offset=o) for o in range(0, 30, 5)
    ]
    assert [ds.SeriesInstanceUID for page in pages for ds in page] == [
        ds.SeriesInstanceUID for ds in everything
    ]


def test_bad_date_is_rejected_with_its_value(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, _ = site
    with pytest.raises(Invalid, match="2024-01"):
        find(runtime.catalog, QueryLevel.STUDY, {"StudyDate": "2024-01"})


def test_unsupported_keys_do_not_restrict_matches(site: tuple[Runtime, list[Dataset]]) -> None:
    runtime, datasets = site
    found = find(runtime.catalog, QueryLevel.STUDY, {"InstitutionName": "Nowhere"})
    assert len(found) == len({d.StudyInstanceUID for d in datasets})


def test_time_range_upper_bound_covers_the_whole_minute(tmp_path: Path) -> None:
    runtime = build_runtime(Settings(data_dir=tmp_path / "data"))
    try:
        series = image_series(
            patient=random_patient(random.Random(1), 1), slices=1, rows=16, columns=16
        )
        series[0].StudyTime = "101530"
        (path,) = write_datasets(series, tmp_path / "in")
        runtime.ingestor.ingest_file(path)
        assert len(find(runtime.catalog, QueryLevel.STUDY, {"StudyTime": "1000-1015"})) == 1
        assert find(runtime.catalog, QueryLevel.STUDY, {"StudyTime": "1016-"}) == []
    finally:
        runtime.close()
