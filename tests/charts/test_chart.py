"""charts/jip, the cluster shape: rendered offline by Helm's own engine (helm-python-sdk),
every manifest checked against the Kubernetes API schemas (kubernetes-validate, strict),
and the wiring that a site depends on asserted. Nothing here needs a cluster.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk renders the chart")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = Path(__file__).resolve().parents[2] / "charts" / "jip"
RELEASE = "jip"
NAMESPACE = "imaging"
ROLES = ("api", "dicom", "indexer")


def example(name: str) -> dict[str, Any]:
    """A values file the chart ships under ci/ (what docs/cluster-install.md points to)."""
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return values


MINIMAL = example("minimal")
PRODUCTION = example("production")

CATALOG_URL = PRODUCTION["catalog"]["url"]
INDEX_URL = PRODUCTION["index"]["url"]
SECRET_VALUES = (
    CATALOG_URL,
    INDEX_URL,
    PRODUCTION["storage"]["secretKey"],
    PRODUCTION["auth"]["clientSecret"],
    PRODUCTION["flow"]["airflowPassword"],
)


def merged(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """``base`` with dotted-path overrides, e.g. ``merged(MINIMAL, **{"auth.enabled": False})``."""
    values = copy.deepcopy(base)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values``, as an install would (schema included)."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml"):
            continue  # NOTES.txt
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def only(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def deployment(objects: list[dict[str, Any]], role: str) -> dict[str, Any]:
    return only(objects, "Deployment", f"{RELEASE}-{role}")


def container(objects: list[dict[str, Any]], role: str) -> dict[str, Any]:
    (main,) = deployment(objects, role)["spec"]["template"]["spec"]["containers"]
    return main


def env_of(objects: list[dict[str, Any]], role: str) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(objects, role)["env"]}


def config_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    return only(objects, "ConfigMap", RELEASE)["data"]


def secret_data(objects: list[dict[str, Any]]) -> dict[str, str]:
    data = only(objects, "Secret", RELEASE)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def rejection(chart: Any, values: dict[str, Any]) -> str:
    """The message ``helm install`` would print for ``values``."""
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(caught.value)


# --- Rendering and Kubernetes schemas ---------------------------------------------------


@pytest.mark.parametrize("kubernetes_version", ["1.27", "1.30", "latest"])
@pytest.mark.parametrize("values", [MINIMAL, PRODUCTION], ids=["minimal", "production"])
def test_every_manifest_passes_the_kubernetes_schema(
    chart: Any, values: dict[str, Any], kubernetes_version: str
) -> None:
    if kubernetes_version == "latest":
        kubernetes_version = kubernetes_validate.latest_version()
    objects = render(chart, values)
    kinds = {o["kind"] for o in objects}
    assert kinds >= {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
    }
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")


def test_helm_lint_finds_nothing_in_production_values(chart: Any) -> None:
    report = helm.lint(str(CHART), PRODUCTION, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_each_role_is_its_own_deployment_running_jip_up_with_that_role(chart: Any) -> None:
    objects = render(chart, PRODUCTION)
    for role in ROLES:
        assert container(objects, role)["args"] == ["up", "--role", role]
        assert container(objects, role)["image"] == "registry.hospital.local/jip:0.1.0"
    assert deployment(objects, "api")["spec"]["replicas"] == 3
    assert deployment(objects, "dicom")["spec"]["replicas"] == 2


def test_a_disabled_role_renders_no_objects(chart: Any) -> None:
    objects = render(chart, merged(MINIMAL, **{"dicom.enabled": False}))
    assert not [o for o in objects if o["metadata"]["name"] == f"{RELEASE}-dicom"]


def test_optional_objects_can_be_switched_off(chart: Any) -> None:
    values = merged(
        MINIMAL,
        **{
            "ingress.enabled": False,
            "networkPolicy.enabled": False,
            "podDisruptionBudget.enabled": False,
            "rbac.create": False,
            "serviceAccount.create": False,
            "serviceAccount.name": "imaging-workloads",
        },
    )
    objects = render(chart, values)
    kinds = {o["kind"] for o in objects}
    assert kinds == {"ConfigMap", "Secret", "Deployment", "Service"}
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)
    pod = deployment(objects, "api")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "imaging-workloads"


# --- Settings: what goes to the ConfigMap, what to the Secret ---------------------------


def test_api_gets_the_catalog_url_from_the_secret_never_the_configmap(chart: Any) -> None:
    objects = render(chart, PRODUCTION)
    ref = env_of(objects, "api")["JIP_CATALOG_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == RELEASE
    assert secret_data(objects)[ref["key"]] == CATALOG_URL
    assert ref["optional"] is False
    plain = "\n".join(f"{k}={v}" for k, v in config_map(objects).items())
    assert "JIP_CATALOG_URL" not in plain
    for secret in SECRET_VALUES:
        assert secret not in plain


def test_every_secret_setting_is_a_secret_reference_in_every_role(chart: Any) -> None:
    objects = render(chart, PRODUCTION)
    data = secret_data(objects)
    expected = {
        "JIP_CATALOG_URL": CATALOG_URL,
        "JIP_INDEX_URL": INDEX_URL,
        "JIP_S3_ACCESS_KEY": PRODUCTION["storage"]["accessKey"],
        "JIP_S3_SECRET_KEY": PRODUCTION["storage"]["secretKey"],
        "JIP_AUTH__CLIENT_SECRET": PRODUCTION["auth"]["clientSecret"],
        "JIP_FLOW__AIRFLOW_PASSWORD": PRODUCTION["flow"]["airflowPassword"],
    }
    for role in ROLES:
        env = env_of(objects, role)
        for name, value in expected.items():
            assert "value" not in env[name], f"{role}: {name} is inline"
            assert data[env[name]["valueFrom"]["secretKeyRef"]["key"]] == value


def test_an_existing_secret_is_referenced_and_none_is_rendered(chart: Any) -> None:
    values = merged(MINIMAL, **{"secrets.existingSecret": "jip-site-a-credentials"})
    del values["catalog"], values["index"]
    objects = render(chart, values)
    assert not [o for o in objects if o["kind"] == "Secret"]
    ref = env_of(objects, "api")["JIP_CATALOG_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "jip-site-a-credentials", "key": "catalog-url", "optional": False}


def test_configmap_and_secret_are_read_back_by_jip_settings(
    chart: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strings the chart writes are what jip.config.Settings parses in the pod."""
    from jip.config import Settings

    objects = render(chart, PRODUCTION)
    data = secret_data(objects)
    for name, value in config_map(objects).items():
        monkeypatch.setenv(name, value)
    for name, entry in env_of(objects, "api").items():
        if "valueFrom" in entry:
            monkeypatch.setenv(name, data[entry["valueFrom"]["secretKeyRef"]["key"]])
    monkeypatch.delenv("JIP_CONFIG", raising=False)

    settings = Settings()

    assert settings.catalog_url == CATALOG_URL
    assert settings.index_url == INDEX_URL
    assert settings.storage_url == PRODUCTION["storage"]["url"]
    assert settings.s3_secret_key is not None
    assert settings.s3_secret_key.get_secret_value() == PRODUCTION["storage"]["secretKey"]
    assert settings.http_host == "0.0.0.0"
    assert settings.store.ae_title == "JIP_SITE_A"
    assert settings.store.allowed_calling_aets == ["PACS", "CT01"]
    assert settings.store.peers["pacs"].port == 104
    assert settings.store.listener_processes == 4
    assert settings.store.max_upload_bytes == 8 * 1024**3
    assert settings.meta.index_batch_size == 1000
    assert settings.auth.issuer_url == PRODUCTION["auth"]["issuerUrl"]
    assert settings.flow.airflow_url == PRODUCTION["flow"]["airflowUrl"]
    assert settings.flow.airflow_password == PRODUCTION["flow"]["airflowPassword"]
    assert settings.flow.runner == "kubernetes"
    assert str(settings.data_dir) == "/var/lib/jip"


def test_a_changed_setting_rolls_the_pods(chart: Any) -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        annotations = deployment(render(chart, values), "api")["spec"]["template"]["metadata"]
        return annotations["annotations"]

    before = checksums(MINIMAL)
    new_config = checksums(merged(MINIMAL, **{"config.logLevel": "DEBUG"}))
    new_secret = checksums(merged(MINIMAL, **{"catalog.url": CATALOG_URL + "x"}))
    assert new_config["checksum/config"] != before["checksum/config"]
    assert new_secret["checksum/secret"] != before["checksum/secret"]


# --- DICOM -----------------------------------------------------------------------------


def test_dicom_service_exposes_the_configured_port(chart: Any) -> None:
    objects = render(chart, PRODUCTION)
    service = only(objects, "Service", f"{RELEASE}-dicom")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["loadBalancerIP"] == "10.20.1.50"
    assert service["externalTrafficPolicy"] == "Local"
    (port,) = service["ports"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (104, "dicom", "TCP")
    ports = {p["name"]: p["containerPort"] for p in container(objects, "dicom")["ports"]}
    assert ports["dicom"] == 11112
    assert config_map(objects)["JIP_STORE__DICOM_PORT"] == "11112"
    selector = deployment(objects, "dicom")["spec"]["selector"]["matchLabels"]
    assert service["selector"] == selector


def test_dicom_service_can_be_a_node_port(chart: Any) -> None:
    values = merged(
        MINIMAL, **{"dicom.service": {"type": "NodePort", "port": 11112, "nodePort": 30104}}
    )
    service = only(render(chart, values), "Service", f"{RELEASE}-dicom")["spec"]
    assert service["type"] == "NodePort"
    assert service["ports"][0]["nodePort"] == 30104
    assert "loadBalancerIP" not in service


def test_dicom_service_is_a_load_balancer_on_11112_by_default(chart: Any) -> None:
    service = only(render(chart, MINIMAL), "Service", f"{RELEASE}-dicom")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["ports"][0]["port"] == 11112


# --- Probes and pod security ------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_probes_hit_healthz_and_readyz_on_the_http_port(chart: Any, role: str) -> None:
    objects = render(chart, MINIMAL)
    main = container(objects, role)
    http = {p["name"]: p["containerPort"] for p in main["ports"]}["http"]
    assert str(http) == config_map(objects)["JIP_HTTP_PORT"]
    for probe, path in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        assert main[probe]["httpGet"] == {"path": path, "port": "http"}, probe


@pytest.mark.parametrize("role", ROLES)
def test_pods_run_non_root_on_a_read_only_root_filesystem(chart: Any, role: str) -> None:
    objects = render(chart, PRODUCTION)
    pod = deployment(objects, role)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    main = container(objects, role)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert main["resources"]["limits"]["memory"]


def test_only_the_api_mounts_a_kubernetes_token(chart: Any) -> None:
    objects = render(chart, MINIMAL)
    tokens = {
        role: deployment(objects, role)["spec"]["template"]["spec"]["automountServiceAccountToken"]
        for role in ROLES
    }
    assert tokens == {"api": True, "dicom": False, "indexer": False}


# --- Ingress, network policy, disruption budget, RBAC -----------------------------------


def test_ingress_routes_each_path_and_terminates_tls(chart: Any) -> None:
    ingress = only(render(chart, PRODUCTION), "Ingress", RELEASE)["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"hosts": ["jip.hospital.local"], "secretName": "jip-tls"}]
    (rule,) = ingress["rules"]
    assert rule["host"] == "jip.hospital.local"
    routes = {
        p["path"]: (p["backend"]["service"]["name"], p["backend"]["service"]["port"]["number"])
        for p in rule["http"]["paths"]
    }
    assert routes == {
        "/dicom-web": (f"{RELEASE}-api", 8000),
        "/api": (f"{RELEASE}-api", 8000),
        "/auth": ("keycloak", 80),
        "/": (f"{RELEASE}-api", 8000),
    }


def test_network_policies_let_in_only_the_ingress_controller_and_dicom(chart: Any) -> None:
    objects = render(chart, PRODUCTION)
    api = only(objects, "NetworkPolicy", f"{RELEASE}-api")["spec"]["ingress"]
    assert api[0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert api[0]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
    }
    dicom = only(objects, "NetworkPolicy", f"{RELEASE}-dicom")["spec"]["ingress"]
    assert dicom[0]["ports"] == [{"port": "dicom", "protocol": "TCP"}]
    assert [peer["ipBlock"]["cidr"] for peer in dicom[0]["from"]] == [
        "10.20.0.0/16",
        "10.30.4.7/32",
    ]
    # Every other rule is the metrics scrape, and only on the HTTP port.
    for rules in (api[1:], dicom[1:]):
        assert [r["ports"] for r in rules] == [[{"port": "http", "protocol": "TCP"}]]
    indexer = only(render(chart, MINIMAL), "NetworkPolicy", f"{RELEASE}-indexer")["spec"]
    assert indexer["policyTypes"] == ["Ingress"]
    assert indexer["ingress"] == []


@pytest.mark.parametrize("role", ROLES)
def test_disruption_budgets_select_their_role_and_never_block_a_drain(
    chart: Any, role: str
) -> None:
    objects = render(chart, MINIMAL)
    budget = only(objects, "PodDisruptionBudget", f"{RELEASE}-{role}")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"] == deployment(objects, role)["spec"]["selector"]


def test_runner_role_may_manage_operator_pods_and_read_their_logs_only(chart: Any) -> None:
    objects = render(chart, PRODUCTION)
    rules = only(objects, "Role", f"{RELEASE}-operator-runner")["rules"]
    granted = {(res, verb) for rule in rules for res in rule["resources"] for verb in rule["verbs"]}
    assert granted == {
        ("pods", "create"),
        ("pods", "get"),
        ("pods", "list"),
        ("pods", "watch"),
        ("pods", "delete"),
        ("pods/log", "get"),
    }
    assert all(rule["apiGroups"] == [""] for rule in rules)
    binding = only(objects, "RoleBinding", f"{RELEASE}-operator-runner")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE},
        {"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"},
    ]
    for role in ROLES:
        pod = deployment(objects, role)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == RELEASE


# --- Values the schema refuses ----------------------------------------------------------


def test_shipped_defaults_alone_are_refused_naming_every_missing_url(chart: Any) -> None:
    message = rejection(chart, {})
    for field in (
        "/catalog/url",
        "/index/url",
        "/storage/url",
        "/results/url",
        "/auth/issuerUrl",
        "/flow/airflowUrl",
    ):
        assert field in message


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        pytest.param({"catalog.url": ""}, "'/catalog/url': minLength", id="catalog-missing"),
        pytest.param(
            {"catalog.url": "sqlite:///var/lib/jip/catalog.db"}, "/catalog/url", id="catalog-sqlite"
        ),
        pytest.param({"storage.url": "file:///srv/jip/blobs"}, "/storage/url", id="storage-file"),
        pytest.param({"index.url": "opensearch:9200"}, "/index/url", id="index-no-scheme"),
        pytest.param({"auth.issuerUrl": ""}, "/auth/issuerUrl", id="issuer-missing"),
        pytest.param({"flow.airflowUrl": ""}, "/flow/airflowUrl", id="airflow-missing"),
        pytest.param({"config.store.dicomPort": 104}, "/config/store/dicomPort", id="port-104"),
        pytest.param(
            {"config.store.aeTitle": "A_TITLE_LONGER_THAN_16"}, "/config/store/aeTitle", id="ae"
        ),
        pytest.param({"config.store.aeTitle": "JIP\\1"}, "/config/store/aeTitle", id="ae-bs"),
        pytest.param(
            {"dicom.service.nodePort": 104}, "/dicom/service/nodePort", id="nodeport-range"
        ),
        pytest.param(
            {"podSecurityContext.runAsNonRoot": False},
            "/podSecurityContext/runAsNonRoot",
            id="root",
        ),
        pytest.param({"ingress.tls.enabled": True}, "/ingress/host", id="tls-without-host"),
        pytest.param(
            {"networkPolicy.dicomSources": ["10.20.0.0"]},
            "/networkPolicy/dicomSources/0",
            id="cidr",
        ),
        pytest.param({"catlog": {"url": CATALOG_URL}}, "'catlog'", id="typo"),
        pytest.param({"flow.runner": "subprocess"}, "/flow/runner", id="runner"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(
    chart: Any, overrides: dict[str, Any], named: str
) -> None:
    assert named in rejection(chart, merged(MINIMAL, **overrides))


def test_auth_and_workflows_switched_off_need_no_issuer_or_airflow(chart: Any) -> None:
    values = merged(MINIMAL, **{"auth.enabled": False, "flow.enabled": False})
    del values["auth"]["issuerUrl"], values["flow"]["airflowUrl"]
    data = config_map(render(chart, values))
    assert data["JIP_AUTH__ENABLED"] == "false"
    assert data["JIP_FLOW__AIRFLOW_ENABLED"] == "false"
    assert "JIP_AUTH__ISSUER_URL" not in data
