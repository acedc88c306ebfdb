"""Query and retrieve from Orthanc as the hospital PACS: C-FIND at study level, C-MOVE and
C-GET into a chosen project with progress, and saved queries run by the scheduler that
retrieve only the studies the site does not hold yet."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select
from tests.support.network import free_port

from jip.base import as_utc
from jip.config import DicomPeer
from jip.samples import image_series, random_patient, write_datasets
from jip.store.catalog.tables import SeriesProject
from jip.store.dimse import retrievals, saved_queries
from jip.store.dimse.pacs_tables import RetrievalState
from jip.store.dimse.study_query import StudyQuery, find_studies

if TYPE_CHECKING:
    from tests.store.conftest import Listener, Orthanc

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]
PROJECT = "trial"


@dataclass
class Hospital:
    jip: Listener
    pacs: Orthanc
    folder: Path

    def add_study(self, index: int, study_date: str = "20240115") -> list[Dataset]:
        """A new study of a new patient on the PACS (PatientID PAT000<index>)."""
        patient = random_patient(random.Random(index), index)
        study = image_series(patient=patient, slices=3, rows=16, columns=16, study_date=study_date)
        for path in write_datasets(study, self.folder / str(index)):
            self.pacs.upload(path.read_bytes())
        return study


@pytest.fixture(scope="module")
def hospital(
    make_module_listener: Callable[..., Listener],
    make_orthanc: Callable[..., Orthanc],
    tmp_path_factory: pytest.TempPathFactory,
) -> Hospital:
    orthanc_port = free_port()
    jip = make_module_listener(
        peers={
            "pacs": DicomPeer(ae_title="ORTHANC", host="127.0.0.1", port=orthanc_port),
            "pacs-get": DicomPeer(
                ae_title="ORTHANC", host="127.0.0.1", port=orthanc_port, retrieve="get"
            ),
            "down": DicomPeer(ae_title="GONE", host="127.0.0.1", port=free_port()),
        },
    )
    jip.runtime.identity.projects.create(PROJECT)
    pacs = make_orthanc({"jip": jip.peer()}, dicom_port=orthanc_port)
    return Hospital(jip, pacs, tmp_path_factory.mktemp("pacs-studies"))


def _projects_of(hospital: Hospital, study: list[Dataset]) -> set[str]:
    series_uids = {str(ds.SeriesInstanceUID) for ds in study}
    with hospital.jip.runtime.engine.connect() as conn:
        rows = conn.execute(
            select(SeriesProject.project).where(
                SeriesProject.series_instance_uid.in_(sorted(series_uids))
            )
        )
        return set(rows.scalars())


def _retrieve(hospital: Hospital, peer: str, study: list[Dataset]) -> retrievals.Retrieval:
    request = retrievals.RetrievalRequest(
        peer=peer,
        project=PROJECT,
        study_uids=[str(study[0].StudyInstanceUID)],
        requested_by="ada",
    )
    row = retrievals.create(hospital.jip.runtime, request)
    assert row.state == RetrievalState.QUEUED and row.method == ("get" if "get" in peer else "move")
    return retrievals.execute(hospital.jip.runtime, row.id)


def test_a_study_query_finds_by_patient_and_date_and_says_what_is_stored(
    hospital: Hospital,
) -> None:
    study = hospital.add_study(11, study_date="20230301")
    runtime = hospital.jip.runtime
    peer = runtime.settings.store.peers["pacs"]
    query = StudyQuery(patient_id="PAT00011", study_date_from="2023-01-01", modality="ct")
    matches, truncated = find_studies(runtime.settings, runtime.engine, peer, query)
    assert not truncated
    assert [m.study_instance_uid for m in matches] == [str(study[0].StudyInstanceUID)]
    assert matches[0].instances == 3 and matches[0].modalities == "CT"
    assert not matches[0].stored
    outside = StudyQuery(patient_id="PAT00011", study_date_to="20221231")
    assert find_studies(runtime.settings, runtime.engine, peer, outside)[0] == []


def test_c_move_retrieves_a_study_into_the_chosen_project_only(hospital: Hospital) -> None:
    study = hospital.add_study(12)
    done = _retrieve(hospital, "pacs", study)
    assert done.state == RetrievalState.DONE, done.error
    assert (done.completed, done.failed, done.remaining, done.studies_done) == (3, 0, 0, 1)
    catalog = hospital.jip.runtime.catalog
    assert len(catalog.instances_of_study(str(study[0].StudyInstanceUID))) == 3
    # Asked for in "trial": not also in the default project, where no rule sent it.
    assert _projects_of(hospital, study) == {PROJECT}


def test_c_get_retrieves_from_a_peer_without_a_route_to_us(hospital: Hospital) -> None:
    study = hospital.add_study(13)
    done = _retrieve(hospital, "pacs-get", study)
    assert done.state == RetrievalState.DONE, done.error
    assert (done.completed, done.failed) == (3, 0)
    stored = hospital.jip.runtime.catalog.instances_of_study(str(study[0].StudyInstanceUID))
    assert sorted(i.sop_instance_uid for i in stored) == sorted(
        str(ds.SOPInstanceUID) for ds in study
    )
    assert _projects_of(hospital, study) == {PROJECT}


def test_a_saved_query_run_by_the_scheduler_retrieves_only_new_studies(
    hospital: Hospital,
) -> None:
    runtime = hospital.jip.runtime
    first = hospital.add_study(21, study_date="20250102")
    body = saved_queries.SavedQueryIn(
        name="nightly-2025",
        peer="pacs",
        project=PROJECT,
        query=StudyQuery(study_date_from="20250101"),
        run_at="01:30",
    )
    saved = saved_queries.add(runtime, body, user="ada")
    scheduler = saved_queries.SavedQueryScheduler(runtime)
    before = saved.next_run_at - timedelta(minutes=1)
    assert scheduler.tick(before) == []  # not due yet: nothing runs

    [run] = scheduler.tick(saved.next_run_at)
    assert run.state == RetrievalState.DONE, run.error
    assert (run.found, run.skipped, run.completed) == (1, 0, 3)
    assert scheduler.tick(saved.next_run_at) == []  # claimed: moved to the next day

    second = hospital.add_study(22, study_date="20250103")
    nxt = saved_queries.get(runtime.engine, saved.id).next_run_at
    assert as_utc(nxt) == saved.next_run_at + timedelta(days=1)
    [again] = scheduler.tick(nxt)
    assert (again.found, again.skipped, again.completed) == (2, 1, 3)
    assert again.study_uids == [str(second[0].StudyInstanceUID)]
    assert _projects_of(hospital, first) == _projects_of(hospital, second) == {PROJECT}
    runs = retrievals.recent(runtime.engine, saved_query_id=saved.id)
    assert [r.id for r in runs] == [again.id, run.id]


def test_a_run_against_an_unreachable_peer_is_recorded_as_failed(hospital: Hospital) -> None:
    runtime = hospital.jip.runtime
    body = saved_queries.SavedQueryIn(name="down", peer="down", project=PROJECT, run_at="03:00")
    saved = saved_queries.add(runtime, body, user="ada")
    saved_queries.run_soon(runtime.engine, saved.id)
    [run] = saved_queries.SavedQueryScheduler(runtime).tick()
    assert run.state == RetrievalState.FAILED
    assert "GONE" in run.error and run.saved_query_id == saved.id
