"""organ-seg, run as a subprocess exactly as the runner starts it, on the JIP phantom."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from jip_sdk import ExitCode, parse_progress, read_datasets
from jip_sdk.phantom import (
    AbdomenPhantom,
    PhantomSeries,
    build_abdomen_phantom,
    write_ct_series,
)
from jip_sdk.seg import read_segment_masks
from jip_sdk.testing import dciodvfy_errors, run_operator_main
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes

MAIN = Path(__file__).resolve().parents[1] / "main.py"
VOLUME_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return build_abdomen_phantom()


@pytest.fixture(scope="module")
def ct_input(phantom: AbdomenPhantom, tmp_path_factory: pytest.TempPathFactory) -> PhantomSeries:
    return write_ct_series(phantom, tmp_path_factory.mktemp("input"))


@pytest.fixture(scope="module")
def run(ct_input: PhantomSeries, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("output")
    result = run_operator_main(MAIN, input_dir=ct_input.series.path.parent, output_dir=output)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = output / ct_input.series_instance_uid
    return {
        "result": result,
        "folder": folder,
        "summary": json.loads((folder / "segments.json").read_text()),
        "seg": pydicom.dcmread(folder / "seg.dcm"),
    }


def _segment(run: dict[str, Any], structure: str) -> dict[str, Any]:
    return next(s for s in run["summary"]["segments"] if s["structure"] == structure)


@pytest.mark.parametrize("structure", ["body", "liver", "spleen", "right_kidney", "left_kidney"])
def test_segment_volume_matches_phantom(
    run: dict[str, Any], phantom: AbdomenPhantom, structure: str
) -> None:
    found = _segment(run, structure)["volume_ml"]
    expected = phantom.volume_ml(structure)
    assert found == pytest.approx(expected, rel=VOLUME_TOLERANCE)


def test_seg_masks_overlap_the_right_organs(
    run: dict[str, Any], ct_input: PhantomSeries, phantom: AbdomenPhantom
) -> None:
    # Dice against the truth per label: a left/right swap would score zero.
    masks = read_segment_masks(run["seg"], read_datasets(ct_input.series))
    truth = {
        "Body": "body",
        "Liver": "liver",
        "Spleen": "spleen",
        "Right kidney": "right_kidney",
        "Left kidney": "left_kidney",
    }
    assert [m.label for m in masks] == list(truth)
    for m in masks:
        expected = phantom.masks[truth[m.label]]
        dice = 2 * (m.mask & expected).sum() / (m.mask.sum() + expected.sum())
        assert dice > 0.9, (m.label, dice)


def test_seg_passes_dciodvfy(run: dict[str, Any]) -> None:
    assert dciodvfy_errors(run["folder"] / "seg.dcm") == []


def test_seg_references_its_source_series(run: dict[str, Any], ct_input: PhantomSeries) -> None:
    seg = run["seg"]
    assert seg.Modality == "SEG"
    assert seg.StudyInstanceUID == ct_input.study_instance_uid
    assert seg.FrameOfReferenceUID == ct_input.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_input.series_instance_uid
    assert seg.SeriesInstanceUID == run["summary"]["seg_series_instance_uid"]
    assert seg.SegmentationType == "BINARY"


def test_segments_carry_snomed_codes_and_kidney_laterality(run: dict[str, Any]) -> None:
    seg = hd.seg.Segmentation.from_dataset(run["seg"])
    by_label = {
        seg.get_segment_description(n).segment_label: seg.get_segment_description(n)
        for n in seg.segment_numbers
    }
    assert by_label["Liver"].segmented_property_type == codes.SCT.Liver
    assert by_label["Spleen"].segmented_property_type == codes.SCT.Spleen
    assert by_label["Body"].segmented_property_type == codes.SCT.EntireBody
    for label, laterality in (("Right kidney", "24028007"), ("Left kidney", "7771000")):
        item = by_label[label].SegmentedPropertyTypeCodeSequence[0]
        assert item.CodeValue == "64033007"
        assert item.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == laterality


def test_progress_is_reported_as_json_lines(run: dict[str, Any], ct_input: PhantomSeries) -> None:
    reports = [p for p in map(parse_progress, run["result"].stdout.splitlines()) if p]
    assert reports, run["result"].stdout
    assert reports[-1].fraction == 1.0
    assert {p.series for p in reports} == {ct_input.series_instance_uid}


def test_only_requested_structures_are_written(ct_input: PhantomSeries, tmp_path: Path) -> None:
    result = run_operator_main(
        MAIN,
        input_dir=ct_input.series.path.parent,
        output_dir=tmp_path,
        params={"structures": ["kidneys"]},
    )
    assert result.returncode == 0, result.stdout
    summary = json.loads((tmp_path / ct_input.series_instance_uid / "segments.json").read_text())
    assert [s["structure"] for s in summary["segments"]] == ["right_kidney", "left_kidney"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"structures": ["heart"]}, "structures/0"),
        ({"median_radius": -1}, "median_radius"),
        ({"unknown_option": 1}, "unknown_option"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_params_fail_before_work_with_a_clear_message(
    ct_input: PhantomSeries, tmp_path: Path, params: Any, message: str
) -> None:
    result = run_operator_main(
        MAIN, input_dir=ct_input.series.path.parent, output_dir=tmp_path, params=params
    )
    assert result.returncode == ExitCode.BAD_PARAMS
    assert message in result.stdout
    assert not any(tmp_path.iterdir())


def test_non_ct_series_is_rejected_naming_the_modality(tmp_path: Path) -> None:
    series = tmp_path / "input" / "1.2.3.4"
    series.mkdir(parents=True)
    shutil.copy(get_testdata_file("MR_small.dcm"), series / "1.dcm")
    result = run_operator_main(MAIN, input_dir=tmp_path / "input", output_dir=tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "Modality MR" in result.stdout and "needs CT" in result.stdout


def test_missing_input_directory_is_a_contract_error(tmp_path: Path) -> None:
    result = run_operator_main(MAIN, input_dir=tmp_path / "absent", output_dir=tmp_path / "out")
    assert result.returncode == ExitCode.BAD_PARAMS
    assert "JIP_INPUT_DIR" in result.stdout
