"""Later rounds through the hub are sealed to each site (issue #13): the hub stores and
relays ciphertext only, each site gets and opens only its own entry, and a site the
round is not sealed to is not asked and is not waited for."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from tests.federation.hub.support import RunningHub
from tests.federation.hub.test_hub_jobs import post_result, sealed, status_of

from jip.errors import Forbidden
from jip.federation import DeclaredOutput, JobSpec, OutputKind, RoundRequest
from jip.federation.protocol import open_round, seal_round

# values a later round carries that only one site's data gave: never in the hub's files
CENTRE = 1234.56789012
THRESHOLDS = (987.65432101, 876.54321098)


def later_outputs() -> tuple[DeclaredOutput, ...]:
    return (
        DeclaredOutput(
            name="t.dev",
            kind=OutputKind.LEVENE_ROUND2,
            field="adc",
            groups=("PZ",),
            centres={"PZ": (CENTRE, 0.0)},
        ),
        DeclaredOutput(
            name="t.counts",
            kind=OutputKind.COUNT_AT_MOST,
            field="adc",
            groups=("PZ",),
            thresholds={"PZ": THRESHOLDS},
        ),
    )


def site_keys(hub: RunningHub) -> dict[str, str]:
    with hub.researcher() as client:
        answer = client.get("/api/sites")
    assert answer.status_code == 200, answer.text
    return {s["site_id"]: s["box_key"] for s in answer.json()}


def with_round1(hub: RunningHub, names: list[str], answering: list[str]) -> tuple[JobSpec, Any]:
    """A job at the sites ``names``, answered in round 1 by ``answering``."""
    clients = {name: hub.enrol(name) for name in names}
    spec = hub.job()
    hub.submit(spec)
    for name in answering:
        clients[name].post(f"/api/site/jobs/{spec.id}/ack")
        assert post_result(clients[name], sealed(spec, name)).status_code == 204
    return spec, clients


def post_round(hub: RunningHub, job_id: str, request: RoundRequest) -> httpx.Response:
    with hub.researcher() as client:
        return client.post(f"/api/jobs/{job_id}/rounds", json=request.model_dump(mode="json"))


def test_a_researcher_reads_the_enrolled_sites_keys(running_hub: RunningHub) -> None:
    running_hub.enrol("alpha")
    with running_hub.researcher() as client:
        listed = client.get("/api/sites").json()
    assert [s["site_id"] for s in listed] == ["alpha"]
    assert set(listed[0]) == {"site_id", "box_key", "identity_key"}
    with running_hub.anonymous() as client:
        assert client.get("/api/sites").status_code == 401


def test_the_hub_database_holds_no_byte_of_a_rounds_clear_outputs(
    running_hub: RunningHub,
) -> None:
    spec, clients = with_round1(running_hub, ["alpha", "beta"], ["alpha", "beta"])
    request = seal_round(spec.id, 2, later_outputs(), site_keys(running_hub))
    assert post_round(running_hub, spec.id, request).status_code == 204
    for name, client in clients.items():
        (got,) = client.get("/api/site/jobs").json()["rounds"]
        assert (
            open_round(RoundRequest.model_validate(got), name, running_hub.site_boxes[name].private)
            == later_outputs()
        )
    files = running_hub.hub.paths.data_dir.glob("hub.db*")
    stored = b"".join(path.read_bytes() for path in files)
    assert request.sealed["alpha"].encode() in stored  # the round is there, as ciphertext
    clear = [repr(CENTRE), *map(repr, THRESHOLDS), "t.dev", "t.counts", "levene_round2"]
    for text in clear:
        assert text.encode() not in stored, text


def test_each_site_gets_and_opens_only_its_own_entry(running_hub: RunningHub) -> None:
    spec, clients = with_round1(running_hub, ["alpha", "beta"], ["alpha", "beta"])
    request = seal_round(spec.id, 2, later_outputs(), site_keys(running_hub))
    assert post_round(running_hub, spec.id, request).status_code == 204
    (to_alpha,) = clients["alpha"].get("/api/site/jobs").json()["rounds"]
    given = RoundRequest.model_validate(to_alpha)
    assert list(given.sealed) == ["alpha"]
    assert given.sealed["alpha"] == request.sealed["alpha"]
    with pytest.raises(Forbidden, match="not sealed to site beta"):
        open_round(given, "beta", running_hub.site_boxes["beta"].private)
    with pytest.raises(Forbidden, match="does not open"):  # beta's entry, alpha's key
        open_round(request, "beta", running_hub.site_boxes["alpha"].private)


def test_a_site_missing_from_sealed_is_not_asked_nor_waited_for(running_hub: RunningHub) -> None:
    spec, clients = with_round1(running_hub, ["alpha", "beta"], ["alpha"])
    keys = site_keys(running_hub)
    request = seal_round(spec.id, 2, later_outputs(), {"alpha": keys["alpha"]})
    assert post_round(running_hub, spec.id, request).status_code == 204
    assert clients["beta"].get("/api/site/jobs").json()["rounds"] == []
    assert clients["beta"].post(f"/api/site/jobs/{spec.id}/ack", params={"round": 2}).is_error
    assert len(clients["alpha"].get("/api/site/jobs").json()["rounds"]) == 1
    assert not status_of(running_hub, spec.id)["finished"]  # alpha owes round 2
    assert post_result(clients["alpha"], sealed(spec, "alpha", round_=2)).status_code == 204
    status = status_of(running_hub, spec.id)
    assert status["delivered"] == ["alpha"] and status["k_reached"]
    assert status["finished"]  # beta was not asked: nothing is waited for
    running_hub.clock.advance(dt.timedelta(hours=2))
    beta = status_of(running_hub, spec.id)["sites"]["beta"]
    assert beta["state"] == "missed_deadline" and "round 1" in beta["reason"]


def test_a_round_one_answerer_left_out_of_a_round_is_named_so(running_hub: RunningHub) -> None:
    spec, _ = with_round1(running_hub, ["alpha", "beta"], ["alpha", "beta"])
    keys = site_keys(running_hub)
    request = seal_round(spec.id, 2, later_outputs(), {"alpha": keys["alpha"]})
    assert post_round(running_hub, spec.id, request).status_code == 204
    assert status_of(running_hub, spec.id)["delivered"] == []
    running_hub.clock.advance(dt.timedelta(hours=2))
    beta = status_of(running_hub, spec.id)["sites"]["beta"]
    assert beta["state"] == "missed_deadline"
    assert beta["reason"].startswith("not asked for round 2")


def test_the_same_sealed_round_again_is_taken_another_is_a_conflict(
    running_hub: RunningHub,
) -> None:
    spec, _ = with_round1(running_hub, ["alpha"], ["alpha"])
    keys = site_keys(running_hub)
    request = seal_round(spec.id, 2, later_outputs(), keys)
    assert post_round(running_hub, spec.id, request).status_code == 204
    assert post_round(running_hub, spec.id, request).status_code == 204
    resealed = seal_round(spec.id, 2, later_outputs(), keys)  # new ephemeral key: other bytes
    assert post_round(running_hub, spec.id, resealed).status_code == 409


def test_a_round_sealed_to_a_site_outside_the_job_is_refused(running_hub: RunningHub) -> None:
    spec, _ = with_round1(running_hub, ["alpha"], ["alpha"])
    late = running_hub.enrol("gamma")  # enrolled after the job: the job was not sent to it
    assert late is not None
    request = seal_round(spec.id, 2, later_outputs(), site_keys(running_hub))
    answer = post_round(running_hub, spec.id, request)
    assert answer.status_code == 400 and "not sent to site gamma" in answer.json()["detail"]
