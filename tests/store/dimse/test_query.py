"""C-FIND, C-MOVE and C-GET against the listener: dcmtk's findscu/movescu/getscu and our SCU.

One site holds a synthetic collection (jip.samples: 3 patients x 2 studies x 2 series)
plus two compressed pydicom test files; a second JIP listener and a storescp are the
C-MOVE destinations configured in its ``store.peers``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom.dsutils import split_dataset
from tests.store.dimse.support import OPEN

from jip import errors
from jip.config import DicomPeer
from jip.samples import synthetic_site, write_datasets
from jip.store.catalog.queries import QueryLevel
from jip.store.dimse import scu

if TYPE_CHECKING:
    from tests.store.conftest import Listener, StoreSCP

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
COMPRESSED = ["JPEG2000.dcm", "SC_rgb_rle.dcm"]


def dcmtk(tool: str, site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk SCU against the site's listener (Study Root, verbose)."""
    command = [tool, "-v", "-S", *args, "-aec", "JIP", "127.0.0.1", str(site.listener.port)]
    return subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV, timeout=120)


@dataclass
class Site:
    listener: Listener
    destination: Listener  # a second JIP listener, peer "second"
    storescp: StoreSCP  # dcmtk storescp, peer "dest"
    datasets: list[Dataset]
    compressed: list[Path]


@pytest.fixture(scope="module")
def site(
    make_module_listener: Callable[..., Listener],
    make_storescp: Callable[..., StoreSCP],
    tmp_path_factory: pytest.TempPathFactory,
) -> Site:
    storescp = make_storescp("DEST")
    destination = make_module_listener(ae_title="SECOND", **OPEN)
    peers = {
        "dest": storescp.peer(),
        "second": destination.peer(),
    }
    listener = make_module_listener(peers=peers, **OPEN)
    datasets = synthetic_site(patients=3, studies_per_patient=2, series_per_study=2, slices=3, rows=16, columns=16)  # fmt: skip
    folder = tmp_path_factory.mktemp("collection")
    write_datasets(datasets, folder)
    compressed = [Path(str(get_testdata_file(name))) for name in COMPRESSED]
    report = scu.send(listener.settings, listener.peer(), [folder, *compressed])
    assert not report.failed, [(f.path.name, f.status, f.error) for f in report.failed[:3]]
    return Site(listener, destination, storescp, datasets, compressed)


def studies(datasets: list[Dataset]) -> dict[str, Dataset]:
    return {str(ds.StudyInstanceUID): ds for ds in datasets}


def dataset_bytes(path: Path) -> bytes:
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def findscu(site: Site, *keys: str, model: str = "-S", tmp: Path) -> list[Dataset]:
    out = tmp / "rsp"
    out.mkdir(parents=True)
    args = ["findscu", model, "-X", "-od", str(out), "-aec", "JIP", "127.0.0.1"]
    args += [str(site.listener.port)]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run(args, capture_output=True, text=True, env=DCMTK_ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.mark.dcmtk
def test_findscu_study_level_with_wildcard_returns_requested_keys(site: Site, tmp_path: Path) -> None:  # fmt: skip
    family = str(site.datasets[0].PatientName).split("^")[0]
    expected = {uid for uid, ds in studies(site.datasets).items() if str(ds.PatientName).startswith(family)}  # fmt: skip
    found = findscu(
        site,
        "QueryRetrieveLevel=STUDY",
        f"PatientName={family}*",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "PatientAge",
        tmp=tmp_path,
    )
    assert {str(ds.StudyInstanceUID) for ds in found} == expected
    for ds in found:
        assert ds.QueryRetrieveLevel == "STUDY"
        assert ds.NumberOfStudyRelatedInstances == 6
        assert ds.ModalitiesInStudy in ("CT", "MR")
        assert "PatientAge" in ds and not ds.PatientAge  # asked for, not catalogued: empty
        assert "StudyDescription" not in ds  # not asked for


@pytest.mark.dcmtk
@pytest.mark.parametrize("shape", ["closed", "open_end", "open_start", "single"])
def test_findscu_study_date_ranges(site: Site, tmp_path: Path, shape: str) -> None:
    dates = sorted({str(ds.StudyDate) for ds in site.datasets})
    low, high = dates[1], dates[-2]
    match, keep = {
        "closed": (f"{low}-{high}", lambda d: low <= d <= high),
        "open_end": (f"{low}-", lambda d: d >= low),
        "open_start": (f"-{high}", lambda d: d <= high),
        "single": (low, lambda d: d == low),
    }[shape]
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in site.compressed]
    every = studies(site.datasets + headers)
    expected = {uid for uid, ds in every.items() if ds.StudyDate and keep(str(ds.StudyDate))}
    found = findscu(site, "QueryRetrieveLevel=STUDY", f"StudyDate={match}", "StudyInstanceUID", tmp=tmp_path)  # fmt: skip
    assert {str(ds.StudyInstanceUID) for ds in found} == expected


@pytest.mark.dcmtk
def test_findscu_patient_level_in_patient_root(site: Site, tmp_path: Path) -> None:
    found = findscu(
        site,
        "QueryRetrieveLevel=PATIENT",
        "PatientID=PAT*",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        model="-P",
        tmp=tmp_path,
    )
    assert sorted(str(ds.PatientID) for ds in found) == ["PAT00000", "PAT00001", "PAT00002"]
    assert all(ds.NumberOfPatientRelatedStudies == 2 for ds in found)


@pytest.mark.dcmtk
def test_findscu_series_and_image_levels(site: Site, tmp_path: Path) -> None:
    study_uid = str(site.datasets[0].StudyInstanceUID)
    series = findscu(
        site,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study_uid}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
        tmp=tmp_path / "series",
    )
    assert len(series) == 2
    assert all(ds.NumberOfSeriesRelatedInstances == 3 for ds in series)
    images = findscu(
        site,
        "QueryRetrieveLevel=IMAGE",
        f"SeriesInstanceUID={series[0].SeriesInstanceUID}",
        "SOPInstanceUID",
        "InstanceNumber",
        tmp=tmp_path / "images",
    )
    expected = {str(ds.SOPInstanceUID) for ds in site.datasets if ds.SeriesInstanceUID == series[0].SeriesInstanceUID}  # fmt: skip
    assert {str(ds.SOPInstanceUID) for ds in images} == expected


@pytest.mark.dcmtk
def test_findscu_patient_level_in_study_root_is_refused(site: Site, tmp_path: Path) -> None:
    result = dcmtk("findscu", site, "-k", "QueryRetrieveLevel=PATIENT")
    # dcmtk names 0xA900 after the Storage status (PS3.4 C.4.1.1.4: Identifier does
    # not match SOP Class).
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in result.stderr


def test_scu_find_uses_the_query_model(site: Site) -> None:
    peer = site.listener.peer()
    settings = site.listener.settings
    patients = scu.find(settings, peer, QueryLevel.PATIENT, {"PatientID": "", "PatientName": ""}, model="patient")  # fmt: skip
    assert len(patients) == 3 + len(COMPRESSED)  # the pydicom files bring their own patients
    with pytest.raises(errors.Invalid, match="0xA900"):
        scu.find(settings, peer, QueryLevel.PATIENT, {"PatientID": ""}, model="study")


@pytest.mark.dcmtk
def test_movescu_study_to_a_configured_storescp(site: Site) -> None:
    study_uid = str(site.datasets[0].StudyInstanceUID)
    result = dcmtk(
        "movescu",
        site,
        "-aem",
        "DEST",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
    )
    assert result.returncode == 0, result.stderr
    received = [pydicom.dcmread(p) for p in site.storescp.files()]
    expected = {str(ds.SOPInstanceUID) for ds in site.datasets if ds.StudyInstanceUID == study_uid}
    assert {str(ds.SOPInstanceUID) for ds in received} >= expected
    for ds in received:
        if str(ds.SOPInstanceUID) in expected:
            stored = pydicom.dcmread(site.listener.stored_path(str(ds.SOPInstanceUID)))
            assert ds.PixelData == stored.PixelData


@pytest.mark.dcmtk
def test_movescu_to_an_unknown_destination_fails_with_a801(site: Site) -> None:
    study_uid = str(site.datasets[0].StudyInstanceUID)
    result = dcmtk(
        "movescu",
        site,
        "-aem",
        "NOBODY",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
    )
    assert "MoveDestinationUnknown" in result.stderr or "a801" in result.stderr.lower()


def test_scu_move_streams_stored_bytes_unchanged_incl_compressed(site: Site) -> None:
    """Our SCU asks our listener to C-MOVE to a second JIP listener: bytes arrive as stored."""
    listener, second = site.listener, site.destination
    for path in site.compressed:
        study_uid = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        result = scu.move(
            listener.settings,
            listener.peer(),
            "SECOND",
            QueryLevel.STUDY,
            {"StudyInstanceUID": study_uid},
        )
        assert (result.status, result.failed) == (0, 0)
        assert result.completed >= 1
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        moved = second.stored_path(sop)
        assert dataset_bytes(moved) == dataset_bytes(listener.stored_path(sop))
        assert dataset_bytes(moved) == dataset_bytes(path)


@pytest.mark.dcmtk
def test_getscu_series_returns_its_instances(site: Site, tmp_path: Path) -> None:
    series_uid = str(site.datasets[3].SeriesInstanceUID)
    result = dcmtk(
        "getscu",
        site,
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"SeriesInstanceUID={series_uid}",
    )
    assert result.returncode == 0, result.stderr
    received = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("*")) if p.is_file()]
    expected = {str(ds.SOPInstanceUID) for ds in site.datasets if ds.SeriesInstanceUID == series_uid}  # fmt: skip
    assert {str(ds.SOPInstanceUID) for ds in received} == expected
    for ds in received:
        stored = pydicom.dcmread(site.listener.stored_path(str(ds.SOPInstanceUID)))
        assert ds.PixelData == stored.PixelData


def test_move_destination_must_be_a_configured_peer(site: Site) -> None:
    unknown = DicomPeer(ae_title="JIP", host="127.0.0.1", port=site.listener.port)
    with pytest.raises(errors.NotFound, match="0xA801"):
        scu.move(
            site.listener.settings,
            unknown,
            "STRANGER",
            QueryLevel.STUDY,
            {"StudyInstanceUID": str(site.datasets[0].StudyInstanceUID)},
        )
