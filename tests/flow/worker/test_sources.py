"""find-source's reading of SEG and RTSTRUCT references, and the DAGs built on it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from jip_sdk.phantom import build_abdomen_phantom, write_ct_series, write_truth_seg
from pydicom.dataset import Dataset

from jip.flow.airflow_home import repository_dags_folder
from jip.flow.worker.sources import (
    NoSource,
    read_objects,
    referenced_instances,
    referenced_series,
    source_series,
)


@pytest.fixture(scope="module")
def seg_and_ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, list[str], str]:
    """A truth SEG (pixels left out), its CT's SOP instance UIDs and series UID."""
    root = tmp_path_factory.mktemp("seg")
    phantom = build_abdomen_phantom(shape=(8, 64, 64), spacing_mm=(6.0, 6.0, 20.0))
    ct = write_ct_series(phantom, root)
    seg_path = write_truth_seg(phantom, ct.series, root, organs=("liver",))
    sops = [
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in ct.series.files()
    ]
    return pydicom.dcmread(seg_path, stop_before_pixels=True), sops, ct.series_instance_uid


def _never(study: str, sops: Sequence[str]) -> list[str]:
    raise AssertionError(f"no lookup expected ({study}, {len(sops)} instances)")


def test_a_seg_names_its_series_and_its_frames_name_their_slices(
    seg_and_ct: tuple[Dataset, list[str], str],
) -> None:
    seg, sops, ct_uid = seg_and_ct
    assert referenced_series(seg) == [ct_uid]
    assert referenced_instances(seg) and set(referenced_instances(seg)) <= set(sops)
    assert source_series([seg], _never, None) == [ct_uid]
    assert source_series([seg], _never, "1.2.3") == ["1.2.3"]


def test_without_a_named_series_the_store_is_asked_about_the_frames(
    seg_and_ct: tuple[Dataset, list[str], str],
) -> None:
    seg, sops, ct_uid = seg_and_ct
    bare = pydicom.Dataset(seg)
    del bare.ReferencedSeriesSequence
    asked: list[tuple[str, Sequence[str]]] = []

    def lookup(study: str, instances: Sequence[str]) -> list[str]:
        asked.append((study, instances))
        return [ct_uid]

    assert source_series([bare], lookup, None) == [ct_uid]
    assert asked[0][0] == seg.StudyInstanceUID and set(asked[0][1]) <= set(sops)
    with pytest.raises(NoSource, match="set the operator's source_series_uid parameter"):
        source_series([bare], lambda study, instances: [], None)


def test_an_rtstruct_names_its_series_through_its_frame_of_reference() -> None:
    image = Dataset()
    image.ReferencedSOPInstanceUID = "1.2.3.4.5"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4"
    study = Dataset()
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.RTReferencedStudySequence = [study]
    contour = Dataset()
    contour.ContourImageSequence = [image]
    roi = Dataset()
    roi.ContourSequence = [contour]
    rtstruct = Dataset()
    rtstruct.ReferencedFrameOfReferenceSequence = [frame]
    rtstruct.ROIContourSequence = [roi]
    assert referenced_series(rtstruct) == ["1.2.3.4"]
    assert referenced_instances(rtstruct) == ["1.2.3.4.5"]


def test_a_series_of_another_kind_is_refused_by_name(tmp_path: Path) -> None:
    phantom = build_abdomen_phantom(shape=(4, 64, 64), spacing_mm=(6.0, 6.0, 20.0))
    ct = write_ct_series(phantom, tmp_path)
    with pytest.raises(NoSource, match=r"has Modality CT; this workflow takes SEG or RTSTRUCT"):
        read_objects(ct.series.path, ["SEG", "RTSTRUCT"])
    empty = tmp_path / "1.2.9"
    empty.mkdir()
    with pytest.raises(NoSource, match="no instances"):
        read_objects(empty, ["SEG"])


@pytest.mark.parametrize(
    ("dag_file", "dag_id", "steps"),
    [
        ("seg_radiomics.py", "seg-radiomics", ["find-source", "radiomics"]),
        ("seg_to_nifti.py", "seg-to-nifti", ["find-source", "seg-to-nifti"]),
        ("rtstruct_to_seg.py", "rtstruct-to-seg", ["find-source", "rtstruct-to-seg"]),
    ],
)  # fmt: skip
def test_the_workflows_on_derived_objects_chain_find_source_before_staging(
    dag_file: str, dag_id: str, steps: list[str]
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(repository_dags_folder() / dag_file))
    assert not bag.import_errors
    dag = bag.dags[dag_id]
    chain = [f"series.{step}" for step in steps]
    assert set(chain) <= set(dag.task_dict)
    for before, after in itertools.pairwise(chain):
        assert before in dag.task_dict[after].upstream_task_ids, (before, after)
    operator = steps[-1]
    assert dag.params[operator] == {} and "series" in dag.params
    # The operator step (one task) stages the object and the source find-source returned.
    step = dag.task_dict[f"series.{operator}"]
    also = step.op_kwargs["also"]  # type: ignore[attr-defined]
    assert also.operator.task_id == "series.find-source"
