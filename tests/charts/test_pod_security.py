"""Every pod the chart runs or starts (JIP's services, the bundled backends, Airflow's
processes, hook Jobs, Airflow's task pod template) meets Pod Security "restricted"
(https://kubernetes.io/docs/concepts/security/pod-security-standards/), has requests,
limits and, where it serves, probes; so the namespace may enforce "restricted"."""

from __future__ import annotations

from typing import Any

import pytest
from tests.charts.support import MATRIX, Obj, example, pod_templates, render

# Volume types "restricted" allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: Obj) -> list[str]:
    """What in ``spec`` Pod Security's "restricted" level refuses (its checks, in order)."""
    found: list[str] = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(key)
    pod_sc = spec.get("securityContext", {})
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {kinds}")
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds {caps['add']}")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: privilege escalation")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            found.append(f"{name}: may run as root")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{name}: runs as uid 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccomp {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{name}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount")
    return found


@pytest.mark.parametrize("name", MATRIX)
def test_every_pod_meets_pod_security_restricted(chart: Any, name: str) -> None:
    pods = list(pod_templates(render(chart, example(name))))
    assert len(pods) >= 7
    for where, _, spec in pods:
        assert restricted_violations(spec) == [], where


@pytest.mark.parametrize("name", MATRIX)
def test_every_container_has_a_read_only_root_and_requests_and_limits(
    chart: Any, name: str
) -> None:
    for where, _, spec in pod_templates(render(chart, example(name))):
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            resources = c["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), where
            assert {"cpu", "memory"} <= set(resources["limits"]), where


@pytest.mark.parametrize("name", MATRIX)
def test_every_long_running_container_has_probes(chart: Any, name: str) -> None:
    for obj in render(chart, example(name)):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{obj['metadata']['name']}/{c['name']}: {probe}"


def test_only_pods_that_start_pods_mount_a_kubernetes_token(chart: Any) -> None:
    mounted = {
        where
        for where, _, spec in pod_templates(render(chart, example("minimal")))
        if spec.get("automountServiceAccountToken")
    }
    assert mounted == {
        "Deployment/jip-airflow-scheduler",
        "Deployment/jip-airflow-triggerer",
        "airflow task pod template",
    }


def test_the_checker_refuses_what_restricted_refuses() -> None:
    """The checker above is what the tests trust: it must see each violation."""
    spec: Obj = {
        "hostNetwork": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}},
                "ports": [{"containerPort": 80, "hostPort": 80}],
            }
        ],
    }
    found = " ".join(restricted_violations(spec))
    for word in (
        "hostNetwork",
        "hostPath",
        "privileged",
        "not dropped",
        "SYS_ADMIN",
        "escalation",
        "root",
        "seccomp",
        "hostPort",
    ):
        assert word in found, word
