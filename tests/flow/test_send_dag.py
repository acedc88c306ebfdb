"""dags/send.py: its shape, and its task asking a real site (uvicorn) to send with the
run's own token, retried only while the peer is away; Orthanc 1.10 is the peer."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.base.conftest import cheap_password_hashing  # noqa: F401  (autouse)
from tests.store.conftest import Orthanc, make_orthanc  # noqa: F401  (fixture)
from tests.store.test_forward_send import series_in
from tests.support.network import free_port
from tests.support.send_site import SendSite, send_site
from tests.support.servers import serve_in_thread

from jip.config import DicomPeer
from jip.errors import Invalid
from jip.flow.airflow_home import repository_dags_folder
from jip.flow.worker.api_client import JipClient
from jip.flow.workflows import check_params
from jip.ui import workflow_form

DAG_FILE = repository_dags_folder() / "send.py"


def test_the_send_workflow_sends_each_series_in_one_retried_task() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors
    dag = bag.dags["send"]
    assert sorted(dag.task_dict) == ["cleanup", "list_series", "series.send_series"]
    task = dag.task_dict["series.send_series"]
    assert (task.retries, task.retry_exponential_backoff) == (4, True)
    assert dag.params["send"] == {"peer": ""}
    # The workflow page offers the peer as a field; a bad name is refused before the run.
    schema = {
        "type": "object",
        "properties": {k: {**p.schema, "default": p.value} for k, p in dag.params.items()},
    }
    [form] = [op for op in workflow_form.operators(schema) if op.name == "send"]
    assert [f.name for f in form.fields] == ["send.peer"]
    check_params({"send": {"peer": "pacs"}}, schema)
    with pytest.raises(Invalid, match="send/peer"):
        check_params({"send": {"peer": "no such; peer"}}, schema)


@pytest.fixture(scope="module")
def orthanc(make_orthanc: Callable[..., Orthanc]) -> Orthanc:  # noqa: F811
    return make_orthanc({})


@pytest.fixture
def site(tmp_path: Path, orthanc: Orthanc) -> SendSite:
    down = DicomPeer(ae_title="DOWN", host="127.0.0.1", port=free_port())
    return send_site(tmp_path / "data", peers={"pacs": orthanc.peer(), "down": down})


@pytest.fixture
def dag_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jip_dag_send_under_test", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_task(
    site: SendSite, dag_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """Calls the task as Airflow would, for a run started by ``started_by`` with ``peer``."""
    with serve_in_thread(site.client.app) as origin:  # type: ignore[arg-type]

        def run(series_uid: str, *, peer: str, started_by: str = "sam") -> Any:
            token = site.runtime.identity.issue_run_token(
                run_id=f"send-{started_by}-{peer}",
                projects=["liver"],
                ttl_s=300,
                started_by=started_by,
            )
            monkeypatch.setattr(
                dag_module, "get_current_context", lambda: {"params": {"send": {"peer": peer}}}
            )
            monkeypatch.setattr(
                dag_module, "task_client", lambda _context: JipClient(origin, token=token)
            )
            return dag_module.send_series.function(series_uid)

        yield run


@pytest.mark.orthanc
def test_the_task_sends_with_the_run_token_and_orthanc_holds_the_series(
    site: SendSite, orthanc: Orthanc, run_task: Callable[..., Any]
) -> None:
    liver = site.series["liver"]
    report = run_task(liver.series, peer="pacs")
    assert (report["sent"], report["failed"]) == (len(liver.sops), 0)
    assert len(series_in(orthanc, liver.series)) == len(liver.sops)


@pytest.mark.orthanc
def test_the_task_fails_for_good_on_a_refusal_and_for_now_while_the_peer_is_down(
    site: SendSite, run_task: Callable[..., Any]
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    liver = site.series["liver"].series
    with pytest.raises(AirflowFailException, match="may not send"):
        run_task(liver, peer="pacs", started_by="alice")
    with pytest.raises(AirflowFailException, match="names no peer"):
        run_task(liver, peer="")
    with pytest.raises(RuntimeError, match="failed for now") as away:
        run_task(liver, peer="down")
    assert not isinstance(away.value, AirflowFailException)  # Airflow retries it
