"""deidentify, run as a subprocess as the runner starts it, on the phantom CT and a SEG."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest
from jip_sdk import ExitCode
from jip_sdk.phantom import build_abdomen_phantom, write_ct_series, write_truth_seg
from jip_sdk.testing import dciodvfy_errors, run_operator_main
from pydicom.dataset import Dataset

MAIN = Path(__file__).resolve().parents[1] / "main.py"
SALT = "test-salt-0123456789abcdef"
BOTH_OPTIONS = {
    "salt": SALT,
    "options": [
        "retain_longitudinal_temporal_information_modified_dates",
        "retain_patient_characteristics",
    ],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    input_dir = tmp_path_factory.mktemp("input")
    phantom = build_abdomen_phantom(shape=(8, 64, 64), spacing_mm=(6.0, 6.0, 25.0))
    ct = write_ct_series(phantom, input_dir, patient_id="PAT-4711", patient_name="Doe^Jane")
    seg_path = write_truth_seg(phantom, ct.series, input_dir, organs=("liver",))
    originals = {
        str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, input_dir.rglob("*.dcm"))
    }
    return {"dir": input_dir, "ct": ct, "seg": pydicom.dcmread(seg_path), "originals": originals}


def _run(inputs: dict[str, Any], output: Path, params: dict[str, Any]) -> dict[str, Any]:
    result = run_operator_main(MAIN, input_dir=inputs["dir"], output_dir=output, params=params)
    assert result.returncode == 0, result.stdout + result.stderr
    files = sorted(output.rglob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    return {
        "result": result,
        "files": files,
        "ct": [d for d in datasets if d.Modality == "CT"],
        "seg": next(d for d in datasets if d.Modality == "SEG"),
    }


@pytest.fixture(scope="module")
def with_options(
    inputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return _run(inputs, tmp_path_factory.mktemp("out_options"), BOTH_OPTIONS)


@pytest.fixture(scope="module")
def basic(inputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(inputs, tmp_path_factory.mktemp("out_basic"), {"salt": SALT})


def _all_elements(ds: Dataset) -> list[Any]:
    found: list[Any] = []
    ds.walk(lambda _ds, element: found.append(element))
    return found


def test_identifying_attributes_are_removed_or_replaced(basic: dict[str, Any]) -> None:
    for ds in [*basic["ct"], basic["seg"]]:
        assert "Doe" not in str(ds.PatientName) and ds.PatientID != "PAT-4711"
        assert str(ds.PatientID).startswith("JIP-")
        for keyword in (
            "OtherPatientIDsSequence",
            "InstitutionName",
            "StudyDescription",
            "SeriesDescription",
            "StationName",
            "PatientAge",
            "PatientWeight",
        ):
            assert keyword not in ds, keyword
        for keyword in (
            "AccessionNumber",
            "PatientBirthDate",
            "ReferringPhysicianName",
            "StudyDate",
            "StudyID",
            "PatientSex",
        ):
            assert not ds.get(keyword), keyword
    text = "".join(str(e.value) for e in _all_elements(basic["ct"][0]) if e.VR != "OW")
    for secret in ("PAT-4711", "Doe", "Referrer", "ACC-0001", "JFK IMAGING", "ABCD1234"):
        assert secret not in text


def test_pseudonym_is_the_same_for_every_instance_of_a_patient(basic: dict[str, Any]) -> None:
    datasets = [*basic["ct"], basic["seg"]]
    assert len({d.PatientID for d in datasets}) == 1
    assert len({str(d.PatientName) for d in datasets}) == 1


def test_private_tags_are_removed(basic: dict[str, Any], inputs: dict[str, Any]) -> None:
    original_ct = next(d for d in inputs["originals"].values() if d.Modality == "CT")
    assert any(e.tag.is_private for e in _all_elements(original_ct))
    for ds in basic["ct"]:
        assert not any(e.tag.is_private for e in _all_elements(ds))


def test_uids_are_new_and_references_stay_consistent(
    basic: dict[str, Any], inputs: dict[str, Any]
) -> None:
    ct, seg = basic["ct"], basic["seg"]
    originals = inputs["originals"]
    new_sop_uids = {str(d.SOPInstanceUID) for d in ct}
    assert len(new_sop_uids) == len(ct) and not new_sop_uids & set(originals)
    assert len({d.SeriesInstanceUID for d in ct}) == 1
    assert ct[0].SeriesInstanceUID != inputs["ct"].series_instance_uid
    assert {d.StudyInstanceUID for d in [*ct, seg]} == {ct[0].StudyInstanceUID}
    assert ct[0].StudyInstanceUID != inputs["ct"].study_instance_uid
    assert (
        seg.FrameOfReferenceUID == ct[0].FrameOfReferenceUID != inputs["ct"].frame_of_reference_uid
    )
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct[0].SeriesInstanceUID
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced <= new_sop_uids
    assert ct[0].SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # class UIDs are kept
    for ds in [*ct, seg]:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_output_folders_are_named_after_the_new_series(basic: dict[str, Any]) -> None:
    for path in basic["files"]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert path.parent.name == ds.SeriesInstanceUID


def test_same_salt_maps_uids_identically_across_runs(
    inputs: dict[str, Any], basic: dict[str, Any], tmp_path: Path
) -> None:
    again = _run(inputs, tmp_path, {"salt": SALT})
    assert [d.SOPInstanceUID for d in again["ct"]] == [d.SOPInstanceUID for d in basic["ct"]]
    assert again["ct"][0].PatientID == basic["ct"][0].PatientID


def test_pixel_data_is_copied_untouched(basic: dict[str, Any], inputs: dict[str, Any]) -> None:
    source_by_number = {
        int(d.InstanceNumber): d for d in inputs["originals"].values() if d.Modality == "CT"
    }
    for ds in basic["ct"]:
        assert ds.PixelData == source_by_number[int(ds.InstanceNumber)].PixelData


def test_modified_dates_are_shifted_by_one_offset_per_patient(
    with_options: dict[str, Any], inputs: dict[str, Any]
) -> None:
    originals = inputs["originals"].values()
    ct_by_number = {int(d.InstanceNumber): d for d in originals if d.Modality == "CT"}
    pairs = [(ds, ct_by_number[int(ds.InstanceNumber)]) for ds in with_options["ct"]]
    pairs.append((with_options["seg"], inputs["seg"]))
    offsets = set()
    for ds, original in pairs:
        for keyword in ("StudyDate", "SeriesDate", "ContentDate", "InstanceCreationDate"):
            if keyword in original:
                moved = dt.datetime.strptime(ds[keyword].value, "%Y%m%d")
                offsets.add((moved - dt.datetime.strptime(original[keyword].value, "%Y%m%d")).days)
        assert ds.StudyTime == original.StudyTime
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert not ds.PatientBirthDate
    assert len(offsets) == 1
    assert -3650 <= offsets.pop() <= -1


def test_without_temporal_option_dates_are_removed(basic: dict[str, Any]) -> None:
    ds = basic["ct"][0]
    assert not ds.StudyDate and not ds.ContentDate
    assert "SeriesDate" not in ds and "AcquisitionDate" not in ds
    assert "LongitudinalTemporalInformationModified" not in ds


def test_patient_characteristics_are_kept_only_with_the_option(
    with_options: dict[str, Any], basic: dict[str, Any]
) -> None:
    kept = with_options["ct"][0]
    assert (kept.PatientSex, kept.PatientAge, kept.PatientSize, kept.PatientWeight) == (
        "F",
        "054Y",
        1.68,
        68,
    )
    assert "PatientAge" not in basic["ct"][0]


@pytest.mark.parametrize(
    ("run_name", "expected_codes"),
    [("basic", {"113100"}), ("with_options", {"113100", "113107", "113108"})],
)
def test_deidentification_is_declared_with_cid_7050_codes(
    request: pytest.FixtureRequest, run_name: str, expected_codes: set[str]
) -> None:
    run = request.getfixturevalue(run_name)
    for ds in [*run["ct"], run["seg"]]:
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod
        assert {i.CodeValue for i in ds.DeidentificationMethodCodeSequence} == expected_codes
        assert {i.CodingSchemeDesignator for i in ds.DeidentificationMethodCodeSequence} == {"DCM"}


@pytest.mark.parametrize("run_name", ["basic", "with_options"])
def test_deidentified_objects_pass_dciodvfy(request: pytest.FixtureRequest, run_name: str) -> None:
    run = request.getfixturevalue(run_name)
    seg_file = next(f for f in run["files"] if pydicom.dcmread(f).Modality == "SEG")
    ct_file = next(f for f in run["files"] if f != seg_file)
    assert dciodvfy_errors(ct_file) == []
    assert dciodvfy_errors(seg_file) == []


def test_salt_and_patient_identity_never_reach_the_log(with_options: dict[str, Any]) -> None:
    log = with_options["result"].stdout + with_options["result"].stderr
    assert SALT not in log and "PAT-4711" not in log and "Doe" not in log


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"options": ["retain_uids"]}, "options/0"),
        ({"uid_prefix": "1.2.3"}, "uid_prefix"),
    ],
)
def test_bad_params_fail_with_a_clear_message(
    inputs: dict[str, Any], tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    result = run_operator_main(MAIN, input_dir=inputs["dir"], output_dir=tmp_path, params=params)
    assert result.returncode == ExitCode.BAD_PARAMS
    assert message in result.stdout


def test_invalid_salt_is_rejected_without_echoing_it(
    inputs: dict[str, Any], tmp_path: Path
) -> None:
    result = run_operator_main(
        MAIN, input_dir=inputs["dir"], output_dir=tmp_path, params={"salt": "tooShortSecret"}
    )
    assert result.returncode == ExitCode.BAD_PARAMS
    assert "salt" in result.stdout and "minLength" in result.stdout
    assert "tooShortSecret" not in result.stdout


def test_burned_in_annotation_is_refused_unless_allowed(
    inputs: dict[str, Any], tmp_path: Path
) -> None:
    series_dir = tmp_path / "input" / "1.2.3"
    series_dir.mkdir(parents=True)
    first = next(iter(sorted(inputs["ct"].series.path.glob("*.dcm"))))
    ds = pydicom.dcmread(first)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(series_dir / "1.dcm")
    refused = run_operator_main(MAIN, input_dir=tmp_path / "input", output_dir=tmp_path / "a")
    assert refused.returncode == ExitCode.BAD_INPUT
    assert "BurnedInAnnotation" in refused.stdout
    allowed = run_operator_main(
        MAIN,
        input_dir=tmp_path / "input",
        output_dir=tmp_path / "b",
        params={"allow_burned_in_annotation": True},
    )
    assert allowed.returncode == 0, allowed.stdout
    shutil.rmtree(tmp_path / "input")
