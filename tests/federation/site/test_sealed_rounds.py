"""Later rounds reach a site sealed to its box key (issue #13): the agent opens only its
own entry, keeps the opened outputs in its book (a restart needs neither the hub nor
the key again), and refuses an entry that does not open, with the reason audited."""

from __future__ import annotations

import base64

from tests.federation.site.fakehub import FakeHub
from tests.federation.site.support import Researcher, Site, ages, open_policy

from jip.federation import DeclaredOutput, JobSpec, OutputKind, RoundRequest, open_result
from jip.federation.crypto import encode_key, generate_box_keys
from jip.federation.outputs import read_count_at_most
from jip.federation.protocol import seal_round
from jip.federation.site import JobBook

FIELD = "PatientAgeYears"
COUNTS = (
    DeclaredOutput(
        name="age.counts",
        kind=OutputKind.COUNT_AT_MOST,
        field=FIELD,
        thresholds={"all": (59.5,)},
    ),
)


def after_round1(site: Site, hub: FakeHub) -> tuple[Researcher, JobSpec]:
    researcher = Researcher.new()
    open_policy(site, researcher, allowed_outputs="count,histogram,count_at_most")
    job = researcher.job()
    hub.jobs.append(job)
    site.agent().cycle(0)
    assert hub.state_of(job.id) == "done"
    return researcher, job


def keys_with(site: Site, **others: str) -> dict[str, str]:
    return {"site1": site.files.hub()["box_key"], **others}


def test_a_site_opens_its_own_entry_runs_the_round_and_keeps_the_opened_outputs(
    site: Site, hub: FakeHub
) -> None:
    researcher, job = after_round1(site, hub)
    other = encode_key(generate_box_keys().public)
    hub.rounds.append(seal_round(job.id, 2, COUNTS, keys_with(site, site2=other)))
    site.agent().cycle(0)
    result = hub.results[(job.id, "site1", 2)]
    below = sum(1 for value in ages(60) if value <= 59.5)
    payload = open_result(result, researcher.box.private)["age.counts"]
    assert read_count_at_most(COUNTS[0], payload) == {"all": [below]}
    record = JobBook(site.engine).get(job.id, 2)
    assert record.round_outputs == COUNTS  # opened once, kept: no hub or key needed again
    assert "sealed" not in record.spec
    received = [a for a in site.audit("fed.job.received") if a["round"] == 2]
    assert len(received) == 1


def test_a_tampered_entry_is_refused_with_the_reason_in_the_audit(site: Site, hub: FakeHub) -> None:
    _, job = after_round1(site, hub)
    request = seal_round(job.id, 2, COUNTS, keys_with(site))
    box = bytearray(base64.b64decode(request.sealed["site1"]))
    box[-1] ^= 0x01
    tampered = {"site1": base64.b64encode(bytes(box)).decode("ascii")}
    hub.rounds.append(RoundRequest(job_id=job.id, round=2, sealed=tampered))
    site.agent().cycle(0)
    assert (job.id, "site1", 2) not in hub.results
    (refused,) = [s for s in hub.states if s.state.value == "refused"]
    assert "does not open with this site's box key" in (refused.reason or "")
    (audit,) = site.audit("fed.job.refused")
    assert (audit["round"], audit["rule"], audit["reason"]) == (2, "sealed round", refused.reason)
    assert JobBook(site.engine).get(job.id, 2).round_outputs == ()
    assert f"{job.id}/2" in hub.acked["site1"]  # kept (refused), so not sent again


def test_a_round_without_an_entry_for_this_site_is_refused(site: Site, hub: FakeHub) -> None:
    _, job = after_round1(site, hub)
    other = encode_key(generate_box_keys().public)
    hub.rounds.append(seal_round(job.id, 2, COUNTS, {"site2": other}))
    site.agent().cycle(0)
    (audit,) = site.audit("fed.job.refused")
    assert "not sealed to site site1" in audit["reason"]
    assert (job.id, "site1", 2) not in hub.results
