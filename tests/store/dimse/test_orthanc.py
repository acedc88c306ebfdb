"""Orthanc as the hospital PACS: JIP finds and moves from it, it forwards to and queries JIP.

Orthanc's DICOM peer list names our listener ("jip"); our ``store.peers`` names Orthanc
("pacs"), so C-MOVE works in both directions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import split_dataset
from tests.store.dimse.support import OPEN
from tests.support.network import free_port

from jip.samples import image_series, random_patient, write_datasets
from jip.store.catalog.queries import QueryLevel
from jip.store.dimse import scu

if TYPE_CHECKING:
    from tests.store.conftest import Listener, Orthanc


pytestmark = [pytest.mark.orthanc, pytest.mark.slow]


@dataclass
class Hospital:
    jip: Listener
    pacs: Orthanc
    study: list[Dataset]  # uploaded to Orthanc only
    files: list[Path]


@pytest.fixture(scope="module")
def hospital(
    make_module_listener: Callable[..., Listener],
    make_orthanc: Callable[..., Orthanc],
    tmp_path_factory: pytest.TempPathFactory,
) -> Hospital:
    from jip.config import DicomPeer

    orthanc_port = free_port()
    jip = make_module_listener(
        peers={"pacs": DicomPeer(ae_title="ORTHANC", host="127.0.0.1", port=orthanc_port)},
        **OPEN,  # the test loads JIP with JIP's own SCU (calling AE "JIP", no peer)
    )
    pacs = make_orthanc({"jip": jip.peer()}, dicom_port=orthanc_port)
    study = image_series(patient=random_patient(random.Random(7), 70), slices=4, rows=32, columns=32)  # fmt: skip
    files = write_datasets(study, tmp_path_factory.mktemp("pacs-study"))
    for path in files:
        pacs.upload(path.read_bytes())
    return Hospital(jip, pacs, study, files)


def dataset_bytes(data: bytes, tmp: Path) -> bytes:
    path = tmp / "x.dcm"
    path.write_bytes(data)
    _, offset = split_dataset(path)
    return data[offset:]


def test_scu_echo_and_find_reach_orthanc(hospital: Hospital) -> None:
    jip, pacs = hospital.jip, hospital.pacs
    assert scu.echo(jip.settings, pacs.peer()).status == 0
    study_uid = str(hospital.study[0].StudyInstanceUID)
    matches = scu.find(
        jip.settings,
        pacs.peer(),
        QueryLevel.STUDY,
        {"PatientID": str(hospital.study[0].PatientID), "StudyInstanceUID": "", "StudyDate": ""},
    )
    assert [str(m.StudyInstanceUID) for m in matches] == [study_uid]


def test_move_a_study_from_orthanc_into_jip(hospital: Hospital, tmp_path: Path) -> None:
    jip, pacs = hospital.jip, hospital.pacs
    study_uid = str(hospital.study[0].StudyInstanceUID)
    progress: list[scu.MoveProgress] = []
    result = scu.move(
        jip.settings,
        pacs.peer(),
        "JIP",
        QueryLevel.STUDY,
        {"StudyInstanceUID": study_uid},
        progress=progress.append,
    )
    assert (result.status, result.completed, result.failed) == (0, 4, 0)
    for ds in hospital.study:
        uid = str(ds.SOPInstanceUID)
        orthanc_id = pacs.post("/tools/lookup", uid.encode())[0]["ID"]
        sent = pacs.get(f"/instances/{orthanc_id}/file")
        stored = jip.stored_path(uid).read_bytes()
        assert dataset_bytes(stored, tmp_path) == dataset_bytes(sent, tmp_path)


def test_orthanc_forwards_a_study_to_jip(hospital: Hospital) -> None:
    jip, pacs = hospital.jip, hospital.pacs
    study = image_series(patient=random_patient(random.Random(8), 80), slices=3, rows=32, columns=32)  # fmt: skip
    ids = [pacs.upload(_part10(ds)) for ds in study]
    before = jip.instance_count()
    pacs.post("/modalities/jip/store", {"Resources": ids, "Synchronous": True})
    assert jip.instance_count() == before + 3


def test_orthanc_queries_jip_and_retrieves_from_it(hospital: Hospital, tmp_path: Path) -> None:
    jip, pacs = hospital.jip, hospital.pacs
    study = image_series(patient=random_patient(random.Random(9), 90), slices=2, rows=32, columns=32)  # fmt: skip
    files = write_datasets(study, tmp_path / "only-in-jip")
    assert not scu.send(jip.settings, jip.peer(), files).failed
    query = pacs.post(
        "/modalities/jip/query",
        {"Level": "Study", "Query": {"PatientID": str(study[0].PatientID), "StudyInstanceUID": ""}},
    )
    answers = pacs.get(f"/queries/{query['ID']}/answers?expand")
    assert [a["0020,000d"]["Value"] for a in answers] == [str(study[0].StudyInstanceUID)]
    # Orthanc retrieves by C-MOVE with itself as destination: ORTHANC is one of our peers.
    pacs.post(f"/queries/{query['ID']}/answers/0/retrieve", {"TargetAet": "ORTHANC", "Synchronous": True})  # fmt: skip
    found = pacs.post("/tools/find", {"Level": "Instance", "Query": {"PatientID": str(study[0].PatientID)}})  # fmt: skip
    assert len(found) == 2


def _part10(ds: Dataset) -> bytes:
    import io

    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
