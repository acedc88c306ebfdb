"""nifti-to-seg, run as a subprocess as the runner starts it: phantom label maps → SEG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from jip_sdk import ExitCode, load_image, read_datasets, sort_slices
from jip_sdk.phantom import AbdomenPhantom, PhantomSeries, build_abdomen_phantom, write_ct_series
from jip_sdk.seg import read_segment_masks
from jip_sdk.testing import dciodvfy_errors, run_operator_main

MAIN = Path(__file__).resolve().parents[1] / "main.py"
NAMES = [{"value": 1, "label": "Liver"}, {"value": 3, "label": "Spleen",
         "type": {"value": "78961009", "scheme": "SCT", "meaning": "Spleen"}}]  # fmt: skip


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return build_abdomen_phantom(shape=(12, 64, 64), spacing_mm=(6.0, 6.0, 15.0))


def _label_map(phantom: AbdomenPhantom, ct: PhantomSeries) -> sitk.Image:
    """Liver as 1 and spleen as 3 on the CT's grid, with the CT's geometry."""
    values = np.zeros(phantom.hu.shape, dtype=np.uint8)
    values[phantom.masks["liver"]] = 1
    values[phantom.masks["spleen"]] = 3
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(load_image(sort_slices(read_datasets(ct.series))))
    return image


def _input(
    phantom: AbdomenPhantom, root: Path, label_map: sitk.Image | None = None
) -> PhantomSeries:
    ct = write_ct_series(phantom, root)
    sitk.WriteImage(label_map or _label_map(phantom, ct), str(root / "labels.nii.gz"))
    return ct


def _seg(output: Path) -> pydicom.Dataset:
    (path,) = output.glob("*/seg.dcm")
    return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def converted(phantom: AbdomenPhantom, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("input")
    ct = _input(phantom, root)
    output = tmp_path_factory.mktemp("output")
    result = run_operator_main(MAIN, input_dir=root, output_dir=output, params={"segments": NAMES})
    assert result.returncode == 0, result.stdout + result.stderr
    return {"ct": ct, "seg": _seg(output), "path": next(output.glob("*/seg.dcm"))}


def test_each_label_value_becomes_a_named_segment_on_the_series(
    converted: dict[str, Any], phantom: AbdomenPhantom
) -> None:
    seg, ct = converted["seg"], converted["ct"]
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.series_instance_uid
    assert seg.StudyInstanceUID == ct.study_instance_uid
    masks = read_segment_masks(seg, read_datasets(ct.series))
    assert [(m.number, m.label) for m in masks] == [(1, "Liver"), (2, "Spleen")]
    assert np.array_equal(masks[0].mask, phantom.masks["liver"])
    assert np.array_equal(masks[1].mask, phantom.masks["spleen"])
    spleen = seg.SegmentSequence[1]
    assert spleen.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Spleen"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"


def test_the_seg_passes_dciodvfy(converted: dict[str, Any]) -> None:
    assert dciodvfy_errors(converted["path"]) == []


def test_a_map_on_a_coarser_grid_lands_in_place(phantom: AbdomenPhantom, tmp_path: Path) -> None:
    ct = write_ct_series(phantom, tmp_path / "ref")
    fine = _label_map(phantom, ct)
    coarse = sitk.Resample(  # half the in-plane voxels, same patient space
        fine,
        [fine.GetSize()[0] // 2, fine.GetSize()[1] // 2, fine.GetSize()[2]],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        fine.GetOrigin(),
        [fine.GetSpacing()[0] * 2, fine.GetSpacing()[1] * 2, fine.GetSpacing()[2]],
        fine.GetDirection(),
    )
    target = _input(phantom, tmp_path / "input", coarse)
    result = run_operator_main(
        MAIN, input_dir=tmp_path / "input", output_dir=tmp_path / "out", params={"segments": NAMES}
    )
    assert result.returncode == 0, result.stderr
    liver, _spleen = read_segment_masks(_seg(tmp_path / "out"), read_datasets(target.series))
    truth = phantom.masks["liver"]
    dice = 2 * (liver.mask & truth).sum() / (liver.mask.sum() + truth.sum())
    assert dice > 0.85


@pytest.mark.parametrize(
    ("segments", "status", "said"),
    [
        ([{"value": 1, "label": "Liver"}], ExitCode.BAD_INPUT, "label values 3 have no name"),
        ([{"value": 0, "label": "Background"}], ExitCode.BAD_PARAMS, "segments/0/value"),
    ],
)
def test_unnamed_values_and_bad_segment_parameters_are_refused(
    phantom: AbdomenPhantom, tmp_path: Path, segments: list[Any], status: ExitCode, said: str
) -> None:
    _input(phantom, tmp_path / "input")
    result = run_operator_main(
        MAIN,
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "out",
        params={"segments": segments},
    )
    assert result.returncode == status
    assert said in result.stdout + result.stderr
    assert not list((tmp_path / "out").glob("*/seg.dcm"))
