"""Federated histogram: a hub and 20 site agents on this machine vs the same in one process.

The network (fed_network.py): the hub is `jip hub up` in a subprocess (uvicorn, HTTPS
with client certificates on loopback; its CPU time read from ``/proc/<pid>/stat``). Each
site is its own forked process, not a thread (a site's work holds the GIL, and on a
real network every site has its own machine): a migrated catalog, a SQLite index of
``--series`` series documents with known ages, `jip fed join` with the one-time token of
`jip hub site add`, a policy that trusts the researcher's publisher key and approves
automatically, and :class:`SiteAgent` long-polling as `jip up` runs it. A researcher
submits a job (count, and a histogram of PatientAgeYears on declared edges) with k = all
sites, polls until every site has delivered, opens the sealed results and pools them.
The pooled answer must equal NumPy's over every site's values, or the bench fails.

First one site alone (the fixed overhead of a job), then all sites, ``--jobs`` jobs each.
References, measured in the same run once the agents are stopped: ``run_fed_stats`` over
one index that holds every site's documents (the same work without the network: the
reference for the end-to-end ratio), NumPy over the values in memory (printed too), and
``run_fed_stats`` over one site's own index (what a site computes locally: the
reference for the hub's CPU per site and for each site's latency).

    .venv/bin/python bench/bench_federation.py [--sites 20] [--series 300] [--jobs 5]

Every process shares this machine's cores: on a small machine the end-to-end time is
mostly the sites' work queueing for them, which the per-site p95 latency shows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT)]

from fed_network import AGENT_WAIT_S, JobRun, check, network, site_dir, site_values  # noqa: E402
from tests.federation.site.support import EDGES, PROJECT, Researcher, series_docs  # noqa: E402
from timing import percentile, timed  # noqa: E402

from jip.federation import (  # noqa: E402
    DifferencingGuard,
    InMemoryCohortLedger,
    JobSpec,
    read_counts,
    read_histograms,
)
from jip.federation.site import Approval, SitePolicy, run_fed_stats  # noqa: E402
from jip.meta.index_sqlite import SqliteIndex  # noqa: E402

POLICY = SitePolicy(projects=(PROJECT,), approval=Approval.AUTOMATIC)  # the sites' own


def local_ms(root: Path, sites: int, runs: int) -> list[list[float]]:
    """``run_fed_stats`` over each site's own index (what a site computes), per site."""
    spec, times = Researcher.new().job(), list[list[float]]()
    for i in range(sites):
        index = SqliteIndex.from_url(f"sqlite:///{site_dir(root, i) / 'index.db'}")
        times.append(timed(partial(fed_stats, spec, index), runs))
        index.close()
    return times


def fed_stats(spec: JobSpec, index: SqliteIndex) -> dict[str, Any]:
    guard = DifferencingGuard(InMemoryCohortLedger(), POLICY.disclosure(), b"\0" * 32)
    outcome = run_fed_stats(spec, spec.outputs, index, POLICY.disclosure(), guard)
    if outcome.released is None:
        raise SystemExit(f"the local reference was refused: {outcome.refusal}")
    return outcome.released


def pooled_references(
    root: Path, sites: int, series: int, seed: int, runs: int, values: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Milliseconds of ``run_fed_stats`` over one index of every site's documents, and of
    NumPy over every value in memory; both answers checked like the federated one."""
    spec = Researcher.new().job()
    index = SqliteIndex.from_url(f"sqlite:///{root / 'all-sites.db'}")
    for i in range(sites):
        index.upsert(series_docs(site_values(i, series, seed), start=i * series))
    released = fed_stats(spec, index)
    count, hist = spec.outputs
    n, histogram = (
        read_counts(count, released[count.name])["all"],
        read_histograms(hist, released[hist.name])["all"],
    )
    check(n, histogram, values, sites=1, got=1)
    one_index = timed(lambda: fed_stats(spec, index), runs)
    index.close()
    x, bins = np.asarray(values), np.asarray(EDGES)
    in_numpy = timed(
        lambda: (x.size, np.histogram(x, bins=bins), (x < bins[0]).sum(), (x > bins[-1]).sum()),
        runs * 10,
    )
    return one_index, in_numpy


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{now} on {platform.node()}: {model}, {os.cpu_count()} CPUs, load {load}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=20, help="site agents (2 or more)")
    parser.add_argument(
        "--series",
        type=int,
        default=300,
        help="series documents per site (20 or more: every bin must hold 5)",
    )
    parser.add_argument("--jobs", type=int, default=5, help="jobs per network size")
    parser.add_argument("--seed", type=int, default=2024, help="of the sites' values")
    args = parser.parse_args()
    if args.sites < 2:
        parser.error("--sites: at least 2 (the 1-site run comes first anyway)")
    if args.jobs < 1:
        parser.error("--jobs: at least 1")

    print(machine(), flush=True)
    values = [site_values(i, args.series, args.seed) for i in range(args.sites)]
    everything = [v for site in values for v in site]
    with tempfile.TemporaryDirectory(prefix="jip-bench-fed-") as tmp:
        root = Path(tmp)
        with network(root, args.sites, args.series, args.seed) as (net, sites):
            sites.start(range(1))
            alone = [net.run_job(1, values[0]) for _ in range(args.jobs)]
            sites.start(range(1, args.sites))
            net.run_job(args.sites, everything)  # warm-up: the other sites' first job
            full = [net.run_job(args.sites, everything) for _ in range(args.jobs)]
            poll_s = net.poll_cpu_s(full[-1].job_id)
        local = local_ms(root, args.sites, runs=5)
        one_index, in_numpy = pooled_references(
            root, args.sites, args.series, args.seed, 5, everything
        )
    report(args, alone, full, local, one_index, in_numpy, poll_s)
    return 0


def report(
    args: argparse.Namespace,
    alone: list[JobRun],
    full: list[JobRun],
    local: list[list[float]],
    one_index: list[float],
    in_numpy: list[float],
    poll_s: float,
) -> None:
    n, total = args.sites, args.sites * args.series
    site_ms = percentile([t for site in local for t in site], 0.5)
    serial_ms = sum(percentile(site, 0.5) for site in local)
    print(
        f"sites={n}, each its own forked process (SiteAgent, long-poll {AGENT_WAIT_S:.0f} s); "
        f"series/site={args.series}; hub: `jip hub up` subprocess, HTTPS with client "
        f"certificates on 127.0.0.1; job: count + histogram of PatientAgeYears on "
        f"{list(EDGES)}, k = all sites; jobs={args.jobs} at 1 site, 1 + {args.jobs} at {n}"
    )
    print("check: every pooled result equals NumPy's over its sites' values")
    e2e = [j.seconds * 1000 for j in full]
    e2e_ms, ref_ms, numpy_ms = (
        percentile(e2e, 0.5),
        percentile(one_index, 0.5),
        percentile(in_numpy, 0.5),
    )
    print(
        f"(a) {n} sites, submit -> pooled result: p50={e2e_ms:.0f}ms "
        f"(min {min(e2e):.0f}, max {max(e2e):.0f})"
    )
    print(
        f"    vs run_fed_stats over one index of all {total} series, p50={ref_ms:.1f}ms: "
        f"ratio={e2e_ms / ref_ms:.1f}x (the reference: the same query, checks and outputs)"
    )
    print(
        f"    vs NumPy over the {total} values in memory, p50={numpy_ms:.3f}ms: "
        f"ratio={e2e_ms / numpy_ms:.0f}x (no index, no checks: not like for like)"
    )
    print(
        f"    vs the {n} sites' local computes one after another (sum of their p50s), "
        f"{serial_ms:.1f}ms: ratio={e2e_ms / serial_ms:.1f}x (one index of all series "
        f"costs {ref_ms / serial_ms:.1f}x that: run_fed_stats grows faster than its series)"
    )
    polls = sum(j.polls for j in full) / len(full)
    per_site = percentile([j.hub_cpu_s * 1000 / j.sites for j in full], 0.5)
    sites_only = percentile([(j.hub_cpu_s - j.polls * poll_s) * 1000 / j.sites for j in full], 0.5)
    print(
        f"(b) hub CPU per site per job: p50={per_site:.1f}ms, of which the sites' own "
        f"requests {sites_only:.1f}ms (the rest: the researcher's {polls:.0f} status "
        f"polls at {poll_s * 1000:.1f}ms each)"
    )
    print(
        f"    vs a site computing its result locally (run_fed_stats over its own "
        f"{args.series} series), p50={site_ms:.1f}ms: ratio={per_site / site_ms:.1f}x, "
        f"sites' share {sites_only / site_ms:.1f}x"
    )
    latencies = [s * 1000 for j in full for s in j.latencies_s]
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    print(
        f"    per-site latency, hub took the job -> hub stored the site's result: "
        f"p50={p50:.0f}ms p95={p95:.0f}ms: ratio={p50 / site_ms:.0f}x / {p95 / site_ms:.0f}x"
    )
    one = percentile([j.seconds * 1000 for j in alone], 0.5)
    one_latency = percentile([s * 1000 for j in alone for s in j.latencies_s], 0.5)
    one_cpu = percentile([j.hub_cpu_s * 1000 for j in alone], 0.5)
    print(
        f"(c) 1 site, the fixed overhead: submit -> pooled p50={one:.0f}ms, latency "
        f"p50={one_latency:.0f}ms, hub CPU {one_cpu:.0f}ms per job; "
        f"ratio={one / site_ms:.0f}x the site's local compute"
    )


if __name__ == "__main__":
    raise SystemExit(main())
