"""A real embedded Airflow for the flow tests: started once per session, on a free port.

It runs in a temporary AIRFLOW_HOME with the repository's ``dags/`` as its DAGs folder,
so `jip-selftest` is there. Only tests that ask for ``airflow`` or ``engine`` start it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jip.config import FlowSettings, Settings
from jip.errors import NotFound
from jip.flow.airflow_process import EmbeddedAirflow, repository_dags_folder
from jip.flow.engine_airflow import AirflowEngine

SELFTEST = "jip-selftest"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_settings(data_dir: Path, port: int) -> Settings:
    return Settings(
        data_dir=data_dir,
        flow=FlowSettings(
            airflow_host="127.0.0.1",
            airflow_port=port,
            dags_folder=repository_dags_folder(),
            max_parallel_series=4,
        ),
    )


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedAirflow]:
    settings = site_settings(tmp_path_factory.mktemp("jip-data"), free_port())
    with EmbeddedAirflow(settings) as running:
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


@pytest.fixture
def unused_port() -> int:
    """A local port nothing listens on."""
    return free_port()
