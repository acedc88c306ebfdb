"""The Kubernetes runner: the pod it builds, and its calls on a mocked CoreV1Api."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiClient

from jip.backends import runner_for
from jip.config import FlowApiSettings, FlowSettings, Settings
from jip.errors import Unavailable
from jip.flow.worker.runner import OperatorJob
from jip.flow.worker.runner_kubernetes import (
    KubernetesRunner,
    PodSettings,
    build_pod,
    label_value,
    pod_name,
)

SERIES = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901234567"


def job(work: Path) -> OperatorJob:
    return OperatorJob(
        operator="organ-seg",
        version="0.1.0",
        input_dir=work / "run-1" / SERIES / "organ-seg" / "input",
        output_dir=work / "run-1" / SERIES / "organ-seg" / "output",
        params={"structures": ["liver"]},
        labels={"series": SERIES, "task": "organ-seg"},
        series=(SERIES,),
        run_id="manual__2026-01-01T00:00:00+00:00",
    )


def pvc_settings(work: Path) -> PodSettings:
    return PodSettings(
        namespace="jip-ops", registry="reg.local/", cpus=2, memory="4Gi", work_dir=work,
        work_pvc="jip-work", api_url="http://jip:8000",
    )  # fmt: skip


def as_dict(pod: k8s.V1Pod) -> dict[str, Any]:
    # What the API server receives: the client's own serialisation, camelCase keys.
    serialised: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return serialised


def test_pod_on_the_shared_volume_mounts_input_read_only(tmp_path: Path) -> None:
    pod = as_dict(build_pod(job(tmp_path), pvc_settings(tmp_path), deadline_s=600))
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert "initContainers" not in spec
    assert container["image"] == "reg.local/jip/organ-seg:0.1.0"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["JIP_INPUT_DIR"] == "/jip/input" and env["JIP_OUTPUT_DIR"] == "/jip/output"
    assert env["JIP_PARAMS"] == '{"structures":["liver"]}'
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/jip/input"]["readOnly"] is True
    assert mounts["/jip/input"]["subPath"] == f"run-1/{SERIES}/organ-seg/input"
    assert mounts["/jip/output"]["subPath"] == f"run-1/{SERIES}/organ-seg/output"
    assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "jip-work"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert spec["activeDeadlineSeconds"] == 600


def test_pod_is_locked_down_and_labelled(tmp_path: Path) -> None:
    pod = as_dict(build_pod(job(tmp_path), pvc_settings(tmp_path)))
    spec, meta = pod["spec"], pod["metadata"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = spec["containers"][0]["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    assert meta["namespace"] == "jip-ops"
    assert meta["name"] == pod_name(job(tmp_path)) and len(meta["name"]) <= 63
    assert meta["labels"]["jip/operator"] == "organ-seg"
    assert all(len(v) <= 63 for v in meta["labels"].values())
    assert meta["annotations"]["jip/series"] == SERIES
    assert meta["annotations"]["jip/run-id"] == "manual__2026-01-01T00:00:00+00:00"


def test_label_values_keep_a_digest_when_too_long() -> None:
    assert label_value("a:b+c") == "a_b_c"
    long = label_value(SERIES + "9" * 20)
    assert len(long) <= 63 and long != label_value(SERIES + "8" * 20)


def test_pod_without_shared_volume_stages_through_the_store(tmp_path: Path) -> None:
    settings = PodSettings(work_dir=tmp_path, api_url="https://jip.local", api_token="t0k",
                           store_api_url="http://jip-store:8000",
                           flow_api_url="http://jip-flow:8000")  # fmt: skip
    pod = as_dict(build_pod(job(tmp_path), settings))
    spec = pod["spec"]
    stage_in, operator = spec["initContainers"]
    (stage_out,) = spec["containers"]
    assert stage_in["command"][-3:] == ["--dest", "/jip/input", SERIES]
    assert operator["name"] == "operator"
    assert stage_out["command"][:5] == ["python", "-m", "jip.flow.worker.stage", "push", "--source"]
    assert "--run-id" in stage_out["command"]
    for stage in (stage_in, stage_out):
        env = {e["name"]: e["value"] for e in stage["env"]}
        assert env["JIP_API_URL"] == "https://jip.local" and env["JIP_API_TOKEN"] == "t0k"
        # The Services inside the cluster, not the Ingress; no result-store credentials.
        assert env["JIP_FLOW__API__STORE_URL"] == "http://jip-store:8000"
        assert env["JIP_FLOW__API__FLOW_URL"] == "http://jip-flow:8000"
        assert "envFrom" not in stage and not {n for n in env if "S3" in n or "RESULTS" in n}
    assert {v["name"] for v in spec["volumes"]} == {"input", "output", "tmp"}
    assert all("emptyDir" in v for v in spec["volumes"])


def pod_status(phase: str, code: int, *, init: bool = False) -> Any:
    terminated = SimpleNamespace(
        name="operator", state=SimpleNamespace(terminated=SimpleNamespace(exit_code=code))
    )
    return SimpleNamespace(
        status=SimpleNamespace(
            phase=phase,
            container_statuses=None if init else [terminated],
            init_container_statuses=[terminated] if init else None,
        )
    )


def test_runner_creates_waits_relays_logs_and_deletes(tmp_path: Path) -> None:
    api = MagicMock()
    api.read_namespaced_pod.side_effect = [pod_status("Pending", 0), pod_status("Succeeded", 0)]
    api.read_namespaced_pod_log.return_value = 'working\n{"jip_progress": 1.0}\n'
    runner = KubernetesRunner(api=api, pod=pvc_settings(tmp_path), poll_s=0)
    lines: list[str] = []
    outcome = runner.run(job(tmp_path), lines.append)
    assert outcome.ok and not outcome.delivered
    assert outcome.progress is not None and outcome.progress.fraction == 1.0
    assert "working" in lines
    created = api.create_namespaced_pod.call_args.kwargs
    assert created["namespace"] == "jip-ops"
    assert isinstance(created["body"], k8s.V1Pod)
    api.read_namespaced_pod_log.assert_called_with(
        name=pod_name(job(tmp_path)), namespace="jip-ops", container="operator"
    )
    api.delete_namespaced_pod.assert_called_once()


def test_failed_operator_pod_reports_its_exit_code(tmp_path: Path) -> None:
    api = MagicMock()
    api.read_namespaced_pod.return_value = pod_status("Failed", 3)
    api.read_namespaced_pod_log.return_value = "series is not CT"
    outcome = KubernetesRunner(api=api, pod=pvc_settings(tmp_path), poll_s=0).run(
        job(tmp_path), lambda _: None
    )
    assert outcome.exit_code == 3 and not outcome.ok
    api.delete_namespaced_pod.assert_called_once()


def test_pod_past_its_deadline_is_deleted_and_timed_out(tmp_path: Path) -> None:
    api = MagicMock()
    api.read_namespaced_pod.return_value = pod_status("Running", 0)
    runner = KubernetesRunner(api=api, pod=pvc_settings(tmp_path), timeout_s=0, poll_s=0)
    outcome = runner.run(job(tmp_path), lambda _: None)
    assert outcome.timed_out
    api.delete_namespaced_pod.assert_called_once()


def test_staged_pod_that_pushed_its_output_is_delivered(tmp_path: Path) -> None:
    api = MagicMock()
    status = pod_status("Succeeded", 0, init=True)
    status.status.container_statuses = [
        SimpleNamespace(
            name="stage-output", state=SimpleNamespace(terminated=SimpleNamespace(exit_code=0))
        )
    ]
    api.read_namespaced_pod.return_value = status
    api.read_namespaced_pod_log.return_value = ""
    settings = PodSettings(work_dir=tmp_path, api_url="http://jip:8000")
    outcome = KubernetesRunner(api=api, pod=settings, poll_s=0).run(job(tmp_path), lambda _: None)
    assert outcome.ok and outcome.delivered


def test_api_errors_become_unavailable(tmp_path: Path) -> None:
    api = MagicMock()
    api.create_namespaced_pod.side_effect = k8s.ApiException(status=403, reason="Forbidden")
    runner = KubernetesRunner(api=api, pod=pvc_settings(tmp_path), poll_s=0)
    with pytest.raises(Unavailable, match="403"):
        runner.run(job(tmp_path), lambda _: None)


def test_kubernetes_runner_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        flow=FlowSettings(
            runner="kubernetes",
            kubernetes_namespace="ops",
            kubernetes_work_pvc="w",
            api=FlowApiSettings(store_url="http://s:8000", flow_url="http://f:8000/"),
        ),
        api_url="https://jip.local",
    )
    runner = runner_for(settings, kubernetes_api=MagicMock())
    assert isinstance(runner, KubernetesRunner)
    assert runner.pod.namespace == "ops" and runner.pod.work_pvc == "w"
    # Pods deliver files through the flow API: the stage Secret is no longer handed on.
    assert not hasattr(runner.pod, "stage_secret")
    assert (runner.pod.store_api_url, runner.pod.flow_api_url) == ("http://s:8000", "http://f:8000")
    assert runner.pod.api_url == "https://jip.local"
