"""The NetworkPolicies allow the paths the architecture uses and nothing else: who may
open which port on whom, evaluated over the rendered policies (tests/charts/support.py's
evaluator) for pods labelled as the chart labels them."""

from __future__ import annotations

from typing import Any

import pytest
from tests.charts.support import (
    API_SERVICES,
    NAMESPACE,
    RELEASE,
    Obj,
    Pod,
    example,
    may_connect,
    pod_templates,
    render,
    selects,
)

HERE = {"kubernetes.io/metadata.name": NAMESPACE}
CONTROLLER = Pod(
    {"app.kubernetes.io/name": "ingress-nginx"},
    {"kubernetes.io/metadata.name": "ingress-nginx"},
    "10.244.9.9",
)
ELSEWHERE = Pod({"app": "curious"}, {"kubernetes.io/metadata.name": "other-team"}, "10.244.8.8")
MONITORING = Pod({"app": "prometheus"}, {"kubernetes.io/metadata.name": "monitoring"}, "10.244.7.7")
OPERATOR = Pod(
    {
        "app.kubernetes.io/name": "jip-operator",
        "app.kubernetes.io/part-of": "jip",
        "app.kubernetes.io/component": "operator",
        "jip/operator": "organ-seg",
    },
    HERE,
    "10.244.6.6",
)


def outside(ip: str) -> Pod:
    """An address outside the cluster (the PACS, the hub, the internet)."""
    return Pod({}, {}, ip)


class Site:
    """The release's pods (from its pod templates) and its NetworkPolicies."""

    def __init__(self, objects: list[Obj]) -> None:
        self.policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        self.pods: dict[str, Pod] = {}
        for n, (_, meta, spec) in enumerate(pod_templates(objects)):
            component = meta["labels"]["app.kubernetes.io/component"]
            ports = {
                p["name"]: p["containerPort"]
                for c in spec["containers"]
                for p in c.get("ports", [])
                if "name" in p
            }
            self.pods[component] = Pod(meta["labels"], HERE, f"10.244.1.{n + 1}", ports)

    def pod(self, who: str | Pod) -> Pod:
        return who if isinstance(who, Pod) else self.pods[who]

    def reaches(self, source: str | Pod, target: str | Pod, port: int) -> bool:
        return may_connect(self.policies, self.pod(source), self.pod(target), port)


@pytest.fixture(scope="module")
def site(chart: Any) -> Site:
    return Site(render(chart, example("minimal")))


def test_every_pod_is_isolated_by_a_policy_of_its_own(chart: Any) -> None:
    for name in ("minimal", "external", "federation", "production"):
        objects = render(chart, example(name))
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        for where, meta, _ in pod_templates(objects):
            selecting = [p for p in policies if selects(p["spec"]["podSelector"], meta["labels"])]
            assert len(selecting) == 1, f"{name}: {where}"
            assert selecting[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    operator_policy = [
        o
        for o in render(chart, example("minimal"))
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == f"{RELEASE}-operator"
    ]
    assert selects(operator_policy[0]["spec"]["podSelector"], OPERATOR.labels)


@pytest.mark.parametrize("service", API_SERVICES)
def test_the_ingress_controller_reaches_the_web_ui_and_api_only(site: Site, service: str) -> None:
    assert site.reaches(CONTROLLER, service, 8000)
    assert site.reaches(CONTROLLER, "keycloak", 8080)  # the login pages
    for backend, port in [
        ("postgresql", 5432),
        ("minio", 9000),
        ("opensearch", 9200),
        ("airflow-api-server", 8080),
        ("dicom", 8000),
        ("indexer", 8000),
    ]:
        assert not site.reaches(CONTROLLER, backend, port), backend


@pytest.mark.parametrize("service", ["store", "meta", "flow", "base", "dicom", "indexer"])
def test_only_the_monitoring_namespace_reaches_the_metrics_relay(site: Site, service: str) -> None:
    assert site.reaches(MONITORING, service, 9102)
    assert not site.reaches(MONITORING, service, 8000)  # the API is no scrape path
    for stranger in (CONTROLLER, OPERATOR, ELSEWHERE):
        assert not site.reaches(stranger, service, 9102), stranger.labels
    assert not site.reaches("airflow-worker", service, 9102)


def test_the_pacs_reaches_the_dicom_listener_only(site: Site) -> None:
    pacs = outside("10.20.3.4")
    assert site.reaches(pacs, "dicom", 11112)
    assert not site.reaches(pacs, "dicom", 8000)
    assert not site.reaches(pacs, "store", 8000)
    assert not site.reaches(pacs, "postgresql", 5432)


@pytest.mark.parametrize("service", ["store", "meta", "flow", "base", "dicom", "indexer"])
def test_services_reach_their_backends_and_not_the_internet(site: Site, service: str) -> None:
    for backend, port in [
        ("postgresql", 5432),
        ("minio", 9000),
        ("opensearch", 9200),
        ("keycloak", 8080),
    ]:
        assert site.reaches(service, backend, port), backend
    assert not site.reaches(service, outside("1.1.1.1"), 443)
    assert not site.reaches(service, ELSEWHERE, 8080)


def test_only_flow_and_base_call_airflow(site: Site) -> None:
    callers = {
        s
        for s in ("store", "meta", "flow", "base", "dicom", "indexer")
        if site.reaches(s, "airflow-api-server", 8080)
    }
    assert callers == {"flow", "base"}


def test_operator_pods_reach_the_api_only(site: Site) -> None:
    for service in ("store", "flow"):  # WADO-RS/STOW-RS in, results out
        assert site.reaches(OPERATOR, service, 8000), service
    for service in ("meta", "base"):
        assert not site.reaches(OPERATOR, service, 8000), service
    assert not site.reaches(OPERATOR, CONTROLLER, 443)
    assert not site.reaches(OPERATOR, CONTROLLER, 80)
    for target, port in [
        ("postgresql", 5432),
        ("minio", 9000),
        ("opensearch", 9200),
        ("keycloak", 8080),
        ("airflow-api-server", 8080),
        ("dicom", 11112),
    ]:
        assert not site.reaches(OPERATOR, target, port), target
    assert not site.reaches(OPERATOR, outside("1.1.1.1"), 443)
    assert not site.reaches(OPERATOR, outside("10.96.0.1"), 443)  # not the Kubernetes API
    assert not site.reaches(OPERATOR, ELSEWHERE, 8080)


def test_airflow_reaches_its_database_its_api_and_the_kubernetes_api(site: Site) -> None:
    assert site.reaches("airflow-worker", "airflow-api-server", 8080)
    assert site.reaches("airflow-scheduler", "postgresql", 5432)
    assert site.reaches("airflow-scheduler", outside("10.96.0.1"), 443)
    assert site.reaches("airflow-worker", "store", 8000)
    assert not site.reaches("airflow-api-server", outside("10.96.0.1"), 443)
    assert not site.reaches("airflow-worker", "minio", 9000)


def test_nothing_from_another_namespace_gets_in(site: Site) -> None:
    for target, port in [
        ("store", 8000),
        ("base", 8000),
        ("postgresql", 5432),
        ("minio", 9000),
        ("keycloak", 8080),
        ("airflow-api-server", 8080),
    ]:
        assert not site.reaches(ELSEWHERE, target, port), target


def test_the_federation_agent_reaches_the_hub_and_nothing_else_outside(chart: Any) -> None:
    site = Site(render(chart, example("federation")))
    hub = outside("203.0.113.10")
    assert site.reaches("federation", hub, 443)
    assert not site.reaches("federation", hub, 22)
    assert not site.reaches("federation", outside("1.1.1.1"), 443)
    assert not site.reaches("federation", "airflow-api-server", 8080)
    for service in API_SERVICES:
        assert not site.reaches("federation", service, 8000)
        assert not site.reaches(service, hub, 443)
    assert not site.reaches(CONTROLLER, "federation", 8000)  # nothing calls the agent


def test_production_narrows_dicom_metrics_and_external_backends(chart: Any) -> None:
    site = Site(render(chart, example("production")))
    assert site.reaches(outside("10.20.3.4"), "dicom", 11112)
    assert site.reaches(outside("10.30.4.7"), "dicom", 11112)
    assert not site.reaches(outside("192.168.1.5"), "dicom", 11112)
    assert site.reaches(MONITORING, "store", 9102)  # the metrics relay
    assert site.reaches(MONITORING, "indexer", 9102)
    assert not site.reaches(MONITORING, "store", 8000)  # not the API
    assert not site.reaches(MONITORING, "minio", 9000)
    # The hospital's PostgreSQL, and its PACS as a C-MOVE destination.
    assert site.reaches("store", outside("10.40.1.1"), 5432)
    assert not site.reaches("store", outside("8.8.8.8"), 5432)
    assert site.reaches("dicom", outside("10.20.5.10"), 104)
    assert not site.reaches("dicom", outside("10.20.5.11"), 104)
    assert not site.reaches("meta", outside("10.20.5.10"), 104)
    assert site.reaches("airflow-scheduler", outside("10.96.0.1"), 443)
    assert not site.reaches("airflow-scheduler", outside("1.1.1.1"), 443)


def test_the_evaluator_follows_kubernetes_semantics() -> None:
    """Unselected pods are open; a selected pod is closed but for its rules; a bare
    podSelector means the policy's own namespace; both ends must allow."""
    a = Pod({"app": "a"}, HERE, "10.244.0.1", {"http": 80})
    b = Pod({"app": "b"}, HERE, "10.244.0.2", {"http": 80})
    stranger = Pod({"app": "a"}, {"kubernetes.io/metadata.name": "x"}, "10.244.0.3")
    assert may_connect([], a, b, 80)
    only_a_in: Obj = {
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                    "ports": [{"port": "http"}],
                }
            ],
        }
    }
    assert may_connect([only_a_in], a, b, 80)
    assert not may_connect([only_a_in], a, b, 81)
    assert not may_connect([only_a_in], stranger, b, 80)
    a_closed: Obj = {
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Egress"],
            "egress": [],
        }
    }
    assert not may_connect([only_a_in, a_closed], a, b, 80)
