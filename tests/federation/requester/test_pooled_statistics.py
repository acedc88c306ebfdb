"""Round 1 and the Levene rounds through the real hub and three site agents: what the
researcher pools equals NumPy and SciPy on the pooled values, to 1e-9."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats as scipy_stats
from tests.federation.requester.support import FIELD, GROUP_BY, Network
from tests.federation.site.support import PROJECT

from jip.errors import Forbidden
from jip.federation import generate_box_keys
from jip.federation.protocol import RoundPlan
from jip.federation.requester import (
    Follow,
    HubSession,
    Request,
    follow,
    job_report,
    open_all,
    parse_output,
    read_cohort,
    submit_job,
)

GROUPS = ("PZ/3/v1", "PZ/3/v2", "TZ/1.5/v1")
EDGES = "0,40,55,70,200"


def site_values(seed: int) -> dict[str, list[float]]:
    """Per group, values of a known spread (far from zero, with many digits)."""
    rng = np.random.default_rng(seed)
    spreads = {"PZ/3/v1": 6.0, "PZ/3/v2": 11.0, "TZ/1.5/v1": 8.0}
    return {g: list(rng.normal(60.0, spreads[g], 14 + seed % 5)) for g in GROUPS}


def close(found: float | None, expected: float) -> bool:
    return found is not None and math.isclose(found, expected, rel_tol=1e-9, abs_tol=1e-12)


def request(net: Network, outputs: Sequence[str], levene: Sequence[str], k: int) -> Request:
    return Request(
        workflow=net.home.workflow("fed-stats"),
        cohort=read_cohort(net.cohort_file()),
        project=PROJECT,
        outputs=tuple(parse_output(o) for o in outputs),
        min_sites=k,
        deadline=datetime.now(UTC) + timedelta(hours=1),
        parameters={"group_by": GROUP_BY},
        levene=tuple(levene),
        title="harmonisation",
    )


def test_pooled_statistics_and_levene_equal_numpy_and_scipy(net: Network) -> None:
    values = {name: site_values(seed) for name, seed in (("aachen", 1), ("bonn", 2), ("cork", 3))}
    for name, found in values.items():
        net.add_site(name, found)
    groups = ",".join(GROUPS)
    outputs = (
        f"n:count:{FIELD}",
        f"adc:sufficient_stats:{FIELD}:groups={groups}",
        f"hist:histogram:{FIELD}:edges={EDGES}",
        f"spread:levene_round1:{FIELD}:groups={groups}",
    )
    levene = ("PZ_mean=PZ/3/v1,PZ/3/v2:mean", "PZ_bf=PZ/3/v1,PZ/3/v2:median", f"all={groups}")
    lines: list[str] = []
    with HubSession(net.home, poll_s=0.05) as session:
        spec = submit_job(net.home, session, request(net, outputs, levene, 3))
        status = follow(net.home, session, spec.id, Follow(timeout_s=300), lines.append)
        report = job_report(net.home, spec.id, session)

    assert status["finished"] and status["k_reached"]
    assert report["sites_answered"] == ["aachen", "bonn", "cork"]
    assert report["sites_missing"] == []
    pooled = {g: np.concatenate([values[s][g] for s in values]) for g in GROUPS}
    everything = np.concatenate(list(pooled.values()))
    assert report["outputs"]["n"]["groups"]["all"]["pooled"] == {"n": everything.size}
    for group, x in pooled.items():
        found = report["outputs"]["adc"]["groups"][group]
        assert found["pooled"]["n"] == x.size
        assert close(found["pooled"]["mean"], float(np.mean(x)))
        assert close(found["pooled"]["variance"], float(np.var(x, ddof=1)))
        assert (found["pooled"]["min"], found["pooled"]["max"]) == (x.min(), x.max())
        bonn = np.asarray(values["bonn"][group])
        assert close(found["sites"]["bonn"]["variance"], float(np.var(bonn, ddof=1)))
    hist = report["outputs"]["hist"]["groups"]["all"]["pooled"]
    counts, _ = np.histogram(everything, bins=[float(e) for e in EDGES.split(",")])
    assert hist["counts"] == counts.tolist() and hist["below"] == hist["above"] == 0
    assert all(q["approximate"] is True for q in hist["quantiles"].values())

    tests = {t["name"]: t for t in report["levene"]}
    for name, compared, centre in (
        ("PZ_mean", GROUPS[:2], "mean"),
        ("PZ_bf", GROUPS[:2], "median"),
        ("all", GROUPS, "median"),
    ):
        expected = scipy_stats.levene(*(pooled[g] for g in compared), center=centre)
        found = tests[name]
        assert found["error"] is None, found["error"]
        assert found["center"] == centre and found["sites"] == ["aachen", "bonn", "cork"]
        assert close(found["W"], float(expected.statistic)), (found["W"], expected)
        assert close(found["p"], float(expected.pvalue))
        n = sum(pooled[g].size for g in compared)
        assert found["df"] == [len(compared) - 1, n - len(compared)]
    for group in GROUPS[:2]:
        assert tests["PZ_bf"]["centres"][group] == float(np.median(pooled[group]))
    assert any(line.startswith("round 2: asked 3 site(s)") for line in lines)
    leaked = readable_in_hub(net, spec.id)
    assert leaked == [], leaked


def readable_in_hub(net: Network, job_id: str) -> list[str]:
    """The centres and thresholds the job's later rounds asked (as the home keeps them)
    that appear in clear in the hub's database files (issue #13: none may)."""
    plans = [RoundPlan.model_validate(r) for r in net.home.job(job_id)["rounds"]]
    asked = [o for plan in plans for o in plan.outputs]
    values = {c[0] for o in asked for c in (o.centres or {}).values()}
    values |= {t for o in asked for ts in (o.thresholds or {}).values() for t in ts}
    texts = {repr(v) for v in values if len(repr(v)) >= 8}  # many digits: no coincidence
    assert len(texts) >= 10 and any(o.centres for o in asked)  # the search really ran
    stored = b"".join(p.read_bytes() for p in net.hub.hub.paths.data_dir.glob("hub.db*"))
    return sorted(t for t in texts if t.encode() in stored)


def test_a_silent_site_leaves_k_of_n_and_is_named(net: Network) -> None:
    values = {"aachen": site_values(4), "bonn": site_values(5)}
    for name, found in values.items():
        net.add_site(name, found)
    net.add_site("cork", site_values(6), running=False)  # enrolled, never answers
    outputs = (
        f"adc:sufficient_stats:{FIELD}:groups=PZ/3/v1,PZ/3/v2",
        f"spread:levene_round1:{FIELD}:groups=PZ/3/v1,PZ/3/v2",
    )

    def progress(line: str) -> None:
        if "answered" in line:  # the Levene round is in: let the deadline pass
            net.hub.clock.advance(timedelta(hours=2))

    with HubSession(net.home, poll_s=0.05) as session:
        spec = submit_job(net.home, session, request(net, outputs, ["PZ=PZ/3/v1,PZ/3/v2:mean"], 2))
        how = Follow(timeout_s=300, start_rounds_after=datetime.now(UTC))
        status = follow(net.home, session, spec.id, how, progress)
        report = job_report(net.home, spec.id, session)

    assert status["finished"] and status["deadline_passed"]
    assert report["k_reached"] and report["sites_answered"] == ["aachen", "bonn"]
    (missing,) = report["sites_missing"]
    assert missing["site"] == "cork" and missing["state"] == "missed_deadline"
    assert "deadline" in missing["reason"]
    pooled = {g: np.concatenate([values[s][g] for s in values]) for g in ("PZ/3/v1", "PZ/3/v2")}
    (test,) = report["levene"]
    expected = scipy_stats.levene(*pooled.values(), center="mean")
    assert test["sites"] == ["aachen", "bonn"]
    assert close(test["W"], float(expected.statistic))
    assert report["outputs"]["adc"]["groups"]["PZ/3/v1"]["pooled"]["n"] == pooled["PZ/3/v1"].size


def test_results_cannot_be_opened_without_the_researchers_key(net: Network) -> None:
    values = site_values(7)
    net.add_site("aachen", values)
    with HubSession(net.home, poll_s=0.05) as session:
        spec = submit_job(net.home, session, request(net, [f"n:count:{FIELD}"], [], 1))
        follow(net.home, session, spec.id, Follow(timeout_s=300), lambda _: None)
        sealed = session.results(spec.id)
    assert open_all(sealed, net.home.box_keys().private)["aachen"]["n"] == {
        "all:n": sum(map(len, values.values()))
    }
    with pytest.raises(Forbidden, match="cannot be opened with this key"):
        open_all(sealed, generate_box_keys().private)
