"""Levene's and Brown–Forsythe's tests across sites: the later rounds of a job.

A job declares ``levene_round1`` outputs (per group: n and the mean); the researcher
names the comparisons (:class:`Comparison`: which groups, centred on the mean or the
median). After round 1, one :class:`LeveneDriver` per comparison says what each later
round must ask:

- centre ``mean``: the pooled means are the centres at once, so round 2 asks the
  deviations (``<name>.dev``, a ``levene_round2`` output);
- centre ``median``: an :class:`~jip.federation.order.OrderSearch` asks count queries
  (``<name>.counts``, ``count_at_most``) round after round until every group's median is
  exact, then the deviation round. Where the job has a ``sufficient_stats`` output on
  the same field, one round of :class:`~.probe.CentreProbe` first brackets each median
  near the pooled mean, so that no site is asked a count in its tails (a small cell it
  would refuse).

All comparisons share the job's rounds (one :class:`~jip.federation.protocol.RoundPlan`
carries the next output of several drivers), with one rule: a round that asks for
deviations asks for nothing else. A site refuses a round as a whole, so a median search
refused somewhere must not take the mean-centred tests down with it. Each round goes
only to the sites that answered round 1 (the *participants*), sealed to each one's box
key as the hub lists it (:func:`~jip.federation.protocol.seal_round`: the centres and
thresholds are pooled from the sites' values, so the hub must not read them); a
participant that refuses, fails or misses a later round ends its comparisons with an
``error`` naming it (the centres included its values, so W without it would be wrong).

The drivers are deterministic given the sites' answers, so :func:`follow` resumes an
interrupted job by replaying the rounds the home recorded (in clear, as
:class:`~jip.federation.protocol.RoundPlan`; a round already posted is not posted again,
and a round sealed but perhaps not posted is posted again as the same sealed request).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jip.errors import Conflict, Invalid, JipError
from jip.federation.levene import Centre, LeveneCentre, pooled_means
from jip.federation.order import Bracket, OrderSearch, median_from, median_ranks, pool_counts
from jip.federation.outputs import read_count_at_most, read_means
from jip.federation.protocol import (
    DeclaredOutput,
    JobSpec,
    OutputKind,
    RoundPlan,
    RoundRequest,
    seal_round,
)
from jip.federation.requester.client import HubSession, Progress
from jip.federation.requester.home import ResearcherHome
from jip.federation.requester.pooling import Payloads, open_all, pooled_summaries
from jip.federation.requester.probe import CentreProbe, Spread

MAX_NAME = 56  # a comparison's outputs are <name>.counts and <name>.dev, labels of ≤ 64
NOT_ANSWERING = {"refused", "failed", "missed_deadline"}
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_./-]{{0,{MAX_NAME - 1}}}$")
Ready = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Comparison:
    """One Levene test: its name, the groups it compares, the centre and the
    ``levene_round1`` output whose groups they are."""

    name: str
    groups: tuple[str, ...]
    centre: LeveneCentre
    output: str

    @property
    def counts_output(self) -> str:
        return f"{self.name}.counts"

    @property
    def deviations_output(self) -> str:
        return f"{self.name}.dev"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "groups": list(self.groups),
            "centre": self.centre.value,
            "output": self.output,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(
            data["name"], tuple(data["groups"]), LeveneCentre(data["centre"]), data["output"]
        )


class LeveneDriver:
    """The later rounds of one comparison (see the module docstring)."""

    def __init__(
        self,
        comparison: Comparison,
        round1: DeclaredOutput,
        payloads: Payloads,
        *,
        spreads: Mapping[str, Spread] | None = None,
        fanout: int = 15,
    ) -> None:
        self.comparison, self.field = comparison, round1.field
        self.sites = tuple(sorted(s for s, p in payloads.items() if round1.name in p))
        self.error: str | None = None
        self.deviation_round: int | None = None
        self.centres: dict[str, Centre] | None = None
        self.search: OrderSearch | None = None
        self.probe: CentreProbe | None = None
        self.fanout = fanout
        self._asked: DeclaredOutput | None = None
        groups = comparison.groups
        means = [
            {g: m for g, m in read_means(round1, payloads[s][round1.name]).items() if g in groups}
            for s in self.sites
        ]
        self.n = {g: sum(part[g].n for part in means) for g in groups}
        empty = [g for g in groups if self.n[g] == 0]
        if len(self.sites) == 0 or empty:
            self.error = f"group {empty[0]}: no site holds a value" if empty else "no site answered"
        elif comparison.centre is LeveneCentre.MEAN:
            self.centres = pooled_means(means)
        elif spreads is not None and all(g in spreads for g in groups):
            self.probe = CentreProbe({g: self.n[g] for g in groups}, spreads)
            if self.probe.done:
                self._start_search()
        else:
            self._start_search()

    def _start_search(self) -> None:
        ranks = {g: (self.n[g], median_ranks(self.n[g])) for g in self.comparison.groups}
        brackets = self.probe.found() if self.probe is not None else None
        self.search = OrderSearch(ranks, brackets=brackets, fanout=self.fanout)

    @property
    def done(self) -> bool:
        return self.error is not None or self.deviation_round is not None

    def next_output(self) -> DeclaredOutput | None:
        """What the next round must ask for this comparison (None once done)."""
        c = self.comparison
        if self.done:
            self._asked = None
        elif self.centres is not None:
            centres = {g: (v.value, v.error) for g, v in self.centres.items()}
            self._asked = DeclaredOutput(
                name=c.deviations_output,
                kind=OutputKind.LEVENE_ROUND2,
                field=self.field,
                groups=c.groups,
                centres=centres,
            )
        else:
            thresholds = self._thresholds()
            self._asked = DeclaredOutput(
                name=c.counts_output,
                kind=OutputKind.COUNT_AT_MOST,
                field=self.field,
                groups=tuple(thresholds),
                thresholds=thresholds,
            )
        return self._asked

    def _thresholds(self) -> dict[str, tuple[float, ...]]:
        if self.probe is not None and not self.probe.done:
            return dict(self.probe.thresholds())
        assert self.search is not None
        return {g: tuple(t) for g, t in self.search.request().items()}

    def feed(self, round_: int, payloads: Payloads, why: Mapping[str, str]) -> None:
        """The sites' opened results of ``round_``; ``why`` says, per site, why it may
        have sent none (its state at the hub)."""
        asked = self._asked
        if asked is None:
            return
        missing = [s for s in self.sites if asked.name not in payloads.get(s, {})]
        if missing:
            named = "; ".join(f"{s} ({why.get(s, 'no answer')})" for s in missing)
            self.error = f"round {round_}: no {asked.name} from {named}"
        elif asked.kind is OutputKind.LEVENE_ROUND2:
            self.deviation_round = round_
        else:
            pooled = pool_counts(
                read_count_at_most(asked, payloads[s][asked.name]) for s in self.sites
            )
            if self.search is None:
                assert self.probe is not None
                self.probe.feed(pooled)
                if self.probe.done:
                    self._start_search()
                self._asked = None
                return
            self.search.feed(pooled)
            if self.search.done:
                found = self.search.values()
                self.centres = {g: Centre(median_from(self.n[g], found[g])) for g in found}
        self._asked = None

    def record(self) -> dict[str, Any]:
        """The comparison as the home keeps it: the participants, the deviation round
        (once asked and answered) and the error, if any."""
        return {
            **self.comparison.to_json(),
            "sites": list(self.sites),
            "round": self.deviation_round,
            "error": self.error,
        }


def spreads_for(spec: JobSpec, field: str, payloads: Payloads) -> dict[str, Spread]:
    """Pooled mean, standard deviation and extremes per group from a round-1
    ``sufficient_stats`` output on the same field, where one exists (they place a median
    search's first thresholds near the centre, inside the data)."""
    found: dict[str, Spread] = {}
    for output in spec.outputs:
        if output.kind is OutputKind.SUFFICIENT_STATS and output.field == field:
            for group, summary in pooled_summaries(output, payloads).items():
                low, high = summary.extremes.minimum, summary.extremes.maximum
                if summary.n == 0 or low is None or high is None:
                    continue
                sd = math.sqrt(summary.moments.variance())
                found.setdefault(group, Spread(summary.moments.mean, sd, Bracket(low, high)))
    return found


def drivers_for(
    spec: JobSpec, comparisons: list[Comparison], payloads: Payloads, fanout: int
) -> list[LeveneDriver]:
    outputs = {o.name: o for o in spec.outputs}
    drivers = []
    for comparison in comparisons:
        round1 = outputs[comparison.output]
        spreads = spreads_for(spec, round1.field, payloads)
        drivers.append(LeveneDriver(comparison, round1, payloads, spreads=spreads, fanout=fanout))
    return drivers


@dataclass(frozen=True)
class Follow:
    """How :func:`follow` waits: ``timeout_s`` in all; later rounds start once every
    site settled round 1, or once k sites answered and ``start_rounds_after`` passed."""

    timeout_s: float
    start_rounds_after: datetime | None = None


def follow(
    home: ResearcherHome,
    session: HubSession,
    job_id: str,
    how: Follow,
    progress: Progress,
) -> dict[str, Any]:
    """Follow a job to its end: round 1, the Levene rounds, then the hub's final word
    (every site settled, or the deadline). Returns the hub's last status."""
    record, spec = home.job(job_id), home.spec(job_id)
    comparisons = [Comparison.from_json(c) for c in record["levene"]]
    clock = _Clock(how.timeout_s)
    if comparisons:
        start = how.start_rounds_after or _halfway(record["submitted_at"], spec.deadline)
        ready = _round1_ready(spec, start, bool(record["rounds"]))
        session.wait_until(job_id, ready, clock.left(), progress)
        keys = home.box_keys()
        round1 = open_all(session.results(job_id, 1), keys.private)
        drivers = drivers_for(spec, comparisons, round1, int(record.get("fanout", 15)))
        _run_rounds(home, session, job_id, drivers, clock, progress)
    return session.wait(job_id, clock.left(), progress)


def _run_rounds(
    home: ResearcherHome,
    session: HubSession,
    job_id: str,
    drivers: list[LeveneDriver],
    clock: _Clock,
    progress: Progress,
) -> None:
    posted = {r.round: r for r in _plans(home, job_id)}
    keys = home.box_keys()
    round_ = 1
    while True:
        waiting = [d for d in drivers if not d.done]
        # deviations go alone: a refused count query must not sink a mean-centred test
        batch = [d for d in waiting if d.centres is not None] or waiting
        asked = [(d, d.next_output()) for d in batch]
        outputs = tuple(o for _, o in asked if o is not None)
        if not outputs:
            break
        round_ += 1
        participants = sorted({s for d, o in asked if o is not None for s in d.sites})
        plan = RoundPlan(job_id=job_id, round=round_, outputs=outputs)
        if round_ in posted and posted[round_] != plan:
            raise Conflict(f"job {job_id}: round {round_} was posted with other outputs")
        try:
            if round_ not in posted:
                session.add_round(_sealed(home, session, plan, participants))
                rounds = [*home.job(job_id)["rounds"], plan.model_dump(mode="json")]
                home.update_job(job_id, rounds=rounds, sealing=None)
        except JipError as exc:
            for driver, output in asked:
                if output is not None:
                    driver.error = f"round {round_}: the hub did not take it: {exc}"
            break
        names = ", ".join(o.name for o in outputs)
        progress(f"round {round_}: asked {len(participants)} site(s) for {names}")
        status = session.wait_until(
            job_id, _round_ready(session, job_id, round_, participants), clock.left(), progress
        )
        payloads = open_all(session.results(job_id, round_), keys.private)
        payloads = {s: p for s, p in payloads.items() if s in participants}
        progress(f"round {round_}: {len(payloads)} of {len(participants)} site(s) answered")
        why = {s: _why(status["sites"].get(s, {})) for s in participants}
        for driver, _ in asked:
            driver.feed(round_, payloads, why)
        home.update_job(job_id, levene=[d.record() for d in drivers])
    home.update_job(job_id, levene=[d.record() for d in drivers])


def _plans(home: ResearcherHome, job_id: str) -> list[RoundPlan]:
    return [RoundPlan.model_validate(r) for r in home.job(job_id)["rounds"]]


def _sealed(
    home: ResearcherHome, session: HubSession, plan: RoundPlan, participants: list[str]
) -> RoundRequest:
    """The round sealed to each participant's box key. It is kept in the home before it
    is posted, so a retry after a crash posts the same bytes (the hub takes the same
    request again, and would refuse a newly sealed one as another round)."""
    kept = home.job(plan.job_id).get("sealing")
    if kept and kept["plan"] == plan.model_dump(mode="json"):
        request = RoundRequest.model_validate(kept["request"])
        if sorted(request.sealed) == participants:
            return request
    known = session.site_keys()
    unknown = [s for s in participants if s not in known]
    if unknown:
        raise Invalid(f"site {unknown[0]}: the hub lists no box key for it to seal round to")
    request = seal_round(plan.job_id, plan.round, plan.outputs, {s: known[s] for s in participants})
    sealing = {"plan": plan.model_dump(mode="json"), "request": request.model_dump(mode="json")}
    home.update_job(plan.job_id, sealing=sealing)
    return request


def _why(site: Mapping[str, Any]) -> str:
    state, reason = site.get("state", "unknown"), site.get("reason")
    return f"{state}: {reason}" if reason else str(state)


def _round1_ready(spec: JobSpec, start: datetime, resumed: bool) -> Ready:
    def ready(status: dict[str, Any]) -> bool:
        if resumed or status["finished"]:
            return True
        delivered = len(status["delivered"]) >= spec.min_sites
        return delivered and datetime.now(start.tzinfo) >= start

    return ready


def _round_ready(session: HubSession, job_id: str, round_: int, participants: list[str]) -> Ready:
    def ready(status: dict[str, Any]) -> bool:
        if status["deadline_passed"]:
            return True
        got = {r.site_id for r in session.results(job_id, round_)}
        states = status["sites"]
        return all(
            s in got or states.get(s, {}).get("state") in NOT_ANSWERING for s in participants
        )

    return ready


def _halfway(submitted_at: str, deadline: datetime) -> datetime:
    submitted = datetime.fromisoformat(submitted_at)
    return submitted + (deadline - submitted) / 2


class _Clock:
    """What is left of a wall-clock budget (monotonic)."""

    def __init__(self, timeout_s: float) -> None:
        self.until = time.monotonic() + timeout_s

    def left(self) -> float:
        return max(0.0, self.until - time.monotonic())


def check_comparisons(spec: JobSpec, comparisons: list[Comparison]) -> None:
    """Invalid unless every comparison names ≥ 2 groups of one ``levene_round1`` output."""
    outputs = {o.name: o for o in spec.outputs}
    names = [c.name for c in comparisons]
    if len(set(names)) != len(names):
        raise Invalid("--levene: each comparison needs its own name")
    for c in comparisons:
        output = outputs.get(c.output)
        if output is None or output.kind is not OutputKind.LEVENE_ROUND1:
            raise Invalid(f"--levene {c.name}: {c.output} is not a levene_round1 output")
        unknown = sorted(set(c.groups) - set(output.group_labels))
        if unknown:
            raise Invalid(f"--levene {c.name}: group {unknown[0]} is not a group of {c.output}")
        if len(set(c.groups)) < 2:
            raise Invalid(f"--levene {c.name}: compare at least two different groups")
        if not _NAME.match(c.name):
            raise Invalid(
                f"--levene {c.name!r}: a name is 1 to {MAX_NAME} letters, digits and _./- "
                "(starting with a letter or digit)"
            )
