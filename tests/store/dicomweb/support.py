"""Fixtures and helpers of the DICOMweb tests: a real uvicorn server and test files.

Each test module gets its own site (temp data dir, catalog, storage) served by uvicorn
on a free port in a thread, so ``dicomweb-client`` and ``httpx`` talk real HTTP to it.
A test module declares its ``site`` fixture with :func:`serve` (tests/store/conftest.py
belongs to the store core's tests).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.config import AuthSettings, Settings
from jip.runtime import Runtime, build_runtime
from jip.samples import image_series, random_patient

# pydicom test files, one per transfer syntax family (no two share a SOP Instance UID).
TEST_FILES = {
    "explicit": "CT_small.dcm",  # Explicit VR Little Endian, 128x128, 16 bit
    "jpeg2000": "JPEG2000.dcm",  # JPEG 2000, 1024x256
    "jpeg_baseline": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline, RGB 100x100
    "rle": "MR_small_RLE.dcm",  # RLE Lossless, 64x64
    "multiframe_j2k": "emri_small_jpeg_2k_lossless.dcm",  # JPEG 2000 lossless, 10 frames
}


def sample_file_bytes(kind: str) -> bytes:
    path = get_testdata_file(TEST_FILES[kind])
    assert path is not None
    return Path(path).read_bytes()


def part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ct_series(slices: int = 4, rows: int = 32, columns: int = 32, **kwargs: object) -> list[bytes]:
    """A realistic CT series (``jip.samples``) as Part 10 files."""
    import random

    patient = kwargs.pop("patient", None) or random_patient(random.Random(len(kwargs)), 1)
    datasets = image_series(
        patient=patient,  # type: ignore[arg-type]
        slices=slices,
        rows=rows,
        columns=columns,
        **kwargs,  # type: ignore[arg-type]
    )
    return [part10(ds) for ds in datasets]


def uids_of(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


@dataclass
class Site:
    """A running JIP app: ``url`` is the DICOMweb root, ``origin`` the server."""

    origin: str
    runtime: Runtime
    data_dir: Path

    @property
    def url(self) -> str:
        return f"{self.origin}/dicom-web"


def serve(data_dir: Path, **settings: object) -> Iterator[Site]:
    """Serve a new site; authentication is off (tokens are jip.base's tests' business)."""
    settings.setdefault("auth", AuthSettings(enabled=False))
    runtime = build_runtime(Settings(data_dir=data_dir, **settings))  # type: ignore[arg-type]
    app = build_app(runtime)
    try:
        with serve_in_thread(app) as url:
            yield Site(url, runtime, data_dir)
    finally:
        runtime.close()
