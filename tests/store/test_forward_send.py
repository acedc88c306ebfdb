"""POST /api/dicom/send against Orthanc 1.10 from Debian as the peer: C-STORE and STOW-RS
deliver the series, and who may not send or read is refused (auth on), audited."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.base.conftest import cheap_password_hashing  # noqa: F401  (autouse)
from tests.store.conftest import Orthanc
from tests.support.network import free_port
from tests.support.send_site import SendSite, send_site

from jip.config import DicomPeer, DicomWebPeer

pytestmark = pytest.mark.orthanc


def series_in(orthanc: Orthanc, series_uid: str) -> list[Any]:
    """Orthanc's instances of the series (found through its REST API)."""
    query = {"Level": "Instance", "Query": {"SeriesInstanceUID": series_uid}}
    found: list[Any] = orthanc.post("/tools/find", query)
    return found


@pytest.fixture(scope="module")
def orthanc(make_orthanc: Callable[..., Orthanc]) -> Orthanc:
    return make_orthanc({}, dicomweb=True)


@pytest.fixture
def site(tmp_path: Path, orthanc: Orthanc) -> SendSite:
    web = DicomWebPeer(url=f"{orthanc.url}/dicom-web")
    down = DicomPeer(ae_title="DOWN", host="127.0.0.1", port=free_port())
    return send_site(
        tmp_path / "data",
        peers={"pacs": orthanc.peer(), "down": down},
        dicomweb_peers={"archive": web},
    )


def send(site: SendSite, user: str, peer: str, series: list[str]) -> Any:
    body = {"peer": peer, "series": series}
    return site.client.post("/api/dicom/send", json=body, headers=site.headers[user])


def test_an_admin_sends_a_series_by_c_store_and_orthanc_holds_it(
    site: SendSite, orthanc: Orthanc
) -> None:
    liver = site.series["liver"]
    response = send(site, "root", "pacs", [liver.series])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["protocol"], body["sent"], body["failed"]) == ("dimse", len(liver.sops), 0)
    assert len(series_in(orthanc, liver.series)) == len(liver.sops)
    [entry] = site.audit("dicom.send")
    assert (entry.username, entry.target, entry.detail["series"]) == (
        "root",
        "pacs",
        [liver.series],
    )


def test_a_listed_sender_sends_by_stow_rs_to_a_dicomweb_peer(
    site: SendSite, orthanc: Orthanc
) -> None:
    liver = site.series["liver"]
    response = send(site, "sam", "archive", [liver.series])
    assert response.status_code == 200, response.text
    assert (response.json()["protocol"], response.json()["sent"]) == ("dicomweb", len(liver.sops))
    assert len(series_in(orthanc, liver.series)) == len(liver.sops)


def test_a_researcher_who_may_read_but_not_send_is_refused_and_audited(
    site: SendSite, orthanc: Orthanc
) -> None:
    liver = site.series["liver"]
    assert (
        site.client.get("/api/dicom/send/peers", headers=site.headers["alice"]).status_code == 403
    )
    response = send(site, "alice", "pacs", [liver.series])
    assert response.status_code == 403
    assert "forward.senders" in response.json()["detail"]
    assert series_in(orthanc, liver.series) == []
    [entry] = site.audit("dicom.send.refused")
    assert (entry.username, entry.target) == ("alice", "pacs")


def test_a_sender_cannot_send_a_series_outside_their_projects(
    site: SendSite, orthanc: Orthanc
) -> None:
    other = site.series["other"]
    response = send(site, "sam", "pacs", [site.series["liver"].series, other.series])
    assert response.status_code == 404
    assert other.series in response.json()["detail"]
    assert series_in(orthanc, site.series["liver"].series) == []  # nothing sent at all


def test_an_unknown_peer_is_named_with_the_known_ones(site: SendSite) -> None:
    response = send(site, "root", "nowhere", [site.series["liver"].series])
    assert response.status_code == 404
    assert "archive" in response.json()["detail"] and "pacs" in response.json()["detail"]
    peers = site.client.get("/api/dicom/send/peers", headers=site.headers["sam"]).json()
    assert peers == [
        {"name": "archive", "protocol": "dicomweb"},
        {"name": "down", "protocol": "dimse"},
        {"name": "pacs", "protocol": "dimse"},
    ]


def test_a_peer_that_is_down_is_a_503_saying_which(site: SendSite) -> None:
    response = send(site, "root", "down", [site.series["liver"].series])
    assert response.status_code == 503
    assert "DOWN" in response.json()["detail"]
    assert site.audit("dicom.send.failed")[0].detail["peer"] == "down"


def test_a_run_sends_with_its_own_token_when_who_started_it_may(
    site: SendSite, orthanc: Orthanc
) -> None:
    liver, other = site.series["liver"], site.series["other"]
    identity = site.runtime.identity

    def as_run(run_id: str, started_by: str, series: str) -> Any:
        token = identity.issue_run_token(
            run_id=run_id, projects=["liver"], ttl_s=300, started_by=started_by
        )
        headers = {"Authorization": f"Bearer {token}"}
        body = {"peer": "pacs", "series": [series]}
        return site.client.post("/api/dicom/send", json=body, headers=headers)

    assert as_run("run-by-alice", "alice", liver.series).status_code == 403
    assert as_run("run-by-sam", "sam", other.series).status_code == 404  # not the run's project
    sent = as_run("run-by-sam-2", "sam", liver.series)
    assert sent.status_code == 200, sent.text
    assert len(series_in(orthanc, liver.series)) == len(liver.sops)
    assert [e.username for e in site.audit("dicom.send")] == ["run:run-by-sam-2"]
