"""A run acts with its own token, on a site with authentication on and 60 s user tokens.

A real embedded Airflow of its own (the session's test site runs with auth off) and the
annotate-review workflow: the researcher starts it with a token that lives 60 s (plus
the 30 s clock-skew leeway), the human step waits until that token is long refused,
then the run goes on (the radiomics step stages, runs and delivers through the API) and
finishes. The run's token is never in the run's conf, and once the run ended it is
refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from jip_sdk.phantom import build_abdomen_phantom
from tests.base.support import PASSWORD, add_user
from tests.flow.conftest import site_settings, wait_for_workflow
from tests.flow.support import ingest_phantom, series_state, wait_for
from tests.support.network import free_port
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.base.schema import ProjectRole
from jip.config import AuthSettings
from jip.errors import NotFound
from jip.flow.component import task_environment
from jip.flow.embedded_airflow import EmbeddedAirflow
from jip.flow.engine_airflow import AirflowEngine
from jip.runtime import Runtime, build_runtime

pytestmark = pytest.mark.slow

DAG = "annotate-review"
TOKEN_TTL_S = 60
# Past the token's life and the verifier's 30 s leeway.
USER_TOKEN_REFUSED_AFTER_S = TOKEN_TTL_S + 30 + 5


@dataclass
class AuthSite:
    runtime: Runtime
    base_url: str
    engine: AirflowEngine
    # Run id -> the token the site issued to the run (captured for the test).
    run_tokens: dict[str, str] = field(default_factory=dict)

    def login(self, username: str) -> str:
        answer = httpx.post(
            f"{self.base_url}/auth/token",
            data={"grant_type": "password", "client_id": "jip-cli",
                  "username": username, "password": PASSWORD},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    def get(self, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{self.base_url}{path}", headers=headers, timeout=60, **kwargs)

    def post(self, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.post(f"{self.base_url}{path}", headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def auth_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthSite]:
    settings = site_settings(tmp_path_factory.mktemp("jip-auth-site"), free_port())
    settings = settings.model_copy(
        update={"auth": AuthSettings(enabled=True, access_token_ttl_s=TOKEN_TTL_S)}
    )
    runtime = build_runtime(settings)
    add_user(runtime, "rita", projects={"default": ProjectRole.RESEARCHER})
    site = AuthSite(runtime=runtime, base_url="", engine=AirflowEngine.from_settings(settings))
    issue = runtime.identity.issue_run_token

    def capture(**kwargs: Any) -> str:
        token = issue(**kwargs)
        site.run_tokens[kwargs["run_id"]] = token
        return token

    runtime.identity.issue_run_token = capture  # type: ignore[method-assign]
    with EmbeddedAirflow(settings, extra_env=task_environment(settings)):
        app = build_app(runtime)
        with serve_in_thread(app, host=settings.http_host, port=settings.http_port) as base:
            site.base_url = base
            wait_for_workflow(site.engine, DAG)
            yield site
    site.engine.close()
    runtime.close()


def test_a_run_outlives_its_starters_token_and_its_own_token_ends_with_it(
    auth_site: AuthSite, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ct = ingest_phantom(
        auth_site.runtime, build_abdomen_phantom(), tmp_path_factory.mktemp("ct") / "ct",
        patient_id="E2E-RUN-TOKEN",
    )  # fmt: skip
    uid = ct.series_instance_uid
    logged_in = time.monotonic()
    user_token = auth_site.login("rita")
    started = auth_site.post(f"/api/flow/workflows/{DAG}/runs", user_token, json={"series": [uid]})
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    run_token = auth_site.run_tokens[run_id]
    conf = auth_site.engine.get_run(DAG, run_id).conf
    assert run_token not in str(conf) and user_token not in str(conf)

    def waiting() -> bool | None:
        detail = auth_site.get(f"/api/flow/runs/{run_id}", auth_site.login("rita")).json()
        assert detail["state"] == "running", detail
        return True if series_state(detail, uid)["tasks"].get("annotate") == "waiting" else None

    wait_for("the run to wait at its human step", waiting, timeout_s=300, every_s=2)
    # The human step waits until the starter's token is long refused.
    time.sleep(max(0.0, logged_in + USER_TOKEN_REFUSED_AFTER_S - time.monotonic()))
    assert auth_site.get(f"/api/flow/runs/{run_id}", user_token).status_code == 401
    marked = auth_site.post(f"/api/flow/runs/{run_id}/tasks/annotate/done", auth_site.login("rita"))
    assert marked.status_code == 200, marked.text

    def finished() -> dict[str, Any] | None:
        detail: dict[str, Any] = auth_site.get(
            f"/api/flow/runs/{run_id}", auth_site.login("rita")
        ).json()
        return detail if detail["state"] in ("success", "failed", "cancelled") else None

    detail = wait_for(f"run {run_id} to finish", finished, timeout_s=300, every_s=2)
    assert detail["state"] == "success", detail["per_series"]
    results = auth_site.get(f"/api/flow/runs/{run_id}/results", auth_site.login("rita")).json()
    assert any(r["name"].endswith("radiomics.csv") for r in results), results
    # Ended (and looked at): the run's token is refused and its connection is gone.
    assert auth_site.get(f"/api/flow/runs/{run_id}", run_token).status_code == 401
    with pytest.raises(NotFound):
        auth_site.engine.rest.call(
            "GET", f"/api/v2/connections/jip_run_{run_id}", what="the run's connection"
        )
