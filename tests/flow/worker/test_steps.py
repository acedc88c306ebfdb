"""get-input, run-operator and put-output against a real site API (no Airflow)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from jip_sdk.phantom import build_abdomen_phantom
from tests.fakes.workflow_engine import FakeEngine, series_workflow
from tests.flow.conftest import free_port
from tests.flow.support import ingest_phantom
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.backends import storage_for
from jip.config import AuthSettings, FlowApiSettings, FlowSettings, Settings
from jip.errors import NotFound, Unavailable
from jip.flow import records
from jip.flow.worker import steps
from jip.flow.worker.api_client import JipClient
from jip.flow.worker.runner import OperatorFailed, OperatorJob, repository_operators_dir
from jip.flow.worker.runner_subprocess import SubprocessRunner
from jip.runtime import Runtime, build_runtime

RUN_ID = "manual__2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def local_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, JipClient]]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("site"),
        http_port=free_port(),
        auth=AuthSettings(enabled=False),
    )
    runtime = build_runtime(settings)
    app = build_app(runtime)
    app.state.runtime.workflow_engine = FakeEngine(
        series_workflow("organ-seg-radiomics", "organ-seg")
    )
    with serve_in_thread(app, port=settings.http_port) as url, JipClient(url) as client:
        yield runtime, client
    runtime.close()


@pytest.fixture(scope="module")
def ct(local_site: tuple[Runtime, JipClient], tmp_path_factory: pytest.TempPathFactory) -> Any:
    runtime, _ = local_site
    return ingest_phantom(runtime, build_abdomen_phantom(), tmp_path_factory.mktemp("ct"))


def test_get_input_writes_the_series_byte_for_byte(
    local_site: tuple[Runtime, JipClient], ct: Any, tmp_path: Path
) -> None:
    _, client = local_site
    dirs = steps.step_dirs(tmp_path, RUN_ID, ct.series_instance_uid, "get-input")
    assert ":" not in str(dirs.root) and "+" not in str(dirs.root)
    steps.get_input(client, [ct.series_instance_uid], dirs.input_dir)
    fetched = sorted((dirs.input_dir / ct.series_instance_uid).glob("*.dcm"))
    originals = sorted(ct.series.path.glob("*.dcm"))
    assert len(fetched) == len(originals) == 40
    by_uid = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in originals}
    for path in fetched:
        assert by_uid[path.stem] == path.read_bytes()
    assert not list(dirs.input_dir.rglob(".wado-*"))


def test_get_input_of_an_unknown_series_is_not_found(
    local_site: tuple[Runtime, JipClient], tmp_path: Path
) -> None:
    _, client = local_site
    with pytest.raises(NotFound, match=r"series 1\.2\.3\.999"):
        steps.get_input(client, ["1.2.3.999"], tmp_path / "in")


def test_organ_seg_output_goes_to_store_and_result_store(
    local_site: tuple[Runtime, JipClient], ct: Any, tmp_path: Path
) -> None:
    runtime, client = local_site
    dirs = steps.step_dirs(tmp_path, RUN_ID, ct.series_instance_uid, "organ-seg")
    steps.get_input(client, [ct.series_instance_uid], dirs.input_dir)
    runner = SubprocessRunner(operators_dir=repository_operators_dir())
    job = OperatorJob(
        operator="organ-seg", input_dir=dirs.input_dir, output_dir=dirs.output_dir,
        params={"structures": ["liver"]},
    )  # fmt: skip
    steps.run_operator(runner, job, lambda _: None)
    results = storage_for(runtime.settings.resolved_results_url, runtime.settings)
    stored = steps.put_output(
        client=client, results=results, run_id=RUN_ID, series_uid=ct.series_instance_uid,
        operator="organ-seg", output_dir=dirs.output_dir,
    )  # fmt: skip
    dicom = [r for r in stored if r["kind"] == "dicom"]
    files = [r for r in stored if r["kind"] == "file"]
    assert len(dicom) == 1 and dicom[0]["modality"] == "SEG"
    seg_uid = dicom[0]["result_series_uid"]
    (seg,) = runtime.catalog.instances_of_series(seg_uid)
    assert seg.study_instance_uid == ct.study_instance_uid
    assert [f["key"] for f in files] == [
        f"runs/manual__2026-01-01T00_00_00_00_00/{ct.series_instance_uid}/segments.json"
    ]
    summary = json.loads(results.read_bytes(files[0]["key"]))
    assert summary["seg_series_instance_uid"] == seg_uid
    recorded = records.list_results(runtime.engine, RUN_ID)
    assert {r.kind.value for r in recorded} == {"dicom", "file"}
    assert records.runs_producing(runtime.engine, [seg_uid]) == {seg_uid: {RUN_ID}}
    # A retried put-output delivers the same output again without duplicates.
    again = steps.put_output(
        client=client, results=results, run_id=RUN_ID, series_uid=ct.series_instance_uid,
        operator="organ-seg", output_dir=dirs.output_dir,
    )  # fmt: skip
    assert [r["id"] for r in again] == [r["id"] for r in stored]


def test_failing_operator_raises_with_its_exit_meaning(
    local_site: tuple[Runtime, JipClient], tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    runner = SubprocessRunner(operators_dir=repository_operators_dir())
    job = OperatorJob(operator="organ-seg", input_dir=tmp_path / "in", output_dir=tmp_path / "o")
    lines: list[str] = []
    with pytest.raises(OperatorFailed, match="status 3: the input cannot be processed"):
        steps.run_operator(runner, job, lines.append)
    assert any("no series folders" in line for line in lines)


def test_export_local_copies_the_series(
    local_site: tuple[Runtime, JipClient], ct: Any, tmp_path: Path
) -> None:
    runtime, _ = local_site
    folder = steps.export_local(runtime.catalog, runtime.storage, ct.series_instance_uid, tmp_path)
    assert len(list(folder.glob("*.dcm"))) == 40


def test_result_keys_are_safe_storage_keys() -> None:
    assert steps.result_key("manual__a:b+c", "1.2/x y.csv") == "runs/manual__a_b_c/1.2/x_y.csv"


def test_stage_push_delivers_files_through_the_flow_api(
    local_site: tuple[Runtime, JipClient], ct: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator pod's stage-output container: no result-store credentials (the result
    store named here does not exist), every file through PUT /api/flow/.../files."""
    from jip.flow.worker import stage

    runtime, client = local_site
    run_id = "manual__2026-02-02T00:00:00+00:00"
    output = tmp_path / "output"
    (output / "1.2.3.4").mkdir(parents=True)
    (output / "radiomics.csv").write_text("feature,value\nvolume,12\n")
    (output / "1.2.3.4" / "labels.json").write_text("{}")
    (output / ".cache").write_text("not a result")
    monkeypatch.setenv("JIP_RESULTS_URL", "s3://no-such-bucket/results")
    monkeypatch.setenv("JIP_API_URL", "http://127.0.0.1:9")  # nothing listens: not used
    monkeypatch.setenv("JIP_FLOW__API__STORE_URL", client.base_url)
    monkeypatch.setenv("JIP_FLOW__API__FLOW_URL", client.base_url)
    argv = ["push", "--source", str(output), "--run-id", run_id,
            "--series", ct.series_instance_uid, "--operator", "radiomics"]  # fmt: skip
    assert stage.main(argv) == 0
    results = storage_for(runtime.settings.resolved_results_url, runtime.settings)
    recorded = {r.name: r for r in records.list_results(runtime.engine, run_id)}
    assert set(recorded) == {f"{ct.series_instance_uid}/radiomics.csv", "1.2.3.4/labels.json"}
    csv_record = recorded[f"{ct.series_instance_uid}/radiomics.csv"]
    assert csv_record.series_instance_uid == ct.series_instance_uid
    assert csv_record.operator == "radiomics" and csv_record.size_bytes == 24
    assert results.read_bytes(csv_record.key) == b"feature,value\nvolume,12\n"
    # A retried stage container delivers the same files again, replacing them.
    (output / "radiomics.csv").write_text("feature,value\nvolume,13\n")
    assert stage.main(argv) == 0
    again = {r.name: r for r in records.list_results(runtime.engine, run_id)}
    assert {name: r.id for name, r in again.items()} == {n: r.id for n, r in recorded.items()}
    assert results.read_bytes(csv_record.key) == b"feature,value\nvolume,13\n"


def test_the_flow_api_may_live_at_its_own_address(local_site: tuple[Runtime, JipClient]) -> None:
    _, client = local_site
    split = JipClient("http://127.0.0.1:9", flow_url=client.base_url)  # no store there
    with split:
        # The flow API answers (the run is unknown to it), the store's address does not.
        with pytest.raises(NotFound, match="JIP answered 404"):
            split.results("no-such-run")
        with pytest.raises(Unavailable, match=r"127\.0\.0\.1:9"):
            split.study_of("1.2.3")
    flow = FlowSettings(api=FlowApiSettings(flow_url="http://f:8000"))
    settings = Settings(api_url="https://jip.local/", flow=flow)
    with JipClient.from_settings(settings) as configured:
        assert (configured.base_url, configured.flow_url) == ("https://jip.local", "http://f:8000")
