"""The researcher seals each later round to the participants' box keys as the hub lists
them, and keeps the sealed request before posting it: a retry after a crash posts the
same bytes, which the hub takes again (a newly sealed one would be a Conflict)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.federation.requester.support import FIELD, Network
from tests.federation.site.support import PROJECT

from jip.errors import Conflict, Invalid
from jip.federation import DeclaredOutput, OutputKind
from jip.federation.protocol import RoundPlan, open_round, seal_round
from jip.federation.requester import HubSession, Request, parse_output, read_cohort, submit_job
from jip.federation.requester.rounds import _sealed

COUNTS = DeclaredOutput(
    name="x.counts",
    kind=OutputKind.COUNT_AT_MOST,
    field=FIELD,
    groups=("PZ",),
    thresholds={"PZ": (61.123456789,)},
)


def submitted(net: Network, session: HubSession) -> str:
    for name in ("aachen", "bonn"):
        net.add_site(name, {"PZ/3/v1": [60.0, 61.0, 62.0]}, running=False)
    request = Request(
        workflow=net.home.workflow("fed-stats"),
        cohort=read_cohort(net.cohort_file()),
        project=PROJECT,
        outputs=(parse_output(f"n:count:{FIELD}"),),
        min_sites=1,
        deadline=datetime.now(UTC) + timedelta(hours=1),
        levene=(),
        title="sealing",
    )
    return submit_job(net.home, session, request).id


def test_the_hub_lists_each_sites_box_key_as_the_site_made_it(net: Network) -> None:
    with HubSession(net.home) as session:
        submitted(net, session)
        keys = session.site_keys()
    assert set(keys) == {"aachen", "bonn"}
    for site in net.sites:
        assert keys[site.name] == site.agent.files.hub()["box_key"]


def test_a_sealed_round_is_kept_and_posted_again_as_the_same_bytes(net: Network) -> None:
    with HubSession(net.home) as session:
        job_id = submitted(net, session)
        plan = RoundPlan(job_id=job_id, round=2, outputs=(COUNTS,))
        first = _sealed(net.home, session, plan, ["aachen"])
        session.add_round(first)
        again = _sealed(net.home, session, plan, ["aachen"])  # as after a crash
        assert again == first
        session.add_round(again)  # the hub takes the same request again
        with pytest.raises(Conflict):
            session.add_round(seal_round(job_id, 2, (COUNTS,), session.site_keys()))
        with pytest.raises(Invalid, match="no box key"):
            _sealed(net.home, session, plan.model_copy(update={"round": 3}), ["aachen", "zug"])
    assert list(first.sealed) == ["aachen"]
    (aachen,) = [s for s in net.sites if s.name == "aachen"]
    assert open_round(first, "aachen", aachen.agent.files.box_private()) == (COUNTS,)
