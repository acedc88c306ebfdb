"""The indexer drains the catalog's outbox: series ingested through the store become
searchable, with every clause and aggregation answering as computed here from the
parameters the series were made with (never from the index or extract.py)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import create_engine
from tests.meta import reference

from jip.config import Settings
from jip.embedded import meta_indexer
from jip.meta.aggs import parse_aggs, parse_sort
from jip.meta.fields import ID_FIELD
from jip.meta.indexer import Indexer
from jip.meta.query import MATCH_ALL, parse_query
from jip.meta.service import IndexLedger, sweep_orphans
from jip.runtime import Runtime, build_runtime
from jip.samples import PatientInfo, image_series, write_datasets
from jip.store.catalog.catalog import Catalog, StoredInstance
from jip.store.dicom_file import read_instance
from jip.store.ingest import blob_key
from jip.store.storage.port import BlobStorage

MANUFACTURERS = [
    ("SIEMENS", "SOMATOM Force"),
    ("GE MEDICAL SYSTEMS", "Revolution CT"),
    ("Philips", "IQon Spectral CT"),
    ("Canon Medical Systems", "Aquilion ONE"),
]
BODY_PARTS = ["ABDOMEN", "CHEST", "HEAD", "PELVIS", "NECK"]
THICKNESSES = [0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0]
DESCRIPTIONS = ["AX {t}mm venous", "Abdomen arterial phase", "Thorax Lunge", "cor MPR",
                "T1 AX post contrast", "Liver venous {t}mm"]


@dataclass(frozen=True)
class PlannedSeries:
    """A series to ingest and the document the index should hold for it."""

    expected: dict[str, Any]
    datasets: list[Dataset]


def plan_series(count: int, seed: int) -> list[PlannedSeries]:
    """``count`` small CT/MR series of varied patients, studies, scanners and headers."""
    rng = random.Random(seed)
    planned: list[PlannedSeries] = []
    patient_no = 0
    while len(planned) < count:
        patient_no += 1
        born = date(1935, 1, 1) + timedelta(days=rng.randrange(0, 365 * 60))
        patient = PatientInfo(f"S{seed}P{patient_no:04d}", "Test^Patient",
                              born.strftime("%Y%m%d"), rng.choice(["F", "M"]))
        for _ in range(rng.choice([1, 1, 2])):
            study_date = date(2015, 1, 1) + timedelta(days=rng.randrange(0, 3650))
            modality = rng.choice(["CT", "CT", "MR"])
            body_part, manufacturer = rng.choice(BODY_PARTS), rng.choice(MANUFACTURERS)
            study_uid = f"2.25.{rng.getrandbits(100)}"
            for number in range(1, rng.choice([2, 3, 4])):
                planned.append(_series(rng, patient, modality, study_uid, study_date,
                                       number, body_part, manufacturer))
    return planned[:count]


def _series(rng: random.Random, patient: PatientInfo, modality: str, study_uid: str,
            study_date: date, number: int, body_part: str,
            manufacturer: tuple[str, str]) -> PlannedSeries:
    thickness, slices = rng.choice(THICKNESSES), rng.choice([1, 2, 3])
    description = rng.choice(DESCRIPTIONS).format(t=f"{thickness:g}")
    datasets = image_series(
        patient=patient, modality=modality, study_instance_uid=study_uid,
        study_date=study_date.strftime("%Y%m%d"), series_number=number, slices=slices,
        rows=8, columns=8, body_part=body_part, manufacturer=manufacturer,
        slice_thickness=thickness, series_description=description,
    )
    no_body_part, no_age = rng.random() < 0.1, rng.random() < 0.15
    contrast = modality == "CT" and rng.random() < 0.4
    for ds in datasets:
        if no_body_part:
            del ds.BodyPartExamined
        if no_age:  # the age then comes from the birth and study dates
            del ds.PatientAge
        if contrast:
            ds.ContrastBolusAgent = "Iomeprol"
    born = date.fromisoformat(f"{patient.birth_date[:4]}-{patient.birth_date[4:6]}-"
                              f"{patient.birth_date[6:]}")
    years = study_date.year - born.year - (
        (study_date.month, study_date.day) < (born.month, born.day))
    expected: dict[str, Any] = {
        ID_FIELD: str(datasets[0].SeriesInstanceUID),
        "StudyInstanceUID": study_uid,
        "PatientID": patient.patient_id,
        "PatientSex": patient.sex,
        "PatientAgeYears": float(years),
        "StudyDate": study_date.isoformat(),
        "Modality": modality,
        "Manufacturer": manufacturer[0],
        "ManufacturerModelName": manufacturer[1],
        "SliceThickness": thickness,
        "SeriesDescription": description,
        "SeriesNumber": number,
        "NumberOfInstances": slices,
        "Contrast": contrast,
    }
    if not no_body_part:
        expected["BodyPartExamined"] = body_part
    return PlannedSeries(expected, datasets)


def ingest(runtime: Runtime, planned: list[PlannedSeries], spool: Path) -> None:
    """Through the store's one ingest path, as the listener and STOW-RS do."""
    for series in planned:
        for path in write_datasets(series.datasets, spool / series.expected[ID_FIELD]):
            runtime.ingestor.ingest_file(path)


def indexer_of(runtime: Runtime, batch_size: int = 500) -> Indexer:
    return Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index,
                   batch_size=batch_size)


def site_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, auth={"enabled": False})


@pytest.fixture(scope="module")
def corpus_site(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Runtime, list[dict[str, Any]]]]:
    root = tmp_path_factory.mktemp("corpus")
    runtime = build_runtime(site_settings(root / "data"))
    planned = plan_series(240, seed=3)
    ingest(runtime, planned, root / "spool")
    done = indexer_of(runtime).drain()
    assert (done.instances, done.failed) == (sum(len(p.datasets) for p in planned), 0)
    yield runtime, [p.expected for p in planned]
    runtime.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(site_settings(tmp_path / "data"))
    yield runtime
    runtime.close()


def uids(docs: list[dict[str, Any]]) -> set[str]:
    return {d[ID_FIELD] for d in docs}


# -- every series, every clause, every aggregation ------------------------------------------
def test_every_ingested_series_is_indexed_with_its_header_values(corpus_site: Any) -> None:
    runtime, expected = corpus_site
    found = runtime.index.search(limit=1000)
    assert found.total == len(expected) == 240
    by_uid = {hit[ID_FIELD]: hit for hit in found.hits}
    for doc in expected:
        stored = by_uid[doc[ID_FIELD]]
        assert {k: stored.get(k) for k in doc} == doc
        assert ("BodyPartExamined" in stored) == ("BodyPartExamined" in doc)


QUERIES: dict[str, dict[str, Any]] = {
    "term": {"term": {"Modality": "MR"}},
    "term with value": {"term": {"Manufacturer": {"value": "SIEMENS"}}},
    "term on a boolean": {"term": {"Contrast": True}},
    "term on a text field's keyword twin": {"term": {"SeriesDescription.keyword": "cor MPR"}},
    "terms": {"terms": {"BodyPartExamined": ["HEAD", "NECK"]}},
    "range of floats": {"range": {"SliceThickness": {"gt": 1.0, "lte": 2.5}}},
    "range of ages": {"range": {"PatientAgeYears": {"gte": 50, "lte": 70}}},
    "range of dates": {"range": {"StudyDate": {"gte": "2018-01-01", "lt": "20200101"}}},
    "range of integers": {"range": {"NumberOfInstances": {"gte": 2}}},
    "exists": {"exists": {"field": "BodyPartExamined"}},
    "missing": {"bool": {"must_not": [{"exists": {"field": "BodyPartExamined"}}]}},
    "prefix": {"prefix": {"Manufacturer": "GE"}},
    "wildcard": {"wildcard": {"ManufacturerModelName": "*ONE"}},
    "match": {"match": {"SeriesDescription": "arterial"}},
    "match all words": {"match": {"SeriesDescription": {"query": "AX venous",
                                                        "operator": "and"}}},
    "should": {"bool": {"should": [{"term": {"Modality": "MR"}},
                                   {"term": {"Contrast": True}}]}},
    "should two of three": {"bool": {"should": [
        {"term": {"Modality": "CT"}}, {"term": {"PatientSex": "F"}},
        {"range": {"SliceThickness": {"lte": 1.25}}}], "minimum_should_match": 2}},
    "filter and must_not": {"bool": {"filter": [{"term": {"Modality": "CT"}}],
                                     "must_not": [{"term": {"PatientSex": "F"}}]}},
    "nested bool": {"bool": {"must": [
        {"bool": {"should": [{"term": {"BodyPartExamined": "ABDOMEN"}},
                             {"term": {"BodyPartExamined": "PELVIS"}}]}},
        {"range": {"StudyDate": {"gte": "2017-06-01"}}}]}},
}


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_each_clause_matches_the_series_computed_here(corpus_site: Any,
                                                      query: dict[str, Any]) -> None:
    runtime, expected = corpus_site
    wanted = uids(reference.search(expected, query))
    assert 0 < len(wanted) < len(expected)  # the corpus makes the clause discriminate
    found = runtime.index.search(parse_query(query), limit=1000, fields=[ID_FIELD])
    assert found.total == len(wanted)
    assert uids(found.hits) == wanted


def test_sorted_pages_follow_the_sort_field(corpus_site: Any) -> None:
    runtime, expected = corpus_site
    order = reference.sort(expected, "SliceThickness", descending=True)
    pages = [runtime.index.search(sort=parse_sort([{"SliceThickness": "desc"}]), offset=offset,
                                  limit=50, fields=[ID_FIELD]).hits for offset in (0, 50)]
    assert [h[ID_FIELD] for page in pages for h in page] == order[:100]


AGGREGATIONS: dict[str, tuple[dict[str, Any], Any]] = {
    "terms": ({"terms": {"field": "Manufacturer"}},
              lambda docs: reference.terms(docs, "Manufacturer")),
    "terms of a boolean": ({"terms": {"field": "Contrast"}},
                           lambda docs: reference.terms(docs, "Contrast")),
    "terms with size": ({"terms": {"field": "BodyPartExamined", "size": 3}},
                        lambda docs: reference.terms(docs, "BodyPartExamined", 3)),
    "range": ({"range": {"field": "SliceThickness", "ranges": [
        {"to": 1.0}, {"from": 1.0, "to": 3.0}, {"key": "thick", "from": 3.0}]}},
        lambda docs: reference.ranges(docs, "SliceThickness", [
            {"to": 1.0}, {"from": 1.0, "to": 3.0}, {"key": "thick", "from": 3.0}])),
    "date_histogram": ({"date_histogram": {"field": "StudyDate", "calendar_interval": "year"}},
                       lambda docs: reference.date_histogram(docs, "StudyDate", "year")),
    "cardinality": ({"cardinality": {"field": "PatientID"}},
                    lambda docs: reference.cardinality(docs, "PatientID")),
}


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_each_aggregation_counts_what_is_computed_here(corpus_site: Any, name: str) -> None:
    runtime, expected = corpus_site
    spec, compute = AGGREGATIONS[name]
    ct = {"term": {"Modality": "CT"}}
    aggs = parse_aggs({name: spec})
    assert runtime.index.aggregate(MATCH_ALL, aggs)[name] == compute(expected)
    subset = reference.search(expected, ct)
    assert runtime.index.aggregate(parse_query(ct), aggs)[name] == compute(subset)


# -- failures, deletions, crashes -----------------------------------------------------------
def test_unparseable_header_is_recorded_and_does_not_stop_the_indexer(
    site: Runtime, tmp_path: Path
) -> None:
    planned = [p for p in plan_series(12, seed=5) if len(p.datasets) > 1][:3]
    ingest(site, planned, tmp_path / "spool")
    series_uid = planned[0].expected[ID_FIELD]
    broken = site.catalog.instances_of_series(series_uid)[0]
    path = site.storage.local_path(broken.blob_key)
    assert path is not None
    path.write_bytes(b"this is no longer DICOM" * 10)

    done = indexer_of(site).drain()
    assert done.failed == 1
    assert site.index.count() == 3
    (doc,) = site.index.search(parse_query({"term": {ID_FIELD: series_uid}})).hits
    assert doc["NumberOfInstances"] == len(planned[0].datasets) - 1  # the others count
    total, failures = IndexLedger(site.engine).failures()
    assert total == 1 and failures[0].sop_instance_uid == broken.sop_instance_uid
    assert "DICOM" in failures[0].error
    assert IndexLedger(site.engine).progress(site.index).failed == 1
    assert site.catalog.unindexed(10) == []  # not retried on every pass


def test_deleted_series_and_studies_leave_the_index(site: Runtime, tmp_path: Path) -> None:
    planned = plan_series(6, seed=6)
    ingest(site, planned, tmp_path / "spool")
    indexer = indexer_of(site)
    indexer.drain()
    first, other = planned[0].expected, planned[-1].expected
    site.catalog.delete_series(first[ID_FIELD])
    site.catalog.delete_study(other["StudyInstanceUID"])
    gone = {first[ID_FIELD]} | {p.expected[ID_FIELD] for p in planned
                                if p.expected["StudyInstanceUID"] == other["StudyInstanceUID"]}
    assert indexer.run_once().removed == len(gone)
    assert uids(site.index.search(limit=100).hits) == uids(
        [p.expected for p in planned]) - gone
    assert IndexLedger(site.engine).deleted_series(10) == []


def test_outbox_summaries_and_deletions_work_on_every_catalog(
    catalog_url: str, tmp_path: Path
) -> None:
    settings = site_settings(tmp_path / "data").model_copy(update={"catalog_url": catalog_url})
    runtime = build_runtime(settings)
    try:
        planned = plan_series(4, seed=7)
        ingest(runtime, planned, tmp_path / "spool")
        indexer = indexer_of(runtime)
        assert indexer.drain().instances == sum(len(p.datasets) for p in planned)
        gone = planned[0].expected[ID_FIELD]
        runtime.catalog.delete_series(gone)  # the trigger leaves a tombstone
        assert IndexLedger(runtime.engine).summaries_of([gone]) == {}  # cascaded
        assert indexer.run_once().removed == 1
        assert uids(runtime.index.search().hits) == uids([p.expected for p in planned[1:]])
    finally:
        runtime.close()


def test_series_deleted_and_received_again_is_indexed_with_the_new_instances(
    site: Runtime, tmp_path: Path
) -> None:
    planned = plan_series(1, seed=8)
    ingest(site, planned, tmp_path / "first")
    indexer = indexer_of(site)
    indexer.drain()
    series_uid = planned[0].expected[ID_FIELD]
    site.catalog.delete_series(series_uid)
    ingest(site, [PlannedSeries(planned[0].expected, planned[0].datasets[:1])],
           tmp_path / "again")
    indexer.drain()
    (doc,) = site.index.search(parse_query({"term": {ID_FIELD: series_uid}})).hits
    assert doc["NumberOfInstances"] == 1


def test_a_pass_cut_short_is_repeated_with_the_same_documents(
    site: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(site, plan_series(4, seed=9), tmp_path / "spool")
    indexer = indexer_of(site)

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("killed before the outbox was updated")

    monkeypatch.setattr(site.catalog, "mark_indexed", crash)
    with pytest.raises(RuntimeError):
        indexer.run_once()
    before = sorted(site.index.search(limit=100).hits, key=lambda d: d[ID_FIELD])
    monkeypatch.undo()
    assert len(site.catalog.unindexed(100)) == sum(d["NumberOfInstances"] for d in before)
    indexer.drain()
    after = sorted(site.index.search(limit=100).hits, key=lambda d: d[ID_FIELD])
    assert after == before
    assert site.catalog.unindexed(100) == []


def test_series_arriving_over_many_batches_counts_every_instance(
    site: Runtime, tmp_path: Path
) -> None:
    planned = [p for p in plan_series(12, seed=10) if len(p.datasets) == 3][:2]
    ingest(site, planned, tmp_path / "spool")
    done = indexer_of(site, batch_size=2).drain()
    assert done.instances == 6
    counts = {h[ID_FIELD]: h["NumberOfInstances"] for h in site.index.search().hits}
    assert counts == {p.expected[ID_FIELD]: 3 for p in planned}


def test_requeued_instances_are_indexed_again_while_search_answers(
    site: Runtime, tmp_path: Path
) -> None:
    ingest(site, plan_series(5, seed=12), tmp_path / "spool")
    indexer = indexer_of(site)
    indexer.drain()
    before = site.index.search(limit=100).hits
    ledger = IndexLedger(site.engine)
    queued = ledger.requeue()
    assert ledger.progress(site.index).pending == queued > 0
    assert site.index.search(limit=100).hits == before  # still searchable
    assert indexer.drain().instances == queued
    assert site.index.search(limit=100).hits == before


def test_sweep_removes_documents_of_series_the_catalog_does_not_hold(
    site: Runtime, tmp_path: Path
) -> None:
    planned = plan_series(2, seed=13)
    ingest(site, planned, tmp_path / "spool")
    indexer_of(site).drain()
    site.index.upsert([{ID_FIELD: "1.2.3.999", "Modality": "CT"}])
    assert sweep_orphans(site.index, IndexLedger(site.engine)) == 1
    assert uids(site.index.search().hits) == uids([p.expected for p in planned])


def test_headers_are_read_up_to_the_pixel_data_from_any_storage(
    blob_storage: BlobStorage, tmp_path: Path
) -> None:
    (series,) = plan_series(1, seed=14)
    path = write_datasets(series.datasets[:1], tmp_path)[0]
    header, _ = read_instance(path)
    key = blob_key(header, "0" * 64)
    blob_storage.put_bytes(key, path.read_bytes())
    instance = StoredInstance(
        header.sop_instance_uid, header.series_instance_uid, header.study_instance_uid,
        header.sop_class_uid, header.transfer_syntax_uid, key, path.stat().st_size, None, 1,
    )
    indexer = Indexer(catalog=Catalog(create_engine("sqlite://")), storage=blob_storage,
                      index=None)  # type: ignore[arg-type]
    summary = indexer.read_header(instance)
    assert summary[ID_FIELD] == series.expected[ID_FIELD]
    assert summary["Manufacturer"] == series.expected["Manufacturer"]
    assert summary["FileSize"] == path.stat().st_size


# -- the component of `jip up` --------------------------------------------------------------
def test_indexer_component_keeps_up_while_running(site: Runtime, tmp_path: Path) -> None:
    component = meta_indexer(site.settings.model_copy(  # as `jip up` builds it
        update={"meta": site.settings.meta.model_copy(update={"index_interval_s": 0.05})}))
    component.start()
    try:
        assert component.not_ready() is None
        assert component.describe()["index"] == site.settings.resolved_index_url
        planned = plan_series(4, seed=15)
        ingest(site, planned, tmp_path / "spool")
        deadline = time.monotonic() + 20
        while site.index.count() < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert uids(site.index.search().hits) == uids([p.expected for p in planned])
    finally:
        component.stop()
    assert component.not_ready() is not None
