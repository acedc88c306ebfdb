"""`jip dicom echo|send|find|move` and ``/api/dicom`` against a running listener.

The listener is its own peer ("self"): a C-MOVE to it stores what it already has.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from jip import errors
from jip.base.auth import ANONYMOUS_ADMIN, require_admin
from jip.cli.main import _register, cli
from jip.errors import status_for
from jip.samples import image_series, random_patient, write_datasets
from jip.store.dimse.scu_routes import router

if TYPE_CHECKING:
    from tests.store.conftest import Listener


@pytest.fixture(scope="module")
def site(make_module_listener: Callable[..., Listener]) -> Listener:
    import socket

    from jip.config import DicomPeer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    itself = DicomPeer(ae_title="JIP", host="127.0.0.1", port=port)
    # The CLI calls as JIPCLI: a peer of the site (unknown AEs may not store or query).
    cli = DicomPeer(ae_title="JIPCLI", host="127.0.0.1", port=port)
    return make_module_listener(dicom_port=port, peers={"self": itself, "the-cli": cli})


@pytest.fixture
def jip(site: Listener, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Result]:
    peers = {"self": site.peer().model_dump()}
    monkeypatch.setenv("JIP_STORE__PEERS", json.dumps(peers))
    monkeypatch.setenv("JIP_STORE__AE_TITLE", "JIPCLI")
    _register()
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, ["--data-dir", str(tmp_path / "cli"), *args])

    return run


@pytest.fixture(scope="module")
def study(site: Listener, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    datasets = image_series(patient=random_patient(random.Random(3), 30), slices=3, rows=16, columns=16)  # fmt: skip
    return write_datasets(datasets, tmp_path_factory.mktemp("cli-study"))


def test_echo_by_peer_name_and_by_address(jip: Callable[..., Listener], site: Listener) -> None:
    result = jip("dicom", "echo", "--peer", "self", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == 0
    port = str(site.port)
    result = jip("dicom", "echo", "--host", "127.0.0.1", "--port", port, "--aet", "JIP")
    assert result.exit_code == 0 and "success" in result.stdout


def test_unknown_peer_is_an_error_listing_the_known_ones(jip: Callable[..., Listener]) -> None:
    result = jip("dicom", "echo", "--peer", "nope")
    assert result.exit_code != 0
    assert "unknown DICOM peer 'nope'" in result.output and "self" in result.output


def test_send_find_and_move(
    jip: Callable[..., Listener], study: list[Path], site: Listener
) -> None:
    sent = jip("dicom", "send", "--peer", "self", "--json", str(study[0].parent))
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout) == {"sent": 3, "failed": []}

    patient_id = "PAT00030"
    found = jip("dicom", "find", "--peer", "self", "--json", f"PatientID={patient_id}")
    assert found.exit_code == 0, found.output
    rows = json.loads(found.stdout)
    assert len(rows) == 1 and rows[0]["NumberOfStudyRelatedInstances"] == "3"
    study_uid = rows[0]["StudyInstanceUID"]

    series = jip("dicom", "find", "--peer", "self", "--level", "series", "--json", f"StudyInstanceUID={study_uid}", "Modality")  # fmt: skip
    assert [r["Modality"] for r in json.loads(series.stdout)] == ["CT"]

    moved = jip("dicom", "move", "--peer", "self", "--dest", "JIP", "--json", f"StudyInstanceUID={study_uid}")  # fmt: skip
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout)["completed"] == 3


def test_move_needs_a_level_or_a_unique_key(jip: Callable[..., Listener]) -> None:
    result = jip("dicom", "move", "--peer", "self", "PatientName=X*")
    assert result.exit_code == 2
    assert "unique key" in result.output


def test_http_api_echo_find_move_for_configured_peers(site: Listener, study: list[Path]) -> None:
    from jip.store.dimse import scu

    settings = site.settings
    assert not scu.send(settings, site.peer(), study).failed
    app = FastAPI()
    app.include_router(router)
    app.state.runtime = SimpleNamespace(settings=settings, engine=site.runtime.engine)
    app.dependency_overrides[require_admin] = lambda: ANONYMOUS_ADMIN

    async def jip_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.JipError)
        return JSONResponse({"detail": str(exc)}, status_code=status_for(exc))

    app.add_exception_handler(errors.JipError, jip_error)  # as jip.app does
    client = TestClient(app)
    assert client.get("/api/dicom/peers").json()[0]["name"] == "self"
    assert client.post("/api/dicom/peers/self/echo").json()["status"] == 0
    found = client.post(
        "/api/dicom/peers/self/find",
        json={"level": "STUDY", "keys": {"PatientID": "PAT00030", "StudyInstanceUID": ""}},
    )
    assert found.status_code == 200, found.text
    study_uid = found.json()[0]["0020000D"]["Value"][0]
    moved = client.post(
        "/api/dicom/peers/self/move",
        json={"destination": "JIP", "keys": {"StudyInstanceUID": study_uid}},
    )
    assert moved.json()["completed"] == 3
    unknown = client.post("/api/dicom/peers/nope/echo")
    assert unknown.status_code == 404 and "known peers: self" in unknown.json()["detail"]
