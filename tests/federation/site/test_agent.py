"""The site agent against a fake hub over mutual TLS: enrolment, policy refusals,
manual approval, disclosure refusals, and resuming without losing or repeating a job."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from tests.federation.site.fakehub import FakeHub
from tests.federation.site.support import (
    EDGES,
    Researcher,
    Site,
    ages,
    open_policy,
    series_docs,
)

from jip.errors import Conflict, Forbidden, Unavailable
from jip.federation import DeclaredOutput, open_result
from jip.federation.site import Backoff, HubClient, SiteFiles, approve, join, queue_view, reject


def released_outputs(hub: FakeHub, site: Site, researcher: Researcher, job_id: str) -> dict:
    (result,) = [r for (j, _, _), r in hub.results.items() if j == job_id]
    return open_result(result, researcher.box.private)


# -- enrolment -----------------------------------------------------------------------------
def test_join_keeps_private_keys_0600_and_pins_the_hubs_ca(site: Site, hub: FakeHub) -> None:
    files = site.files
    assert files.hub()["site_id"] == "site1"
    assert stat.S_IMODE(files.root.stat().st_mode) == 0o700
    for path in (
        files.identity_key,
        files.box_key,
        files.tls_key,
        files.ledger_key,
        files.hub_json,
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert files.ca.read_text() == hub.ca.pem
    with pytest.raises(Conflict, match="joined"):
        join(files, hub.url, "another", ca_file=files.ca)


def test_join_refuses_an_unknown_token_and_an_unverified_hub(tmp_path: Path, hub: FakeHub) -> None:
    files = SiteFiles.of(tmp_path / "other")
    with pytest.raises(Forbidden, match="refused"):
        join(files, hub.url, "not-a-token", ca_file=tmp_path / "ca.pem")
    hub.tokens.add("good")
    # No --ca: the system trust store does not know the hub's CA, so the token stays here.
    with pytest.raises(Unavailable, match="--ca"):
        join(files, hub.url, "good")
    assert "good" in hub.tokens and not files.joined


def test_site_routes_need_the_client_certificate_of_the_site(site: Site, hub: FakeHub) -> None:
    import ssl

    import httpx

    plain = httpx.Client(verify=ssl.create_default_context(cafile=str(site.files.ca)))
    assert plain.get(f"{hub.url}/api/site/jobs").status_code == 401
    jobs, rounds = HubClient(site.files).poll(0)
    assert (jobs, rounds) == ([], [])


# -- policy refusals -----------------------------------------------------------------------
def test_an_unsigned_or_tampered_workflow_is_refused_and_audited(site: Site, hub: FakeHub) -> None:
    researcher, stranger = Researcher.new(), Researcher.new()
    open_policy(site, researcher)
    untrusted = researcher.job(workflow=stranger.workflow())
    good = researcher.workflow()
    tampered = researcher.job(
        workflow=good.model_copy(update={"image_digest": "sha256:" + "cd" * 32})
    )
    hub.jobs += [untrusted, tampered]
    site.agent().cycle(0)
    assert hub.state_of(untrusted.id) == "refused"
    assert hub.state_of(tampered.id) == "refused"
    reasons = {s.job_id: s.reason for s in hub.states}
    assert "not a trusted key" in (reasons[untrusted.id] or "")
    assert "signature" in (reasons[tampered.id] or "")
    audit = {a["target"]: a for a in site.audit("fed.job.refused")}
    assert audit[f"job:{untrusted.id}"]["reason"] == reasons[untrusted.id]
    assert audit[f"job:{tampered.id}"]["reason"] == reasons[tampered.id]
    assert not hub.results


def test_a_project_not_in_the_policy_and_an_undeclared_output_kind_are_refused(
    site: Site, hub: FakeHub
) -> None:
    researcher = Researcher.new()
    open_policy(site, researcher)
    other_project = researcher.job(project="cardio")
    stats = researcher.job(
        (DeclaredOutput(name="s", kind="sufficient_stats", field="PatientAgeYears"),)
    )
    hub.jobs += [other_project, stats]
    site.agent().cycle(0)
    reasons = {s.job_id: s.reason or "" for s in hub.states}
    assert "project cardio: does not take part" in reasons[other_project.id]
    assert "sufficient_stats may not leave" in reasons[stats.id]
    assert len(site.audit("fed.job.refused")) == 2


# -- running, approval ---------------------------------------------------------------------
def test_an_approved_job_releases_exactly_the_local_computation(site: Site, hub: FakeHub) -> None:
    researcher = Researcher.new()
    open_policy(site, researcher, approval="manual")
    job = researcher.job()
    hub.jobs.append(job)
    agent = site.agent()
    agent.cycle(0)
    assert hub.state_of(job.id) == "queued" and not hub.results
    (view,) = [queue_view(r) for r in agent.book.all()]
    assert [o["name"] for o in view["outputs"]] == ["n", "age"]
    assert view["outputs"][1]["leaves"] == {
        "all:counts": "count",
        "all:below": "count",
        "all:above": "count",
    }
    approve(site.engine, job.id, "cli:admin")
    with pytest.raises(Conflict):
        reject(site.engine, job.id, "cli:admin", "too late")
    agent.cycle(0)
    assert hub.state_of(job.id) == "done"
    outputs = released_outputs(hub, site, researcher, job.id)
    values = np.array(ages(60))
    counts, _ = np.histogram(values[values < EDGES[-1]], bins=EDGES)
    assert outputs["n"] == {"all:n": 60}
    assert outputs["age"]["all:counts"] == counts.tolist()
    (released,) = site.audit("fed.result.released")
    (result,) = hub.results.values()
    assert (released["size"], released["sha256"]) == (result.size, result.sha256)
    assert released["series"] == 60


def test_a_rejected_job_tells_the_hub_why(site: Site, hub: FakeHub) -> None:
    researcher = Researcher.new()
    open_policy(site, researcher, approval="manual")
    job = researcher.job()
    hub.jobs.append(job)
    agent = site.agent()
    agent.cycle(0)
    reject(site.engine, job.id, "cli:admin", "not in our ethics approval")
    agent.cycle(0)
    assert hub.state_of(job.id) == "refused"
    assert "not in our ethics approval" in (hub.states[-1].reason or "")
    assert not hub.results


# -- disclosure ----------------------------------------------------------------------------
def test_a_small_cohort_a_small_cell_and_a_differencing_attempt_are_refused(
    site: Site, hub: FakeHub
) -> None:
    researcher = Researcher.new()
    open_policy(site, researcher, allowed_outputs="count,histogram")
    small = researcher.job(query={"range": {"PatientAgeYears": {"lt": 33}}})  # 3 series
    narrow = researcher.job(
        (DeclaredOutput(name="h", kind="histogram", field="PatientAgeYears", edges=(30, 31, 90)),)
    )
    hub.jobs += [small, narrow]
    site.agent().cycle(0)
    reasons = {s.job_id: s.reason or "" for s in hub.states}
    assert "below the minimum cohort size 10" in reasons[small.id]
    assert "below the minimum cell count 5" in reasons[narrow.id]
    # The whole cohort is released; then the same cohort minus the patient aged 30.
    whole = researcher.job()
    hub.jobs.append(whole)
    site.agent().cycle(0)
    assert hub.state_of(whole.id) == "done"
    minus_one = researcher.job(query={"range": {"PatientAgeYears": {"gt": 30}}})
    hub.jobs.append(minus_one)
    site.agent().cycle(0)
    assert hub.state_of(minus_one.id) == "refused"
    assert f"released for job {whole.id} by 1 series" in (hub.states[-1].reason or "")
    refused = {a["target"]: a for a in site.audit("fed.output.refused")}
    assert refused[f"job:{minus_one.id}"]["refusals"][0]["rule"] == "differencing"
    assert refused[f"job:{narrow.id}"]["refusals"][0]["rule"] == "min_cell"
    assert len(hub.results) == 1


# -- resuming ------------------------------------------------------------------------------
def test_a_job_persisted_before_its_ack_was_lost_runs_once(site: Site, hub: FakeHub) -> None:
    researcher = Researcher.new()
    open_policy(site, researcher)
    job = researcher.job()
    hub.lose_acks = True  # the hub sends the job again on every poll
    hub.jobs.append(job)
    agent = site.agent()
    for _ in range(3):
        agent.cycle(0)
    assert hub.requests.count(f"POST /api/site/jobs/{job.id}/ack") == 3
    assert len(site.audit("fed.job.received")) == 1
    assert len(site.audit("fed.result.released")) == 1
    assert len(hub.results) == 1


def test_a_restart_posts_the_stored_result_and_never_recomputes_it(
    site: Site, hub: FakeHub
) -> None:
    researcher = Researcher.new()
    open_policy(site, researcher)
    job = researcher.job()
    hub.jobs.append(job)
    first = site.agent()
    first.settle = lambda: None  # type: ignore[method-assign]  # dies after taking the job
    first.cycle(0)
    assert hub.acked["site1"] == {job.id} and not hub.results
    second = site.agent()
    assert second.book.get(job.id).state.value == "queued"  # in the book, not run
    hub.fail_next = 1  # the result's first post is lost too
    with pytest.raises(Unavailable):
        second.settle()
    stored = second.book.get(job.id).result
    assert stored is not None and not hub.results
    third = site.agent()  # another restart
    third.cycle(0)
    (posted,) = hub.results.values()
    assert posted == stored  # the same ciphertext: sealing again would differ
    assert len(site.audit("fed.result.released")) == 1
    assert hub.state_of(job.id) == "done"


def test_the_agent_reconnects_with_backoff_and_stops(site: Site, hub: FakeHub) -> None:
    import time

    researcher = Researcher.new()
    open_policy(site, researcher)
    hub.fail_next = 3
    agent = site.agent()
    agent.start()
    job = researcher.job()
    hub.jobs.append(job)
    deadline = time.monotonic() + 20
    while hub.state_of(job.id) != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.stop()
    assert hub.state_of(job.id) == "done"
    assert agent._thread is not None and not agent._thread.is_alive()


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    import random

    backoff = Backoff(base_s=1, cap_s=8, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_a_missed_deadline_is_reported_not_run(site: Site, hub: FakeHub) -> None:
    from datetime import UTC, datetime, timedelta

    researcher = Researcher.new()
    open_policy(site, researcher, approval="manual")
    job = researcher.job(deadline=datetime.now(UTC) + timedelta(seconds=1))
    hub.jobs.append(job)
    agent = site.agent()
    agent.cycle(0)
    approve(site.engine, job.id, "cli:admin")
    import time

    time.sleep(1.1)
    agent.cycle(0)
    assert hub.state_of(job.id) == "missed_deadline" and not hub.results


def test_groups_split_by_a_metadata_field(site: Site, hub: FakeHub) -> None:
    researcher = Researcher.new()
    open_policy(site, researcher)
    site.index.upsert(
        [
            dict(d, MagneticFieldStrength=1.5 if i % 2 else 3.0)
            for i, d in enumerate(series_docs(ages(60)))
        ]
    )
    job = researcher.job(
        (DeclaredOutput(name="n", kind="count", field="PatientAgeYears", groups=("1.5", "3")),)
    )
    job = job.model_copy(update={"parameters": {"group_by": "MagneticFieldStrength"}})
    hub.jobs.append(job)
    site.agent().cycle(0)
    assert released_outputs(hub, site, researcher, job.id)["n"] == {"1.5:n": 30, "3:n": 30}
