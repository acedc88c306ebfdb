"""charts/jip, one complete site: rendered offline by Helm's own engine (helm-python-sdk)
for a matrix of values, every object checked against the Kubernetes API schemas of two
versions (kubernetes-validate, strict), `helm lint --strict`, and the wiring a site
depends on asserted. Nothing here needs a cluster."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.routing import APIRoute
from tests.charts.support import (
    API_SERVICES,
    CHART,
    MATRIX,
    NAMESPACE,
    RELEASE,
    SERVICES,
    Obj,
    example,
    image_references,
    merged,
    named,
    only,
    render,
)

from jip.app import ROUTER_GROUPS

kubernetes_validate = pytest.importorskip("kubernetes_validate")
helm = pytest.importorskip("helm_python", reason="helm-python-sdk renders the chart")

KUBERNETES_VERSIONS = ("1.29", "1.33")
MINIMAL = example("minimal")
PRODUCTION = example("production")
EXTERNAL = example("external")


def deployment(objects: list[Obj], part: str) -> Obj:
    return only(objects, "Deployment", named(part))


def containers(objects: list[Obj], part: str) -> dict[str, Obj]:
    spec = deployment(objects, part)["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def container(objects: list[Obj], part: str) -> Obj:
    """The part's own container (JIP's services have the ``metrics`` relay beside it)."""
    found = containers(objects, part)
    if part in found:
        return found[part]
    (main,) = found.values()
    return main


def env_of(objects: list[Obj], part: str) -> dict[str, Obj]:
    return {entry["name"]: entry for entry in container(objects, part)["env"]}


def config_map(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = only(objects, "ConfigMap", RELEASE)["data"]
    return data


def secret_data(objects: list[Obj], name: str = RELEASE) -> dict[str, str]:
    data = only(objects, "Secret", name)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def rejection(chart: Any, values: Obj) -> str:
    """The message ``helm install`` would print for ``values``."""
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(caught.value)


# --- Rendering, Kubernetes schemas, lint -------------------------------------------------


@pytest.mark.parametrize("name", MATRIX)
def test_every_object_passes_the_kubernetes_schemas_of_two_versions(chart: Any, name: str) -> None:
    objects = render(chart, example(name))
    assert {"Deployment", "Service", "Ingress", "NetworkPolicy", "Secret"} <= {
        o["kind"] for o in objects
    }
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{version} {obj['kind']}/{obj['metadata']['name']} {where}: {exc}")


@pytest.mark.parametrize("name", MATRIX)
def test_helm_lint_strict_finds_nothing(name: str) -> None:
    report = helm.lint(str(CHART), example(name), strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_defaults_bring_a_whole_site(chart: Any) -> None:
    objects = render(chart, MINIMAL)
    workloads = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for part in SERVICES:
        assert ("Deployment", named(part)) in workloads
    for store in ("postgresql", "minio", "opensearch"):
        assert ("StatefulSet", named(store)) in workloads
    assert ("Deployment", named("keycloak")) in workloads
    for process in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert ("Deployment", named(f"airflow-{process}")) in workloads
    assert ("Job", named("migrations")) in workloads
    assert ("Job", named("airflow-migrations")) in workloads
    pod = json.dumps(only(objects, "ConfigMap", named("airflow"))["data"])
    assert "KubernetesExecutor" in json.dumps(
        [e for e in container(objects, "airflow-scheduler")["env"] if "value" in e]
    )
    assert "kind: Pod" in pod


def test_external_backends_replace_the_bundled_ones(chart: Any) -> None:
    objects = render(chart, EXTERNAL)
    kinds = {o["kind"] for o in objects}
    assert "StatefulSet" not in kinds
    names = {o["metadata"]["name"] for o in objects}
    assert not {named(p) for p in ("keycloak", "airflow-scheduler", "airflow")} & names
    env = env_of(objects, "store")
    assert env["JIP_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "jip-postgresql",
        "key": "password",
    }
    assert env["JIP_CATALOG_URL"]["value"] == (
        "postgresql://jip:$(JIP_DB_PASSWORD)@pg.db.hospital.local:5432/jip"
    )
    assert env["JIP_INDEX_URL"]["value"] == (
        "https://jip:$(JIP_INDEX_PASSWORD)@search.hospital.local:9200"
    )
    assert env["JIP_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "jip-s3"
    data = config_map(objects)
    assert (
        data["JIP_STORAGE_URL"] == "s3://jip-dicom/site?endpoint=s3.hospital.local:443&secure=true"
    )
    assert data["JIP_AUTH__ISSUER_URL"] == EXTERNAL["externalKeycloak"]["issuerUrl"]
    assert data["JIP_FLOW__AIRFLOW_URL"] == EXTERNAL["externalAirflow"]["url"]


# --- JIP's services ----------------------------------------------------------------------


def test_each_service_is_its_own_deployment_running_jip_up_with_its_role(chart: Any) -> None:
    objects = render(chart, PRODUCTION)
    digest = PRODUCTION["images"]["jip"]["digest"]
    for part in SERVICES:
        assert container(objects, part)["args"] == ["up", "--role", part]
        assert container(objects, part)["image"] == f"registry.hospital.local/jip/jip@{digest}"
    assert deployment(objects, "store")["spec"]["replicas"] == 3
    assert deployment(objects, "dicom")["spec"]["replicas"] == 2
    assert deployment(objects, "meta")["spec"]["replicas"] == 2


def test_every_role_the_chart_starts_is_one_jip_up_knows() -> None:
    from jip.embedded import Role

    assert {*SERVICES, "federation"} <= {r.value for r in Role}


def test_migrations_run_once_in_a_hook_before_pods_roll(chart: Any) -> None:
    external = only(render(chart, EXTERNAL), "Job", named("migrations"))
    annotations = external["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    (main,) = external["spec"]["template"]["spec"]["containers"]
    assert main["args"] == ["up", "--migrate-only"]
    assert "envFrom" not in main  # the release's ConfigMap does not exist before install
    bundled = only(render(chart, MINIMAL), "Job", named("migrations"))
    # The bundled database exists only once the release is installed.
    assert bundled["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_images_come_from_values_and_a_digest_pins_them(chart: Any) -> None:
    objects = render(chart, MINIMAL)
    assert image_references(objects) == {
        "jip/jip:0.1.0",
        "jip/airflow:0.1.0",
        "docker.io/library/postgres:16.6-bookworm",
        "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z",
        "docker.io/opensearchproject/opensearch:2.19.1",
        "quay.io/keycloak/keycloak:26.1.4",
    }
    pinned = image_references(render(chart, PRODUCTION))
    assert pinned and all("@sha256:" in ref for ref in pinned)
    tagged = image_references(render(chart, merged(MINIMAL, **{"images.jip.tag": "1.2.3"})))
    assert "jip/jip:1.2.3" in tagged


# --- Settings: what goes to the ConfigMap, what to Secrets -------------------------------


@pytest.mark.parametrize("name", MATRIX)
def test_no_credential_is_inline_in_any_pod(chart: Any, name: str) -> None:
    secretish = ("PASSWORD", "SECRET", "ACCESS_KEY", "FERNET", "TOKEN")
    for obj in render(chart, example(name)):
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = obj["spec"]["template"]["spec"]
        for c in [*spec["containers"], *spec.get("initContainers", [])]:
            for entry in c.get("env", []):
                if any(word in entry["name"] for word in secretish) and not entry["name"].endswith(
                    "_FILE"
                ):
                    assert "valueFrom" in entry, f"{obj['metadata']['name']}: {entry['name']}"


def test_generated_secrets_are_random_and_never_values(chart: Any) -> None:
    first, second = (secret_data(render(chart, MINIMAL, fresh=True)) for _ in range(2))
    for key in ("postgresql-password", "minio-root-password", "keycloak-admin-password"):
        assert len(first[key]) >= 32
        assert first[key] != second[key]  # made at install; `lookup` keeps the live one
    fernet = base64.urlsafe_b64decode(first["airflow-fernet-key"])
    assert len(fernet) == 32  # what Fernet accepts
    passwords = json.loads(first["airflow-passwords.json"])
    assert passwords == {"jip": first["airflow-jip-password"]}
    secret = only(render(chart, MINIMAL), "Secret", RELEASE)
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_secrets_are_looked_up_so_upgrades_keep_them() -> None:
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    assert 'lookup "v1" "Secret"' in text
    tls = (CHART / "templates" / "secret.yaml").read_text()
    assert "lookup" in tls and "genSelfSignedCert" in tls


@pytest.mark.parametrize("name", MATRIX)
def test_rendered_secrets_hold_nothing_given_in_plain_values(chart: Any, name: str) -> None:
    """Plain strings of the values (hosts, names, labels) never appear in a Secret: what a
    Secret holds was generated, or lives in an existingSecret the chart only names."""
    values = example(name)
    objects = render(chart, values)

    def strings(node: Any) -> set[str]:
        if isinstance(node, dict):
            return {s for v in node.values() for s in strings(v)}
        if isinstance(node, list):
            return {s for v in node for s in strings(v)}
        return {node} if isinstance(node, str) and len(node) >= 6 else set()

    plain = strings(values)
    for obj in objects:
        if obj["kind"] != "Secret" or obj["type"] == "kubernetes.io/tls":
            continue
        for key, value in obj["data"].items():
            decoded = base64.b64decode(value).decode()
            leaked = [s for s in plain if s in decoded]
            assert not leaked, f"{obj['metadata']['name']}/{key} holds {leaked}"


def test_configmap_and_secrets_are_read_back_by_jip_settings(
    chart: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strings the chart writes are what jip.config.Settings parses in the pod, with
    Kubernetes' $(VAR) expansion done as the kubelet does it."""
    from jip.config import Settings

    objects = render(chart, MINIMAL)
    data = secret_data(objects)
    for name, value in config_map(objects).items():
        monkeypatch.setenv(name, value)
    resolved: dict[str, str] = {}
    for name, entry in env_of(objects, "store").items():
        if "valueFrom" in entry:
            resolved[name] = data[entry["valueFrom"]["secretKeyRef"]["key"]]
        else:
            value = entry["value"]
            for earlier, known in resolved.items():
                value = value.replace(f"$({earlier})", known)
            resolved[name] = value
        monkeypatch.setenv(name, resolved[name])
    monkeypatch.delenv("JIP_CONFIG", raising=False)

    settings = Settings()

    assert settings.catalog_url == (
        f"postgresql://jip:{data['postgresql-password']}@jip-postgresql:5432/jip"
    )
    assert settings.index_url == "http://jip-opensearch:9200"
    assert settings.storage_url == "s3://jip-dicom/site?endpoint=jip-minio:9000&secure=false"
    assert settings.s3_secret_key is not None
    assert settings.s3_secret_key.get_secret_value() == data["minio-root-password"]
    assert settings.auth.issuer_url == "https://jip.hospital.local/keycloak/realms/jip"
    assert settings.auth.jwks_url is not None and "jip-keycloak:8080" in settings.auth.jwks_url
    assert settings.flow.airflow_url == "http://jip-airflow-api-server:8080"
    assert settings.flow.airflow_password == data["airflow-jip-password"]
    assert settings.http.trusted_proxies == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    assert str(settings.data_dir) == "/var/lib/jip"
    assert (settings.keycloak.recheck_s, settings.keycloak.unreachable_grace_s) == (30, 60)
    assert settings.metrics.allow == [] and settings.metrics.token_file is None


def test_production_settings_reach_the_pods(chart: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from jip.config import Settings

    for name, value in config_map(render(chart, PRODUCTION)).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.store.ae_title == "JIP_SITE_A"
    assert settings.store.allowed_calling_aets == ["PACS", "CT01"]
    assert settings.store.peers["pacs"].port == 104
    assert settings.store.listener_processes == 4
    assert settings.store.max_upload_bytes == 8 * 1024**3
    assert settings.meta.index_batch_size == 1000
    assert settings.http.trusted_proxies == ["10.244.0.0/16"]


def test_operator_pods_get_the_gpu_pool_from_values(
    chart: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's task pods build operator pods (runner_kubernetes) from these settings."""
    from tests.charts.support import task_pod_template

    from jip.config import Settings

    pod = task_pod_template(render(chart, PRODUCTION))
    assert pod is not None
    (base,) = pod["spec"]["containers"]
    for entry in base["env"]:
        if entry["name"].startswith("JIP_") and "value" in entry:
            monkeypatch.setenv(entry["name"], entry["value"])
    flow = Settings().flow
    assert flow.runner == "kubernetes"
    assert flow.kubernetes_namespace == NAMESPACE
    assert flow.gpu.node_selector == {"hospital.local/pool": "gpu"}
    assert flow.gpu.tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert flow.kubernetes_stage_image.startswith("registry.hospital.local/jip/jip@sha256:")


def test_a_changed_setting_rolls_the_pods(chart: Any) -> None:
    def checksum(values: Obj) -> str:
        template = deployment(render(chart, values), "store")["spec"]["template"]
        value: str = template["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum(MINIMAL) == checksum(MINIMAL)
    assert checksum(merged(MINIMAL, **{"config.logLevel": "DEBUG"})) != checksum(MINIMAL)


# --- DICOM -------------------------------------------------------------------------------


def test_dicom_service_exposes_the_configured_port(chart: Any) -> None:
    objects = render(chart, PRODUCTION)
    service = only(objects, "Service", named("dicom"))["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["loadBalancerIP"] == "10.20.1.50"
    assert service["externalTrafficPolicy"] == "Local"
    (port,) = service["ports"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (104, "dicom", "TCP")
    ports = {p["name"]: p["containerPort"] for p in container(objects, "dicom")["ports"]}
    assert ports["dicom"] == 11112
    assert config_map(objects)["JIP_STORE__DICOM_PORT"] == "11112"
    assert service["selector"] == deployment(objects, "dicom")["spec"]["selector"]["matchLabels"]


def test_dicom_service_can_be_a_node_port(chart: Any) -> None:
    values = merged(
        MINIMAL, **{"dicom.service": {"type": "NodePort", "port": 11112, "nodePort": 30104}}
    )
    service = only(render(chart, values), "Service", named("dicom"))["spec"]
    assert service["type"] == "NodePort"
    assert service["ports"][0]["nodePort"] == 30104
    assert "loadBalancerIP" not in service


# --- Ingress and TLS ---------------------------------------------------------------------


def ingress_routes(objects: list[Obj]) -> dict[str, str]:
    (rule,) = only(objects, "Ingress", RELEASE)["spec"]["rules"]
    return {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}


def routed_to(routes: dict[str, str], path: str) -> str:
    """The Service an Ingress's Prefix paths send ``path`` to (longest prefix wins)."""
    best = max(
        (p for p in routes if p == "/" or path == p or path.startswith(p.rstrip("/") + "/")),
        key=len,
    )
    return routes[best]


def test_ingress_sends_every_route_to_the_service_that_serves_it(chart: Any) -> None:
    routes = ingress_routes(render(chart, MINIMAL))
    for group, routers in ROUTER_GROUPS.items():
        for router in routers:
            for route in router.routes:
                if isinstance(route, APIRoute):
                    path = route.path.split("{")[0] or "/"
                    assert routed_to(routes, path) == named(group), f"{route.path} ({group})"
    assert routed_to(routes, "/keycloak/realms/jip") == named("keycloak")
    assert routed_to(routes, "/healthz") == named("base")


def test_ingress_terminates_tls_with_a_given_or_a_generated_certificate(chart: Any) -> None:
    given = only(render(chart, PRODUCTION), "Ingress", RELEASE)["spec"]
    assert given["tls"] == [{"hosts": ["jip.hospital.local"], "secretName": "jip-tls"}]
    assert given["ingressClassName"] == "nginx"
    assert not [o for o in render(chart, PRODUCTION) if o["metadata"]["name"] == "jip-tls"]
    objects = render(chart, MINIMAL)
    made = only(objects, "Secret", named("tls"))
    assert made["type"] == "kubernetes.io/tls"
    assert made["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    cert = base64.b64decode(made["data"]["tls.crt"]).decode()
    assert cert.startswith("-----BEGIN CERTIFICATE-----")
    assert only(objects, "Ingress", RELEASE)["spec"]["tls"][0]["secretName"] == named("tls")


# --- Observability -----------------------------------------------------------------------


@pytest.mark.parametrize("part", [*SERVICES, "federation"])
def test_every_jip_pod_carries_scrape_annotations(chart: Any, part: str) -> None:
    objects = render(chart, example("federation"))
    annotations = deployment(objects, part)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9102"  # the relay's, not the API's
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("part", [*SERVICES, "federation"])
def test_every_jip_pod_relays_its_loopback_metrics_on_a_port_of_its_own(
    chart: Any, part: str
) -> None:
    objects = render(chart, example("federation"))
    pod = containers(objects, part)
    assert set(pod) == {part, "metrics"}
    relay = pod["metrics"]
    assert relay["image"] == pod[part]["image"]
    assert relay["command"] == ["python", "-m", "jip.metrics", "relay"]
    assert relay["args"] == ["--port=9102", "--source=http://127.0.0.1:8000/metrics"]
    assert relay["ports"] == [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    assert relay["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert "env" not in relay and "envFrom" not in relay  # no settings, no credentials
    assert "JIP_METRICS__ALLOW" not in env_of(objects, part)  # JIP answers loopback only


def test_no_service_or_ingress_routes_the_metrics_port(chart: Any) -> None:
    for name in MATRIX:
        objects = render(chart, example(name))
        for service in (o for o in objects if o["kind"] == "Service"):
            for port in service["spec"]["ports"]:
                assert port.get("targetPort") != "metrics", (name, service["metadata"]["name"])
                assert port["port"] != 9102, (name, service["metadata"]["name"])
        for ingress in (o for o in objects if o["kind"] == "Ingress"):
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    assert path["backend"]["service"]["port"] != {"name": "metrics"}, name


def test_a_metrics_token_comes_from_a_secret_as_a_file(chart: Any) -> None:
    assert "JIP_METRICS__TOKEN_FILE" not in env_of(render(chart, MINIMAL), "store")
    objects = render(chart, merged(MINIMAL, **{"metrics.existingTokenSecret": "scrape-token"}))
    for part in SERVICES:
        env = env_of(objects, part)
        assert env["JIP_METRICS__TOKEN_FILE"]["value"] == "/var/run/secrets/jip-metrics/token"
        mounts = {m["name"]: m for m in container(objects, part)["volumeMounts"]}
        assert mounts["metrics-token"]["readOnly"] is True
        volumes = {
            v["name"]: v for v in deployment(objects, part)["spec"]["template"]["spec"]["volumes"]
        }
        assert volumes["metrics-token"]["secret"]["secretName"] == "scrape-token"


def test_grafana_dashboard_ships_as_a_labelled_configmap_using_jip_metrics(chart: Any) -> None:
    board = only(render(chart, MINIMAL), "ConfigMap", named("dashboard"))
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(board["data"]["jip.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "jip_dicom_cstore_total",
        "jip_dicom_cstore_seconds_bucket",
        "jip_store_bytes_total",
        "jip_index_lag_seconds",
        "jip_flow_runs",
        "jip_http_request_seconds_bucket",
        "jip_login_failures_total",
    ):
        assert metric in exprs, metric
    assert "by (state)" in exprs and "route" in exprs


# --- Values the schema refuses -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named_field"),
    [
        pytest.param({"postgresql.enabled": False}, "/externalPostgresql", id="pg-external-empty"),
        pytest.param({"minio.enabled": False}, "/externalMinio", id="s3-external-empty"),
        pytest.param({"opensearch.enabled": False}, "/externalOpensearch", id="os-external-empty"),
        pytest.param({"keycloak.enabled": False}, "/externalKeycloak", id="kc-external-empty"),
        pytest.param({"airflow.enabled": False}, "/externalAirflow", id="af-external-empty"),
        pytest.param({"federation.enabled": True}, "/federation/hub", id="fed-without-hub"),
        pytest.param({"config.store.dicomPort": 104}, "/config/store/dicomPort", id="port-104"),
        pytest.param(
            {"config.store.aeTitle": "A_TITLE_LONGER_THAN_16"}, "/config/store/aeTitle", id="ae"
        ),
        pytest.param({"config.store.aeTitle": "JIP\\1"}, "/config/store/aeTitle", id="ae-bs"),
        pytest.param({"dicom.service.nodePort": 104}, "/dicom/service/nodePort", id="nodeport"),
        pytest.param(
            {"podSecurityContext.runAsNonRoot": False},
            "/podSecurityContext/runAsNonRoot",
            id="root",
        ),
        pytest.param(
            {"securityContext.readOnlyRootFilesystem": False},
            "/securityContext/readOnlyRootFilesystem",
            id="writable-root",
        ),
        pytest.param({"store.resources.limits": None}, "/store/resources", id="no-limits"),
        pytest.param({"host": "JIP_Site"}, "/host", id="host"),
        pytest.param({"networkPolicy.dicomSources": ["10.20.0.0"]}, "/networkPolicy", id="cidr"),
        pytest.param({"images.jip.digest": "sha256:abc"}, "/images/jip/digest", id="digest"),
        pytest.param({"catalog": {"url": "postgresql://u:pw@h/db"}}, "'catalog'", id="old-url"),
        pytest.param(
            {"externalKeycloak.issuerUrl": "http://kc/realms/jip"},
            "/externalKeycloak",
            id="issuer-http",
        ),
    ],
)
def test_invalid_values_are_refused_naming_the_field(
    chart: Any, overrides: Obj, named_field: str
) -> None:
    assert named_field in rejection(chart, merged(MINIMAL, **overrides))


def test_auth_and_workflows_switched_off_need_no_identity_or_airflow(chart: Any) -> None:
    values = merged(EXTERNAL, **{"config.auth.enabled": False, "config.flow.enabled": False})
    del values["externalKeycloak"], values["externalAirflow"]
    objects = render(chart, values)
    data = config_map(objects)
    assert data["JIP_AUTH__ENABLED"] == "false"
    assert data["JIP_FLOW__AIRFLOW_ENABLED"] == "false"
    assert "JIP_AUTH__ISSUER_URL" not in data
    assert "JIP_AUTH__CLIENT_SECRET" not in env_of(objects, "base")


@pytest.mark.parametrize("part", API_SERVICES)
def test_api_services_are_cluster_internal(chart: Any, part: str) -> None:
    service = only(render(chart, MINIMAL), "Service", named(part))["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]


@pytest.mark.parametrize("part", SERVICES)
def test_disruption_budgets_select_their_service_and_never_block_a_drain(
    chart: Any, part: str
) -> None:
    objects = render(chart, MINIMAL)
    budget = only(objects, "PodDisruptionBudget", named(part))["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"] == deployment(objects, part)["spec"]["selector"]


@pytest.mark.parametrize("part", SERVICES)
def test_probes_hit_healthz_and_readyz_on_the_http_port(chart: Any, part: str) -> None:
    objects = render(chart, MINIMAL)
    main = container(objects, part)
    http = {p["name"]: p["containerPort"] for p in main["ports"]}["http"]
    assert str(http) == config_map(objects)["JIP_HTTP_PORT"]
    for probe, path in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        assert main[probe]["httpGet"] == {"path": path, "port": "http"}, probe
