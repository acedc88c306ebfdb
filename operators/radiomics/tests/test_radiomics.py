"""radiomics, run as a subprocess as the runner starts it, on the phantom and its truth SEG."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
from jip_sdk import ExitCode, parse_progress
from jip_sdk.phantom import ORGANS, AbdomenPhantom, PhantomSeries
from jip_sdk.testing import run_operator_main

MAIN = Path(__file__).resolve().parents[1] / "main.py"
ID_COLUMNS = ["series_instance_uid", "seg_series_instance_uid", "segment_number", "segment_label"]
LABEL_TO_ORGAN = {
    "Liver": "liver",
    "Spleen": "spleen",
    "Right kidney": "right_kidney",
    "Left kidney": "left_kidney",
}


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def default_run(inputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("output")
    result = run_operator_main(MAIN, input_dir=inputs["dir"], output_dir=output)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"result": result, "rows": _rows(output / inputs["seg_dir"].name / "radiomics.csv")}


def test_one_row_per_segment_with_ids_first(
    default_run: dict[str, Any], inputs: dict[str, Any]
) -> None:
    rows = default_run["rows"]
    ct: PhantomSeries = inputs["ct"]
    assert [r["segment_label"] for r in rows] == list(LABEL_TO_ORGAN)
    assert [r["segment_number"] for r in rows] == ["1", "2", "3", "4"]
    assert {r["series_instance_uid"] for r in rows} == {ct.series_instance_uid}
    assert {r["seg_series_instance_uid"] for r in rows} == {inputs["seg_dir"].name}
    assert list(rows[0])[:4] == [
        "series_instance_uid",
        "seg_series_instance_uid",
        "segment_number",
        "segment_label",
    ]


def test_default_is_firstorder_shape_and_glcm_on_the_original_image(
    default_run: dict[str, Any],
) -> None:
    features = [name for name in default_run["rows"][0] if name not in ID_COLUMNS]
    assert {name.split("_")[0] for name in features} == {"original"}
    assert {name.split("_")[1] for name in features} == {"firstorder", "shape", "glcm"}
    assert not any(name.startswith("diagnostics_") for name in default_run["rows"][0])


def test_shape_volume_equals_phantom_volume(
    default_run: dict[str, Any], phantom: AbdomenPhantom
) -> None:
    for row in default_run["rows"]:
        expected_mm3 = phantom.volume_ml(LABEL_TO_ORGAN[row["segment_label"]]) * 1000
        assert float(row["original_shape_VoxelVolume"]) == pytest.approx(expected_mm3, rel=1e-6)


def test_mean_intensity_matches_organ_hu(default_run: dict[str, Any]) -> None:
    organ_hu = {organ.name: organ.hu for organ in ORGANS}
    for row in default_run["rows"]:
        expected = organ_hu[LABEL_TO_ORGAN[row["segment_label"]]]
        assert float(row["original_firstorder_Mean"]) == pytest.approx(expected, abs=3)


def test_progress_reaches_one(default_run: dict[str, Any]) -> None:
    reports = [p for p in map(parse_progress, default_run["result"].stdout.splitlines()) if p]
    assert reports[-1].fraction == 1.0


def test_feature_classes_and_segments_follow_params(inputs: dict[str, Any], tmp_path: Path) -> None:
    result = run_operator_main(
        MAIN,
        input_dir=inputs["dir"],
        output_dir=tmp_path,
        params={"feature_classes": ["glcm"], "segment_labels": ["Spleen"]},
    )
    assert result.returncode == 0, result.stdout
    rows = _rows(tmp_path / inputs["seg_dir"].name / "radiomics.csv")
    assert [r["segment_label"] for r in rows] == ["Spleen"]
    assert {n.split("_")[1] for n in rows[0] if n.startswith("original_")} == {"glcm"}


def test_unknown_feature_class_is_rejected(inputs: dict[str, Any], tmp_path: Path) -> None:
    result = run_operator_main(
        MAIN,
        input_dir=inputs["dir"],
        output_dir=tmp_path,
        params={"feature_classes": ["wavelet"]},
    )
    assert result.returncode == ExitCode.BAD_PARAMS
    assert "feature_classes/0" in result.stdout
    assert "'glcm'" in result.stdout  # the message lists what may be asked for
    assert not list(tmp_path.iterdir())


def test_unknown_image_type_is_rejected(inputs: dict[str, Any], tmp_path: Path) -> None:
    result = run_operator_main(
        MAIN,
        input_dir=inputs["dir"],
        output_dir=tmp_path,
        params={"image_types": ["original", "glcm"]},
    )
    assert result.returncode == ExitCode.BAD_PARAMS
    assert "image_types/1" in result.stdout
    assert "'wavelet'" in result.stdout


def test_filtered_image_types_add_their_columns_only(
    inputs: dict[str, Any], tmp_path: Path
) -> None:
    result = run_operator_main(
        MAIN,
        input_dir=inputs["dir"],
        output_dir=tmp_path,
        params={
            "feature_classes": ["firstorder"],
            "image_types": ["log", "square"],
            "log_sigma_mm": [2],
            "segment_labels": ["Left kidney"],
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr

    rows = _rows(tmp_path / inputs["seg_dir"].name / "radiomics.csv")
    features = [name for name in rows[0] if name not in ID_COLUMNS]
    assert {name.split("_")[0] for name in features} == {"log-sigma-2-0-mm-3D", "square"}
    assert {name.split("_")[1] for name in features} == {"firstorder"}


def test_input_without_seg_fails_with_a_clear_message(
    inputs: dict[str, Any], tmp_path: Path
) -> None:
    only_ct = tmp_path / "input"
    shutil.copytree(inputs["ct"].series.path, only_ct / inputs["ct"].series_instance_uid)
    result = run_operator_main(MAIN, input_dir=only_ct, output_dir=tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "no SEG series" in result.stdout


def test_seg_whose_source_is_missing_names_the_series(
    inputs: dict[str, Any], tmp_path: Path
) -> None:
    only_seg = tmp_path / "input"
    shutil.copytree(inputs["seg_dir"], only_seg / inputs["seg_dir"].name)
    result = run_operator_main(MAIN, input_dir=only_seg, output_dir=tmp_path / "out")
    assert result.returncode == ExitCode.BAD_INPUT
    assert inputs["ct"].series_instance_uid in result.stdout
