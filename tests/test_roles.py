"""`jip up --role`: each service of the cluster shape serves its own routes, probes and
/metrics, and nothing of the others (an Ingress that routes a path to the wrong
Deployment gets a 404, never another service's answer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jip.app import ROUTER_GROUPS, ROUTERS, build_app
from jip.config import Settings
from jip.embedded import Role, meta_indexer, rule_component, service_components
from jip.runtime import Runtime, build_runtime

# One path of every router group, with the method it answers.
OWN_PATHS: dict[str, list[tuple[str, str]]] = {
    "store": [
        ("GET", "/dicom-web/studies"),
        ("GET", "/api/store/stats"),
        ("GET", "/api/dicom/peers"),
    ],
    "meta": [("POST", "/api/meta/search"), ("GET", "/api/meta/cohorts")],
    "flow": [("GET", "/api/flow/workflows")],
    "base": [
        ("GET", "/api/projects"),
        ("GET", "/api/projects/rules"),
        ("GET", "/api/me"),
        ("GET", "/api/audit"),
        ("GET", "/api/admin/status"),
        ("GET", "/ui/explore"),
    ],
}
REFUSED = {401, 303}  # no token: the API says 401, a page redirects to the login
SERVICE_ROLES = (Role.STORE, Role.META, Role.FLOW, Role.BASE)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    # Auth on (the default): every access check below runs as it does in a site.
    built = build_runtime(Settings(data_dir=tmp_path_factory.mktemp("roles")))
    yield built
    built.close()


def client_for(runtime: Runtime, role: Role) -> TestClient:
    return TestClient(build_app(runtime, groups=role.router_groups))


def test_router_groups_split_every_router_exactly_once() -> None:
    grouped = [id(r) for group in ROUTER_GROUPS.values() for r in group]
    assert sorted(grouped) == sorted(id(r) for r in ROUTERS)


@pytest.mark.parametrize("role", SERVICE_ROLES, ids=str)
def test_a_service_role_answers_its_paths_and_404s_the_others(runtime: Runtime, role: Role) -> None:
    client = client_for(runtime, role)
    for group, paths in OWN_PATHS.items():
        for method, path in paths:
            status = client.request(method, path, follow_redirects=False).status_code
            if group == role.value:
                # Served, and refused without a token (pages send to the login page): the
                # guard holds in every role.
                assert status in REFUSED, f"{role}: {method} {path} gave {status}"
            else:
                assert status == 404, f"{role} serves {group}'s {method} {path} ({status})"


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_every_role_serves_probes_and_metrics_without_a_token(runtime: Runtime, role: Role) -> None:
    client = client_for(runtime, role)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("role", [Role.DICOM, Role.INDEXER, Role.FEDERATION], ids=str)
def test_background_roles_serve_no_api(runtime: Runtime, role: Role) -> None:
    client = client_for(runtime, role)
    for paths in OWN_PATHS.values():
        for method, path in paths:
            assert client.request(method, path).status_code == 404, path


@pytest.mark.parametrize("role", [Role.ALL, Role.API], ids=str)
def test_all_and_api_serve_every_service(runtime: Runtime, role: Role) -> None:
    client = client_for(runtime, role)
    for paths in OWN_PATHS.values():
        for method, path in paths:
            assert client.request(method, path, follow_redirects=False).status_code in REFUSED


def test_a_token_opens_the_role_it_was_sent_to(runtime: Runtime) -> None:
    from jip.embedded import with_service_token

    token = with_service_token(runtime.settings, runtime, purpose="test-roles").api_token
    assert token is not None
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    assert client_for(runtime, Role.STORE).get("/api/store/stats", headers=headers).is_success
    assert client_for(runtime, Role.BASE).get("/api/me", headers=headers).is_success
    assert client_for(runtime, Role.BASE).get("/api/store/stats", headers=headers).status_code == (
        404
    )


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_each_role_runs_only_its_own_background_work(tmp_path: Path, role: Role) -> None:
    # Airflow runs elsewhere (its URL is set), as in the cluster shape.
    settings = Settings(data_dir=tmp_path, flow={"airflow_url": "http://airflow:8080"})
    names = {c.name for c in service_components(settings, role)}
    indexer = meta_indexer(settings).name
    rules = rule_component(settings).name
    assert (indexer in names) == (role in (Role.ALL, Role.INDEXER))
    assert (rules in names) == (role in (Role.ALL, Role.FLOW))
    if role in (Role.STORE, Role.META, Role.BASE, Role.DICOM, Role.API, Role.FEDERATION):
        assert names == set(), f"{role} runs {names}"  # HTTP (or DIMSE) only


def test_migrate_only_brings_the_catalog_up_to_date_and_exits(tmp_path: Path) -> None:
    """What the chart's migrations hook runs once per install or upgrade."""
    from click.testing import CliRunner
    from sqlalchemy import create_engine, inspect

    from jip.cli.main import _register, cli

    _register()
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "up", "--migrate-only"])
    assert result.exit_code == 0, result.output
    assert "is up to date" in result.output
    engine = create_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        assert "alembic_version" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert not (tmp_path / "jip-up.json").exists()  # nothing kept running
