"""A job's report: what the hub says, and the sites' results opened and pooled.

:func:`job_report` returns one JSON-able dict, the same for `jip fed job results --json`,
`jip fed job submit --wait --json` and the web UI (which renders exactly these keys)::

    {
      "job": "<id>", "title": str, "workflow": "<name>", "k": int,
      "deadline": "<ISO 8601>", "finished": bool, "rounds": int,
      "state": {site: {"state": "done|refused|...", "reason": str | None}},
      "sites_answered": [site, ...],          # round 1 opened: their numbers are pooled
      "sites_missing": [{"site", "state", "reason"}, ...],
      "k_reached": bool,                      # len(sites_answered) >= k
      "outputs": {name: {"kind", "field", "groups": {group: {
          "sites": {site: stats}, "pooled": stats}}}},
      "levene": [{"name", "groups", "center": "mean"|"median", "W", "p",
                  "df": [k - 1, N - k], "n": {group: n}, "sites": [...],
                  "centres": {group: value}, "error": str | None}]
    }

``stats`` by kind: count ``{"n"}``; sufficient_stats ``{"n", "mean", "variance"
(ddof=1), "min", "max"}``; histogram ``{"n", "edges", "counts", "below", "above"}`` and,
pooled, ``"quantiles": {"0.25"|"0.5"|"0.75": {"estimate", "lower", "upper",
"approximate": true}}``; levene_round1 ``{"n", "mean"}``. Numbers that do not exist
(a variance of one value, the extremes of none) are ``null``. A Levene entry whose rounds
are not complete has ``W``, ``p`` and ``df`` null and says why in ``error`` (``"pending"``
while rounds are under way).
"""

from __future__ import annotations

import math
from typing import Any

from jip.errors import Invalid
from jip.federation.levene import Centre, LeveneCentre, levene_from_deviations
from jip.federation.outputs import read_moments
from jip.federation.protocol import JobSpec, OutputKind, RoundPlan
from jip.federation.requester.client import HubSession
from jip.federation.requester.home import ResearcherHome
from jip.federation.requester.pooling import POOLED_KINDS, Payloads, open_all, pool_output

PENDING = "pending"


def job_report(
    home: ResearcherHome, job_id: str, session: HubSession | None = None
) -> dict[str, Any]:
    """The report of one job sent from ``home`` (see the module docstring); opens the
    results with the home's key (Forbidden when they were sealed to another)."""
    if session is None:
        with HubSession(home) as own:
            return job_report(home, job_id, own)
    record, spec = home.job(job_id), home.spec(job_id)
    status = session.status(job_id)
    private = home.box_keys().private
    round1 = open_all(session.results(job_id, 1), private)
    answered = sorted(round1)
    states = {
        site: {"state": s["state"], "reason": s.get("reason")}
        for site, s in sorted(status["sites"].items())
    }
    return {
        "job": job_id,
        "title": record["title"],
        "workflow": spec.workflow.name,
        "k": spec.min_sites,
        "deadline": spec.deadline.isoformat(),
        "finished": bool(status["finished"]),
        "rounds": int(status["rounds"]),
        "state": states,
        "sites_answered": answered,
        "sites_missing": [{"site": s, **v} for s, v in states.items() if s not in round1],
        "k_reached": len(answered) >= spec.min_sites,
        "outputs": _outputs(spec, round1),
        "levene": [
            _levene(session, home.rounds(job_id), entry, private, job_id)
            for entry in record["levene"]
        ],
    }


def _outputs(spec: JobSpec, round1: Payloads) -> dict[str, Any]:
    return {o.name: pool_output(o, round1) for o in spec.outputs if o.kind in POOLED_KINDS}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _levene(
    session: HubSession,
    rounds: list[RoundPlan],
    entry: dict[str, Any],
    private: bytes,
    job_id: str,
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": entry["name"],
        "groups": list(entry["groups"]),
        "center": entry["centre"],
        "W": None,
        "p": None,
        "df": None,
        "n": None,
        "sites": list(entry.get("sites") or []),
        "centres": None,
        "error": entry.get("error") or (None if entry.get("round") else PENDING),
    }
    if found["error"] is not None:
        return found
    round_ = int(entry["round"])
    asked = next(r for r in rounds if r.round == round_)
    output = next(
        o
        for o in asked.outputs
        if o.name == f"{entry['name']}.dev" and o.kind is OutputKind.LEVENE_ROUND2
    )
    assert output.centres is not None
    payloads = open_all(session.results(job_id, round_), private)
    sites = found["sites"]
    missing = [s for s in sites if output.name not in payloads.get(s, {})]
    if missing:
        raise Invalid(f"job {job_id}: round {round_} of {missing[0]} is no longer at the hub")
    parts = [read_moments(output, payloads[s][output.name]) for s in sites]
    centres = {g: Centre(v, e) for g, (v, e) in output.centres.items()}
    result = levene_from_deviations(parts, centres, LeveneCentre(entry["centre"]))
    found.update(
        W=_finite(result.statistic),
        p=_finite(result.pvalue),
        df=[result.df_between, result.df_within],
        n=dict(zip(result.groups, result.n, strict=True)),
        centres=dict(zip(result.groups, result.centres, strict=True)),
    )
    return found
