"""Airflow's task pods, and the operator pods they build, reach the store and the flow API
at their Services inside the cluster (not out through the Ingress and back), and the
NetworkPolicies let them. Rendered offline; nothing needs a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient
from tests.charts.support import RELEASE, Obj, example, only, render, task_pod_template
from tests.charts.test_network_policy import OPERATOR, Site

from jip.config import Settings
from jip.flow.worker.api_client import service_urls_of
from jip.flow.worker.runner import OperatorJob
from jip.flow.worker.runner_kubernetes import PodSettings, build_pod

SERIES = "1.2.826.0.1.3680043.8.498.1234567890"


def task_settings(objects: list[Obj], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a task process reads from the task pod template's environment."""
    pod = task_pod_template(objects)
    assert pod is not None
    (base,) = pod["spec"]["containers"]
    for entry in base["env"]:
        if entry["name"].startswith("JIP_") and "value" in entry:
            monkeypatch.setenv(entry["name"], entry["value"])
    return Settings()


@pytest.mark.parametrize("values", ["minimal", "production"])
def test_tasks_and_operator_pods_use_the_services(
    chart: Any, values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(chart, example(values))
    settings = task_settings(objects, monkeypatch)
    store, flow = service_urls_of(settings)
    assert (store, flow) == (f"http://{RELEASE}-store:8000", f"http://{RELEASE}-flow:8000")
    for part in ("store", "flow"):
        service = only(objects, "Service", f"{RELEASE}-{part}")
        assert {"name": "http", "port": 8000} in [
            {"name": p["name"], "port": p["port"]} for p in service["spec"]["ports"]
        ]
    assert settings.api_url and settings.api_url.startswith("https://")  # the rest: Ingress

    job = OperatorJob(operator="organ-seg", input_dir=Path("/jip/input"),
                      output_dir=Path("/jip/output"), series=(SERIES,), run_id="r1",
                      labels={"series": SERIES})  # fmt: skip
    pod = ApiClient().sanitize_for_serialization(
        build_pod(job, PodSettings.from_settings(settings))
    )
    for stage in (*pod["spec"]["initContainers"][:1], *pod["spec"]["containers"]):
        env = {e["name"]: e["value"] for e in stage["env"]}
        assert env["JIP_FLOW__API__STORE_URL"] == store, stage["name"]
        assert env["JIP_FLOW__API__FLOW_URL"] == flow, stage["name"]
        assert not stage.get("envFrom"), stage["name"]


def test_the_policies_let_task_and_operator_pods_reach_store_and_flow(chart: Any) -> None:
    site = Site(render(chart, example("minimal")))
    for source in ("airflow-worker", OPERATOR):
        for service in ("store", "flow"):
            assert site.reaches(source, service, 8000), (source, service)
    for target, port in [("postgresql", 5432), ("minio", 9000), ("airflow-api-server", 8080)]:
        assert not site.reaches(OPERATOR, target, port), target


def test_the_image_lock_reaches_the_task_pods_and_pins_operator_images(
    chart: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--set-file operators.imageLock=build/images.json`: the lock rides in Airflow's
    ConfigMap, mounted where JIP_FLOW__IMAGE_LOCK says in every task pod; without it
    the variable is absent (operator pods then start tags)."""
    import json

    from jip.flow.worker.pod_operator import OperatorManifest, operator_pod

    digest = "sha256:" + "ef" * 32
    lock = json.dumps({"images": {"jip/organ-seg:0.1.0": {"digest": digest}}}, indent=2)
    values = example("minimal")
    values.setdefault("operators", {})["imageLock"] = lock
    objects = render(chart, values)
    configmap = next(
        o for o in objects if o["kind"] == "ConfigMap" and "pod_template.yaml" in o["data"]
    )
    assert json.loads(configmap["data"]["images.json"]) == json.loads(lock)
    pod = task_pod_template(objects)
    assert pod is not None
    (base,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in base["env"]}
    mounts = {m["name"]: m["mountPath"] for m in base["volumeMounts"]}
    assert env["JIP_FLOW__IMAGE_LOCK"] == f"{mounts['pod-template']}/images.json"

    # What the task process then does with it: the task pod's environment, with the
    # mounted file where this test can read it.
    task_settings(objects, monkeypatch)
    local = tmp_path / "images.json"
    local.write_text(configmap["data"]["images.json"])
    monkeypatch.setenv("JIP_FLOW__IMAGE_LOCK", str(local))
    settings = Settings()
    task = operator_pod(
        manifest=OperatorManifest(name="organ-seg", version="0.1.0"),
        task_id="organ-seg",
        series_uid=SERIES,
        pod_settings=PodSettings.from_settings(settings),
    )
    built = ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
    operator = next(c for c in built["spec"]["initContainers"] if c["name"] == "operator")
    assert operator["image"].endswith(f"jip/organ-seg@{digest}")

    plain = task_pod_template(render(chart, example("minimal")))
    assert plain is not None
    assert "JIP_FLOW__IMAGE_LOCK" not in {e["name"] for e in plain["spec"]["containers"][0]["env"]}
