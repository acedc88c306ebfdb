"""Rendering charts/jip offline and reading what it renders: the values matrix, pod
templates (Deployments, StatefulSets, Jobs and Airflow's task pod template), and a small
NetworkPolicy evaluator that says whether one pod may open a connection to another."""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "jip"
RELEASE = "jip"
NAMESPACE = "imaging"
SERVICES = ("store", "meta", "flow", "base", "dicom", "indexer")
API_SERVICES = ("store", "meta", "flow", "base")

Obj = dict[str, Any]


def example(name: str) -> Obj:
    """A values file the chart ships under ci/ (docs/cluster-install.md points to them)."""
    values: Obj = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return values


# The matrix every rendering check runs on.
MATRIX = ("minimal", "external", "gpu", "federation", "production")


def merged(base: Obj, **overrides: Any) -> Obj:
    """``base`` with dotted-path overrides: ``merged(v, **{"keycloak.enabled": False})``."""
    values = copy.deepcopy(base)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


_rendered: dict[str, list[Obj]] = {}


def render(chart: Any, values: Obj | None, *, fresh: bool = False) -> list[Obj]:
    """Every object the chart renders for ``values``, as an install would (schema
    included); a copy of the first render of the same values unless ``fresh``."""
    key = json.dumps(values, sort_keys=True)
    if fresh or key not in _rendered:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
        objects: list[Obj] = []
        for path, text in sorted(manifests.items()):
            if path.endswith(".yaml"):  # not NOTES.txt
                objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
        if fresh:
            return objects
        _rendered[key] = objects
    return copy.deepcopy(_rendered[key])


def only(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def named(part: str) -> str:
    return f"{RELEASE}-{part}"


def task_pod_template(objects: list[Obj]) -> Obj | None:
    """The KubernetesExecutor's pod template that Airflow's ConfigMap carries."""
    for obj in objects:
        if obj["kind"] == "ConfigMap" and "pod_template.yaml" in obj.get("data", {}):
            pod: Obj = yaml.safe_load(obj["data"]["pod_template.yaml"])
            return pod
    return None


def pod_templates(objects: list[Obj]) -> Iterator[tuple[str, Obj, Obj]]:
    """(where, pod metadata, pod spec) of every pod the release runs or starts."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            template = obj["spec"]["template"]
            yield f"{obj['kind']}/{obj['metadata']['name']}", template["metadata"], template["spec"]
    pod = task_pod_template(objects)
    if pod is not None:
        yield "airflow task pod template", pod["metadata"], pod["spec"]


def image_references(objects: list[Obj]) -> set[str]:
    return {
        c["image"]
        for _, _, spec in pod_templates(objects)
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]
    }


# --- NetworkPolicy evaluator -------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """A pod as NetworkPolicies see it: labels, namespace labels, address, named ports."""

    labels: Mapping[str, str]
    namespace: Mapping[str, str]
    ip: str = "10.244.0.10"
    ports: Mapping[str, int] | None = None  # name -> containerPort


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) on ``labels``."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], pod: Pod, policy_namespace: Mapping[str, str]) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(pod.ip)
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], pod.namespace):
            return False
    elif dict(pod.namespace) != dict(policy_namespace):
        return False  # a bare podSelector means the policy's own namespace
    return selects(peer.get("podSelector"), pod.labels)


def _port_matches(rule: Mapping[str, Any], port: int, target: Pod) -> bool:
    if "ports" not in rule:
        return True
    for entry in rule["ports"]:
        value = entry.get("port")
        if value is None:
            return True
        if isinstance(value, str):
            value = (target.ports or {}).get(value)
        if value == port and entry.get("protocol", "TCP") == "TCP":
            return True
    return False


def _allowed(
    policies: list[Obj], pod: Pod, direction: str, peer: Pod, port: int, target: Pod
) -> bool:
    """Whether the policies selecting ``pod`` let ``direction`` traffic with ``peer``."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    relevant = [
        p
        for p in policies
        if kind in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], pod.labels)
        and dict(pod.namespace) == {"kubernetes.io/metadata.name": NAMESPACE}
    ]
    if not relevant:
        return True  # no policy isolates this pod in this direction
    key = "from" if direction == "ingress" else "to"
    own = {"kubernetes.io/metadata.name": NAMESPACE}
    for policy in relevant:
        for rule in policy["spec"].get(direction) or []:
            peers = rule.get(key)
            peer_ok = peers is None or any(_peer_matches(p, peer, own) for p in peers)
            if peer_ok and _port_matches(rule, port, target):
                return True
    return False


def may_connect(policies: list[Obj], source: Pod, target: Pod, port: int) -> bool:
    """Whether ``source`` may open TCP ``port`` on ``target``: egress of the source's
    policies and ingress of the target's must both allow it."""
    return _allowed(policies, source, "egress", target, port, target) and _allowed(
        policies, target, "ingress", source, port, target
    )
