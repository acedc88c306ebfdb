"""Jobs through the hub served over HTTPS: a researcher submits, enrolled sites poll
with their client certificates, acknowledge, report state and post sealed results; the
hub keeps ciphertext only and settles k of n at the deadline without waiting."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import httpx
from tests.federation.hub.support import RunningHub

from jip.federation import (
    DeclaredOutput,
    JobSpec,
    OutputKind,
    RoundRequest,
    SiteJobState,
    SiteJobStatus,
    SiteResult,
    open_result,
    seal_result,
)
from jip.federation.protocol import open_round, seal_round

KNOWN_VALUE = 918273.645  # in the sealed payload; must not be readable in the hub's files


def post_state(site: httpx.Client, job_id: str, name: str, state: SiteJobState) -> None:
    status = SiteJobStatus(
        job_id=job_id, site_id=name, state=state, updated_at=dt.datetime.now(dt.UTC)
    )
    answer = site.post(f"/api/site/jobs/{job_id}/state", json=status.model_dump(mode="json"))
    assert answer.status_code == 204, answer.text


def sealed(spec: JobSpec, name: str, value: float = KNOWN_VALUE, round_: int = 1) -> SiteResult:
    return seal_result(spec.id, name, round_, {"n": {"all": value}}, spec.researcher_key)


def post_result(site: httpx.Client, result: SiteResult) -> httpx.Response:
    return site.post(f"/api/site/jobs/{result.job_id}/results", json=result.model_dump(mode="json"))


def status_of(hub: RunningHub, job_id: str) -> dict[str, Any]:
    with hub.researcher() as client:
        answer = client.get(f"/api/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_job_is_sent_until_acknowledged_and_never_after(running_hub: RunningHub) -> None:
    site = running_hub.enrol("alpha")
    spec = running_hub.job()
    running_hub.submit(spec)
    for _ in range(2):  # a site that crashed before acking gets it again
        jobs = site.get("/api/site/jobs").json()["jobs"]
        assert [JobSpec.model_validate(j) for j in jobs] == [spec]
    assert site.post(f"/api/site/jobs/{spec.id}/ack").status_code == 204
    assert site.get("/api/site/jobs").json() == {"jobs": [], "rounds": []}
    assert status_of(running_hub, spec.id)["sites"]["alpha"]["state"] == "queued"


def test_state_and_a_sealed_result_reach_the_researcher(running_hub: RunningHub) -> None:
    site = running_hub.enrol("alpha")
    spec = running_hub.job()
    running_hub.submit(spec)
    site.post(f"/api/site/jobs/{spec.id}/ack")
    post_state(site, spec.id, "alpha", SiteJobState.RUNNING)
    assert status_of(running_hub, spec.id)["sites"]["alpha"]["state"] == "running"
    assert post_result(site, sealed(spec, "alpha")).status_code == 204
    post_state(site, spec.id, "alpha", SiteJobState.DONE)
    status = status_of(running_hub, spec.id)
    assert status["sites"]["alpha"]["state"] == "done"
    assert (status["delivered"], status["k_reached"], status["finished"]) == (["alpha"], True, True)
    with running_hub.researcher() as client:
        (result,) = [
            SiteResult.model_validate(r) for r in client.get(f"/api/jobs/{spec.id}/results").json()
        ]
    assert open_result(result, running_hub.researcher_keys.private) == {"n": {"all": KNOWN_VALUE}}


def test_a_result_posted_twice_is_stored_once_and_another_body_is_409(
    running_hub: RunningHub,
) -> None:
    site = running_hub.enrol("alpha")
    spec = running_hub.job()
    running_hub.submit(spec)
    first = sealed(spec, "alpha")
    assert post_result(site, first).status_code == 204
    assert post_result(site, first).status_code == 204  # a retry after a lost answer
    conflict = post_result(site, sealed(spec, "alpha", value=1.0))
    assert conflict.status_code == 409
    assert "already sent another result" in conflict.json()["detail"]
    with running_hub.researcher() as client:
        kept = client.get(f"/api/jobs/{spec.id}/results").json()
    assert kept == [first.model_dump(mode="json")]


def test_a_site_cannot_post_for_another_site_or_a_job_not_sent_to_it(
    running_hub: RunningHub,
) -> None:
    alpha, _ = running_hub.enrol("alpha"), running_hub.enrol("beta")
    spec = running_hub.job()
    running_hub.submit(spec)
    assert post_result(alpha, sealed(spec, "beta")).status_code == 403
    late_site = running_hub.enrol("gamma")  # enrolled after the job was submitted
    assert post_result(late_site, sealed(spec, "gamma")).status_code == 404
    assert late_site.get("/api/site/jobs").json()["jobs"] == []


def test_the_hub_database_holds_no_readable_result(running_hub: RunningHub) -> None:
    site = running_hub.enrol("alpha")
    spec = running_hub.job()
    running_hub.submit(spec)
    assert post_result(site, sealed(spec, "alpha")).status_code == 204
    stored = b"".join(path.read_bytes() for path in running_hub.hub.paths.data_dir.glob("hub.db*"))
    assert spec.id.encode() in stored  # the job is there ...
    assert str(KNOWN_VALUE).encode() not in stored  # ... its result only as ciphertext
    assert b'"outputs"' not in stored.replace(b'"outputs":[', b"")  # no opened envelope


def test_k_of_n_at_the_deadline_names_the_site_that_did_not_deliver(
    running_hub: RunningHub,
) -> None:
    alpha, beta = running_hub.enrol("alpha"), running_hub.enrol("beta")
    gamma = running_hub.enrol("gamma")
    spec = running_hub.job(min_sites=2, deadline_in=dt.timedelta(minutes=10))
    running_hub.submit(spec)
    assert post_result(alpha, sealed(spec, "alpha")).status_code == 204
    assert post_result(beta, sealed(spec, "beta")).status_code == 204
    post_state(gamma, spec.id, "gamma", SiteJobState.RUNNING)
    before = status_of(running_hub, spec.id)
    assert before["k_reached"] and not before["finished"]  # gamma may still deliver
    running_hub.clock.advance(dt.timedelta(minutes=11))
    after = status_of(running_hub, spec.id)
    assert (after["k_reached"], after["finished"]) == (True, True)
    assert after["delivered"] == ["alpha", "beta"]
    assert after["missed_deadline"] == ["gamma"]
    assert after["sites"]["gamma"]["state"] == "missed_deadline"
    assert "deadline" in after["sites"]["gamma"]["reason"]
    late = post_result(gamma, sealed(spec, "gamma"))
    assert late.status_code == 409  # the outcome is settled; nothing is waited for
    assert gamma.get("/api/site/jobs").json()["jobs"] == []


def test_k_not_reached_at_the_deadline_is_finished_and_says_so(running_hub: RunningHub) -> None:
    alpha, _ = running_hub.enrol("alpha"), running_hub.enrol("beta")
    spec = running_hub.job(min_sites=2, deadline_in=dt.timedelta(minutes=10))
    running_hub.submit(spec)
    post_result(alpha, sealed(spec, "alpha"))
    running_hub.clock.advance(dt.timedelta(minutes=11))
    status = status_of(running_hub, spec.id)
    assert (status["k_reached"], status["finished"], status["missed_deadline"]) == (
        False,
        True,
        ["beta"],
    )


def test_a_refusal_is_reported_with_its_reason_not_as_a_missed_deadline(
    running_hub: RunningHub,
) -> None:
    site = running_hub.enrol("alpha")
    spec = running_hub.job(deadline_in=dt.timedelta(minutes=10))
    running_hub.submit(spec)
    refused = SiteJobStatus(
        job_id=spec.id,
        site_id="alpha",
        state=SiteJobState.REFUSED,
        reason="workflow not signed by a trusted key",
        updated_at=dt.datetime.now(dt.UTC),
    )
    site.post(f"/api/site/jobs/{spec.id}/state", json=refused.model_dump(mode="json"))
    status = status_of(running_hub, spec.id)
    assert status["finished"] and not status["k_reached"]
    running_hub.clock.advance(dt.timedelta(minutes=11))
    alpha = status_of(running_hub, spec.id)["sites"]["alpha"]
    assert (alpha["state"], alpha["reason"]) == ("refused", refused.reason)


def test_a_later_round_reaches_the_sites_and_counts_for_delivery(running_hub: RunningHub) -> None:
    site = running_hub.enrol("alpha")
    spec = running_hub.job()
    running_hub.submit(spec)
    site.post(f"/api/site/jobs/{spec.id}/ack")
    post_result(site, sealed(spec, "alpha"))
    outputs = (
        DeclaredOutput(
            name="m", kind=OutputKind.COUNT_AT_MOST, field="adc", thresholds={"all": (1.5,)}
        ),
    )
    with running_hub.researcher() as client:
        keys = {s["site_id"]: s["box_key"] for s in client.get("/api/sites").json()}
        request = seal_round(spec.id, 2, outputs, keys)
        skipped = seal_round(spec.id, 3, outputs, keys)
        assert (
            client.post(
                f"/api/jobs/{spec.id}/rounds", json=skipped.model_dump(mode="json")
            ).status_code
            == 400
        )
        added = client.post(f"/api/jobs/{spec.id}/rounds", json=request.model_dump(mode="json"))
        assert added.status_code == 204, added.text
    assert status_of(running_hub, spec.id)["delivered"] == []  # round 2 is owed
    rounds = site.get("/api/site/jobs").json()["rounds"]
    assert [RoundRequest.model_validate(r) for r in rounds] == [request]
    opened = open_round(request, "alpha", running_hub.site_boxes["alpha"].private)
    assert opened == outputs
    assert site.post(f"/api/site/jobs/{spec.id}/ack", params={"round": 2}).status_code == 204
    assert site.get("/api/site/jobs").json() == {"jobs": [], "rounds": []}
    assert post_result(site, sealed(spec, "alpha", round_=2)).status_code == 204
    assert status_of(running_hub, spec.id)["delivered"] == ["alpha"]


def test_the_long_poll_returns_as_soon_as_a_job_is_submitted(running_hub: RunningHub) -> None:
    site = running_hub.enrol("alpha")
    answers: list[tuple[float, dict[str, Any]]] = []

    def poll() -> None:
        started = time.monotonic()
        body = site.get("/api/site/jobs", params={"wait": 30}).json()
        answers.append((time.monotonic() - started, body))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)  # the poll is waiting now
    spec = running_hub.job()
    running_hub.submit(spec)
    poller.join(30)
    ((waited, body),) = answers
    assert [j["id"] for j in body["jobs"]] == [spec.id]
    assert waited < 15  # woken by the submit, not by the 30 s timeout


def test_researchers_see_only_their_own_jobs(running_hub: RunningHub) -> None:
    from jip.federation.hub import add_researcher

    running_hub.enrol("alpha")
    spec = running_hub.job()
    running_hub.submit(spec)
    other = add_researcher(running_hub.hub, "oscar")["token"]
    with running_hub.researcher(other) as client:
        assert client.get(f"/api/jobs/{spec.id}").status_code == 404
        assert client.get(f"/api/jobs/{spec.id}/results").status_code == 404
        taken = client.post("/api/jobs", json=spec.model_dump(mode="json"))
        assert taken.status_code == 409
    with running_hub.anonymous() as client:
        assert client.get(f"/api/jobs/{spec.id}").status_code == 401
        assert client.post("/api/jobs", json=spec.model_dump(mode="json")).status_code == 401
    with running_hub.researcher("jipr_wrong") as client:
        assert client.get(f"/api/jobs/{spec.id}").status_code == 401
    with running_hub.researcher() as client:  # a retried submit is the same job
        again = client.post("/api/jobs", json=spec.model_dump(mode="json"))
        assert again.json() == {"id": spec.id}


def test_a_job_asking_more_sites_than_enrolled_or_past_its_deadline_is_refused(
    running_hub: RunningHub,
) -> None:
    running_hub.enrol("alpha")
    with running_hub.researcher() as client:
        too_many = client.post(
            "/api/jobs", json=running_hub.job(min_sites=2).model_dump(mode="json")
        )
        past = client.post(
            "/api/jobs",
            json=running_hub.job(deadline_in=dt.timedelta(seconds=-1)).model_dump(mode="json"),
        )
    assert too_many.status_code == 400 and "min_sites" in too_many.json()["detail"]
    assert past.status_code == 400 and "deadline" in past.json()["detail"]
