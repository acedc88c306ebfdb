"""The operator-pod factory: the KubernetesPodOperator's own pod request, checked against
the Kubernetes API schema (strict) and for the settings untrusted operators must run
under. Nothing here needs a cluster: KPO builds the request in a dry run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client import ApiClient

pytest.importorskip("airflow.providers.cncf.kubernetes", reason="the workflow extra's provider")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from jip.config import FlowSettings, GpuSettings, Settings  # noqa: E402
from jip.errors import Invalid  # noqa: E402
from jip.flow.worker.pod_operator import (  # noqa: E402
    OperatorManifest,
    load_lock,
    operator_pod,
)
from jip.flow.worker.runner_kubernetes import PodSettings  # noqa: E402

SERIES = "1.2.826.0.1.3680043.8.498.1234567890"
SEG = "1.2.826.0.1.3680043.8.498.99"
KUBERNETES_VERSIONS = ("1.30", "1.33")
GPU_POOL = GpuSettings(
    node_selector={"jip.io/pool": "gpu"},
    tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ],
)


def pod_settings(**flow: Any) -> PodSettings:
    flow.setdefault("gpu", GPU_POOL)
    settings = Settings(
        flow=FlowSettings(
            runner="kubernetes",
            kubernetes_namespace="jip-ops",
            kubernetes_stage_image="reg.local/jip/jip:0.1.0",
            image_registry="reg.local/",
            **flow,
        ),
        api_url="http://jip-flow:8000",
    )
    return PodSettings.from_settings(settings)


def pod_of(manifest: OperatorManifest, **flow: Any) -> dict[str, Any]:
    task = operator_pod(
        manifest=manifest, task_id="organ-seg", series_uid=SERIES, pod_settings=pod_settings(**flow)
    )
    request = task.build_pod_request_obj(dry_run=True)
    serialised: dict[str, Any] = ApiClient().sanitize_for_serialization(request)
    return serialised


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_pod_validates_in_strict_mode(version: str) -> None:
    for gpu in (0, 1):
        pod = pod_of(OperatorManifest(name="organ-seg", version="0.1.0", gpu=gpu))
        kubernetes_validate.validate(pod, version, strict=True)


def test_pod_runs_under_the_restricted_security_settings() -> None:
    pod = pod_of(OperatorManifest(name="organ-seg", version="0.1.0", memory="2Gi", cpus=1))
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] > 0
    assert [c["name"] for c in containers(pod)] == ["stage-input", "operator", "stage-output"]
    for container in containers(pod):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
    operator = containers(pod)[1]
    assert operator["image"] == "reg.local/jip/organ-seg:0.1.0"
    assert operator["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert not spec.get("nodeSelector") and not spec.get("tolerations")


def test_pod_gets_the_api_and_no_credentials() -> None:
    pod = pod_of(OperatorManifest(name="organ-seg", version="0.1.0"))
    for container in containers(pod):
        assert not container.get("envFrom"), container["name"]  # no result-store secret
        names = {e["name"] for e in container.get("env", [])}
        assert not names & {"JIP_CATALOG_URL", "JIP_S3_ACCESS_KEY", "JIP_S3_SECRET_KEY"}
    operator = containers(pod)[1]
    assert "JIP_API_TOKEN" not in {e["name"] for e in operator["env"]}
    stage_in = containers(pod)[0]
    assert {"name": "JIP_API_URL", "value": "http://jip-flow:8000"} in stage_in["env"]
    assert SERIES in stage_in["command"]


def test_gpu_request_brings_the_limit_node_selector_and_tolerations() -> None:
    pod = pod_of(OperatorManifest(name="organ-seg", version="0.1.0", gpu=2))
    operator = containers(pod)[1]
    assert operator["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert operator["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"jip.io/pool": "gpu"}
    assert pod["spec"]["tolerations"] == GPU_POOL.tolerations
    for other in (containers(pod)[0], containers(pod)[2]):  # staging needs no GPU
        assert "nvidia.com/gpu" not in json.dumps(other.get("resources") or {})


def test_manifest_pins_the_image_by_the_digest_of_the_lock(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    lock_file = tmp_path / "images.json"
    lock_file.write_text(json.dumps({"images": {"jip/organ-seg:0.1.0": {"digest": digest}}}))
    manifest = OperatorManifest(name="organ-seg", version="0.1.0").pinned(
        load_lock(lock_file), "reg.local/"
    )
    pod = pod_of(manifest)
    assert containers(pod)[1]["image"] == f"reg.local/jip/organ-seg@{digest}"
    with pytest.raises(Invalid, match="make images"):
        OperatorManifest(name="radiomics", version="0.1.0").pinned(load_lock(lock_file), "")
    with pytest.raises(Invalid, match="make images"):
        load_lock(tmp_path / "missing.json")


def test_the_sites_image_lock_pins_every_operator_pod(tmp_path: Path) -> None:
    """flow.image_lock (the chart's operators.imageLock): the DAG names only operator and
    version; the pod starts the locked digest, and an operator the lock lacks fails."""
    digest = "sha256:" + "cd" * 32
    lock_file = tmp_path / "images.json"
    lock_file.write_text(json.dumps({"images": {"jip/organ-seg:0.1.0": {"digest": digest}}}))
    pod = pod_of(OperatorManifest(name="organ-seg", version="0.1.0"), image_lock=lock_file)
    assert containers(pod)[1]["image"] == f"reg.local/jip/organ-seg@{digest}"
    unpinned = pod_of(OperatorManifest(name="organ-seg", version="0.1.0"))
    assert containers(unpinned)[1]["image"] == "reg.local/jip/organ-seg:0.1.0"
    with pytest.raises(Invalid, match=r"no digest for jip/radiomics:0\.1\.0"):
        pod_of(OperatorManifest(name="radiomics", version="0.1.0"), image_lock=lock_file)


def test_task_carries_the_run_token_to_the_stage_containers_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jip.flow.worker.tasks as tasks

    monkeypatch.setattr(tasks, "run_token", lambda context: "run-token-123")
    task = operator_pod(
        manifest=OperatorManifest(name="organ-seg", version="0.1.0"),
        task_id="series.organ-seg",
        series_uid=SERIES,
        also={"dicom": [SEG]},
        pod_settings=pod_settings(),
    )
    context = {
        "dag_run": SimpleNamespace(run_id="manual__1", conf={}),
        "params": {"organ-seg": {"structures": ["liver"]}},
    }
    job = task.operator_job(context)
    assert job.series == (SERIES, SEG) and job.run_id == "manual__1"
    assert job.api_token == "run-token-123"
    assert json.loads(job_params(job)) == {"structures": ["liver"]}
    assert job.labels == {"series": SERIES, "task": "organ-seg"}


def job_params(job: Any) -> str:
    return json.dumps(dict(job.params))


def test_negative_gpu_count_is_refused() -> None:
    with pytest.raises(Invalid, match="gpu"):
        OperatorManifest(name="organ-seg", gpu=-1)


def test_pod_has_no_xcom_sidecar_yet_the_task_returns_its_result() -> None:
    task = operator_pod(
        manifest=OperatorManifest(name="organ-seg", version="0.1.0"),
        task_id="organ-seg",
        series_uid=SERIES,
        pod_settings=pod_settings(),
    )
    pod = ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
    assert [c["name"] for c in pod["spec"]["containers"]] == ["stage-output"]
    assert task.do_xcom_push is True  # Airflow pushes execute()'s return value


def test_runner_setting_picks_a_pod_or_one_fused_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import DAG

    import jip.config
    from jip.flow.worker.operator_step import operator_step
    from jip.flow.worker.pod_operator import OperatorPodOperator
    from jip.flow.worker.tasks import process_series

    for runner in ("kubernetes", "subprocess"):
        monkeypatch.setenv("JIP_FLOW__RUNNER", runner)
        jip.config.get_settings.cache_clear()
        with DAG(dag_id=f"d-{runner}", schedule=None) as dag:
            seg = operator_step(SERIES, operator="organ-seg", version="0.1.0")
            operator_step(SERIES, operator="radiomics", version="0.1.0", also=seg)
        assert set(dag.task_dict) == {"organ-seg", "radiomics"}
        assert dag.task_dict["radiomics"].upstream_task_ids == {"organ-seg"}
        step = dag.task_dict["organ-seg"]
        if runner == "kubernetes":
            assert isinstance(step, OperatorPodOperator)
        else:  # get-input, the operator and put-output in one task process
            assert getattr(step, "python_callable", None) is process_series.function
            assert step.op_kwargs["operator"] == "organ-seg"  # type: ignore[attr-defined]
    jip.config.get_settings.cache_clear()


def test_the_pod_task_returns_what_the_pod_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like put-output: the source series, its DICOM result series and its file keys, as
    the flow API lists them for this operator (not another step's) once the pod ended."""
    import jip.flow.worker.tasks as tasks
    from jip.flow.worker.pod_operator import KubernetesPodOperator

    ran: list[str] = []
    monkeypatch.setattr(KubernetesPodOperator, "execute", lambda self, context: ran.append("pod"))
    records = [
        {"operator": "organ-seg", "kind": "dicom", "result_series_uid": SEG, "key": SEG},
        {"operator": "organ-seg", "kind": "file", "key": f"runs/r/{SERIES}/segments.json"},
        {"operator": "deidentify", "kind": "dicom", "result_series_uid": "1.2.3", "key": "1.2.3"},
    ]
    asked: list[tuple[str, str | None]] = []

    class Listing:
        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def results(self, run_id: str, *, series: str | None = None) -> list[dict[str, Any]]:
            asked.append((run_id, series))
            return records

    monkeypatch.setattr(tasks, "task_client", lambda context, settings=None: Listing())
    task = operator_pod(
        manifest=OperatorManifest(name="organ-seg", version="0.1.0"),
        task_id="organ-seg",
        series_uid=SERIES,
        pod_settings=pod_settings(),
    )
    context: dict[str, Any] = {"dag_run": SimpleNamespace(run_id="manual__1", conf={})}
    delivered = task.execute(context)
    assert ran == ["pod"] and asked == [("manual__1", SERIES)]
    assert delivered == {
        "series": SERIES,
        "dicom": [SEG],
        "files": [f"runs/r/{SERIES}/segments.json"],
    }
    assert context["jip_series"] == SERIES  # the mapped instance's label


def test_toleration_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(Invalid, match="tolerationSeconds"):
        pod_of(
            OperatorManifest(name="organ-seg", gpu=1), gpu=GpuSettings(tolerations=[{"seconds": 3}])
        )
