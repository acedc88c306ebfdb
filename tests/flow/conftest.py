"""A real embedded Airflow for the flow tests: started once per session, on a free port.

It runs in a temporary AIRFLOW_HOME with the repository's ``dags/`` as its DAGs folder,
so `jip-selftest` and JIP's workflows are there. Its tasks get the ``JIP_*`` variables
of a test site (as `jip up` gives them): the ``site`` fixture serves that site's API
(Runtime + build_app under uvicorn, auth disabled) on the port the tasks call. Only
tests that ask for ``airflow``, ``engine`` or ``site`` start them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.support.network import free_port
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.config import AuthSettings, FlowSettings, MetaSettings, Settings
from jip.errors import NotFound
from jip.flow.airflow_home import repository_dags_folder
from jip.flow.component import task_environment
from jip.flow.embedded_airflow import EmbeddedAirflow
from jip.flow.engine_airflow import AirflowEngine
from jip.runtime import Runtime, build_runtime

SELFTEST = "jip-selftest"


def site_settings(data_dir: Path, port: int, http_port: int | None = None) -> Settings:
    return Settings(
        data_dir=data_dir,
        http_host="127.0.0.1",
        http_port=http_port or free_port(),
        auth=AuthSettings(enabled=False),
        meta=MetaSettings(series_quiet_period_s=2.0),
        flow=FlowSettings(
            airflow_host="127.0.0.1",
            airflow_port=port,
            dags_folder=repository_dags_folder(),
            max_parallel_series=4,
            rule_interval_s=1.0,
            review_poll_s=1.0,
            # Operators run as JIP's user here: the test machine's Python may live where
            # the operator user cannot run it (/root);
            # tests/flow/worker/test_operator_isolation.py covers the isolation.
            operator_isolation="none",
        ),
    )


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedAirflow]:
    settings = site_settings(tmp_path_factory.mktemp("jip-data"), free_port())
    with EmbeddedAirflow(settings, extra_env=task_environment(settings)) as running:
        yield running


@pytest.fixture(scope="session")
def engine(airflow: EmbeddedAirflow) -> Iterator[AirflowEngine]:
    client = AirflowEngine.from_settings(airflow.settings)
    wait_for_workflow(client, SELFTEST)
    yield client
    client.close()


def wait_for_workflow(engine: AirflowEngine, dag_id: str, timeout_s: float = 120.0) -> None:
    """The dag-processor parses new files a few seconds after start."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            engine.get_workflow(dag_id)
            return
        except NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


@dataclass
class Site:
    """A running test site: its settings, adapters, API client and workflow engine."""

    settings: Settings
    runtime: Runtime
    api: httpx.Client
    engine: AirflowEngine


@pytest.fixture(scope="session")
def site(airflow: EmbeddedAirflow, engine: AirflowEngine) -> Iterator[Site]:
    settings = airflow.settings
    runtime = build_runtime(settings)
    app = build_app(runtime)
    with serve_in_thread(app, host=settings.http_host, port=settings.http_port) as base:
        for dag_id in ("organ-seg-radiomics", "deidentify", "convert-nifti", "annotate-review"):
            wait_for_workflow(engine, dag_id)
        with httpx.Client(base_url=base, timeout=60) as api:
            yield Site(settings=settings, runtime=runtime, api=api, engine=engine)
    runtime.close()


@pytest.fixture
def unused_port() -> int:
    """A local port nothing listens on."""
    return free_port()
