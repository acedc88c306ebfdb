"""rtstruct-to-seg, run as a subprocess as the runner starts it, on a structure set written
the way an RT planning system exports one (pydicom by hand, nothing of JIP's)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from jip_sdk import ExitCode, read_datasets, sort_slices
from jip_sdk.phantom import (
    ORGANS,
    AbdomenPhantom,
    PhantomSeries,
    build_abdomen_phantom,
    write_ct_series,
)
from jip_sdk.seg import read_segment_masks
from jip_sdk.testing import dciodvfy_errors, run_operator_main
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MAIN = Path(__file__).resolve().parents[1] / "main.py"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
LIVER = next(organ for organ in ORGANS if organ.name == "liver")


def _item(**values: Any) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def _contour(points: list[tuple[float, float, float]], kind: str = "CLOSED_PLANAR") -> Dataset:
    return _item(ContourGeometricType=kind, NumberOfContourPoints=len(points),
                 ContourData=[f"{v:.3f}" for p in points for v in p])  # fmt: skip


def liver_contours(slices: list[Dataset]) -> list[Dataset]:
    """The liver ellipsoid's cross-section on every slice it meets (64-gons, in mm)."""
    (cx, cy, cz), (a, b, c) = LIVER.center_mm, LIVER.semi_axes_mm
    found = []
    for ds in slices:
        z = float(ds.ImagePositionPatient[2])
        scale = 1 - ((z - cz) / c) ** 2
        if scale <= 0.05:
            continue
        r = math.sqrt(scale)
        found.append(_contour([(cx + a * r * math.cos(t), cy + b * r * math.sin(t), z)
                               for t in np.linspace(0, 2 * math.pi, 64, endpoint=False)]))  # fmt: skip
    return found


def square(z: float, half: float) -> list[tuple[float, float, float]]:
    return [(-half, -half, z), (half, -half, z), (half, half, z), (-half, half, z)]


def write_rtstruct(ct: PhantomSeries, folder: Path, *, reference: bool = True) -> Path:
    slices = sort_slices(read_datasets(ct.series))
    first = slices[0]
    middle = float(slices[len(slices) // 2].ImagePositionPatient[2])
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET, generate_uid()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):  # fmt: skip
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), 50
    ds.Manufacturer, ds.OperatorsName = "Planning Inc.", ""
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = "Plan", "20250101", "120000"
    ds.InstanceNumber = 1
    images = Sequence([_item(ReferencedSOPClassUID=s.SOPClassUID, ReferencedSOPInstanceUID=s.SOPInstanceUID)
                       for s in slices])  # fmt: skip
    frame = _item(FrameOfReferenceUID=first.FrameOfReferenceUID)
    if reference:
        series = _item(SeriesInstanceUID=ct.series_instance_uid, ContourImageSequence=images)
        frame.RTReferencedStudySequence = [_item(
            ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID=ct.study_instance_uid,
            RTReferencedSeriesSequence=[series])]  # fmt: skip
    ds.ReferencedFrameOfReferenceSequence = [frame]
    rois = [(1, "Liver", "ORGAN", liver_contours(slices)),
            (2, "Ring", "CONTROL", [_contour(square(middle, 60)), _contour(square(middle, 30))]),
            (3, "Marker", "MARKER", [_contour([(0.0, 0.0, middle)], kind="POINT")])]  # fmt: skip
    ds.StructureSetROISequence = [
        _item(ROINumber=n, ReferencedFrameOfReferenceUID=first.FrameOfReferenceUID, ROIName=name,
              ROIGenerationAlgorithm="MANUAL") for n, name, _, _ in rois]  # fmt: skip
    ds.ROIContourSequence = [_item(ReferencedROINumber=n, ROIDisplayColor=[255, 0, 0], ContourSequence=c)
                             for n, _, _, c in rois]  # fmt: skip
    ds.RTROIObservationsSequence = [_item(ObservationNumber=n, ReferencedROINumber=n, RTROIInterpretedType=kind,
                                          ROIInterpreter="") for n, _, kind, _ in rois]  # fmt: skip
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        RT_STRUCTURE_SET,
        ds.SOPInstanceUID,
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    target = folder / str(ds.SeriesInstanceUID)
    target.mkdir(parents=True)
    ds.save_as(target / "rtstruct.dcm", enforce_file_format=True)
    return target / "rtstruct.dcm"


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return build_abdomen_phantom(shape=(16, 64, 64), spacing_mm=(6.0, 6.0, 10.0))


@pytest.fixture(scope="module")
def converted(phantom: AbdomenPhantom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("input")
    ct = write_ct_series(phantom, root)
    write_rtstruct(ct, root)
    output = tmp_path_factory.mktemp("output")
    result = run_operator_main(MAIN, input_dir=root, output_dir=output)
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = output.glob("*/seg.dcm")
    seg = pydicom.dcmread(path)
    return {"ct": ct, "path": path, "seg": seg, "masks": read_segment_masks(seg, read_datasets(ct.series)),
            "log": result.stdout + result.stderr}  # fmt: skip


def test_every_roi_with_area_becomes_a_segment_on_the_referenced_series(
    converted: dict[str, Any],
) -> None:
    seg = converted["seg"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == converted["ct"].series_instance_uid
    assert [(m.number, m.label) for m in converted["masks"]] == [(1, "Liver"), (2, "Ring")]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Organ"
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    assert "POINT contour skipped" in converted["log"]


def test_the_liver_contours_fill_the_liver(
    converted: dict[str, Any], phantom: AbdomenPhantom
) -> None:
    liver = converted["masks"][0].mask
    truth = phantom.masks["liver"]
    dice = 2 * (liver & truth).sum() / (liver.sum() + truth.sum())
    assert dice > 0.9, dice


def test_an_inner_contour_is_a_hole(converted: dict[str, Any], phantom: AbdomenPhantom) -> None:
    ring = converted["masks"][1].mask
    (k,) = np.nonzero(ring.any(axis=(1, 2)))[0]
    assert k == phantom.hu.shape[0] // 2
    centre = phantom.hu.shape[1] // 2
    assert not ring[k, centre, centre]  # inside the inner square: the hole
    assert ring[k, centre, centre + 7]  # 7 voxels x 6 mm = 42 mm: between the squares
    assert not ring[k, centre, centre + 12]  # 72 mm: outside the outer square


def test_the_seg_passes_dciodvfy(converted: dict[str, Any]) -> None:
    assert dciodvfy_errors(converted["path"]) == []


def test_a_structure_set_without_reference_takes_the_only_series(
    phantom: AbdomenPhantom, tmp_path: Path
) -> None:
    ct = write_ct_series(phantom, tmp_path / "input")
    write_rtstruct(ct, tmp_path / "input", reference=False)
    result = run_operator_main(
        MAIN,
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "out",
        params={"roi_names": ["Ring"]},
    )
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "out").glob("*/seg.dcm")
    masks = read_segment_masks(pydicom.dcmread(path), read_datasets(ct.series))
    assert [m.label for m in masks] == ["Ring"]


def test_no_roi_with_area_is_refused(phantom: AbdomenPhantom, tmp_path: Path) -> None:
    ct = write_ct_series(phantom, tmp_path / "input")
    write_rtstruct(ct, tmp_path / "input")
    result = run_operator_main(
        MAIN,
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "out",
        params={"roi_names": ["Marker"]},
    )
    assert result.returncode == ExitCode.BAD_INPUT
    assert "no ROI has area" in result.stdout + result.stderr
