"""A federation network on this machine for bench_federation.py: the hub as `jip hub up`
in a subprocess, each site in its own forked process, and the researcher's side.

Sites are processes, not threads: a site's work (SQLite, disclosure checks, sealing)
holds the GIL, and on a real network every site has its own machine. Each builds its
data first and enrols only when told, so that a job reaches exactly the sites wanted
(the hub sends a job to the sites enrolled when it is submitted).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, TypeAlias

import httpx
import numpy as np
from sqlalchemy import select
from tests.federation.site.support import EDGES, PROJECT, Researcher, series_docs
from tests.support.network import free_port

from jip.db import make_engine
from jip.federation import (
    Histogram,
    JobSpec,
    SiteResult,
    combine_histograms,
    encode_key,
    open_result,
    read_counts,
    read_histograms,
)
from jip.federation.hub import add_researcher, add_site, init_hub, open_hub
from jip.federation.hub.tables import HubJob, HubResult
from jip.federation.site import Policies, SiteAgent, SiteFiles, join
from jip.meta.index_sqlite import SqliteIndex
from jip.migrations import upgrade

POLL_S = 0.05  # the researcher's status polls while a job runs
AGENT_WAIT_S = 25.0  # the agent's long-poll, as `jip up` runs it
START_TIMEOUT_S = 120.0
JOB_TIMEOUT_S = 300.0
STUCK = {"refused", "failed", "missed_deadline"}
JIP = (sys.executable, "-m", "jip.cli.main")
Ready: TypeAlias = "Queue[tuple[int, str | None]]"  # (site, None once its agent runs, or why not)


def site_values(site: int, series: int, seed: int) -> list[float]:
    """The ages at ``site``: one uniform draw in each of ``series`` equal slices of
    [20, 100), so that each 20-year bin holds a quarter of them (and at 20 series or more
    passes the minimum cell count of 5)."""
    rng = np.random.default_rng([seed, site])
    ages = 20.0 + 80.0 * (np.arange(series) + rng.uniform(0.0, 1.0, series)) / series
    return [float(v) for v in rng.permutation(ages)]


def site_dir(root: Path, site: int) -> Path:
    return root / f"site-{site:02d}"


def run_site(
    root: Path,
    site: int,
    series: int,
    seed: int,
    hub: tuple[str, Path, str],
    publisher: str,
    go: Event,
    ready: Ready,
) -> None:
    """One site's process: its data, then (on ``go``) enrolment, policy and the agent."""
    directory = site_dir(root, site)
    try:
        directory.mkdir(parents=True)
        catalog = f"sqlite:///{directory / 'catalog.db'}"
        upgrade(catalog)
        engine = make_engine(catalog)
        index = SqliteIndex.from_url(f"sqlite:///{directory / 'index.db'}")
        index.upsert(series_docs(site_values(site, series, seed), start=site * series))
        go.wait()
        files = SiteFiles.of(directory)
        hub_url, ca, token = hub
        join(files, hub_url, token, ca_file=ca)
        policies = Policies(engine)
        policies.trust("publisher", publisher)
        policies.set({"projects": PROJECT, "approval": "automatic"})
        SiteAgent(engine, index, files, wait_s=AGENT_WAIT_S).start()
    except Exception as exc:
        ready.put((site, f"{type(exc).__name__}: {exc}"))
        return
    ready.put((site, None))
    while True:  # the agent runs in its thread until the bench terminates this process
        time.sleep(3600)


class HubProcess:
    """`jip hub up` in a subprocess (its log in a file); its CPU time from ``/proc``."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        port = free_port()
        self.url, self.ca, self.log = f"https://127.0.0.1:{port}", data_dir / "ca.pem", log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [*JIP, "hub", "up", "--data-dir", str(data_dir), "--port", str(port)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca))) as client:
            while self.process.poll() is None:
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"the hub did not answer within {START_TIMEOUT_S:.0f} s")
                time.sleep(0.1)
        raise SystemExit(f"`jip hub up` exited ({self.process.returncode}); see {self.log}")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the hub process so far (all its threads)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # from field 3 (state) on
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SiteProcesses:
    """A process per site, building its data at once and enrolling when started."""

    def __init__(
        self, root: Path, series: int, seed: int, hub: HubProcess, tokens: list[str], publisher: str
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.ready: Ready = context.Queue()
        self.gos = [context.Event() for _ in tokens]
        self.processes = [
            context.Process(
                target=run_site,
                daemon=True,
                args=(
                    root,
                    i,
                    series,
                    seed,
                    (hub.url, hub.ca, token),
                    publisher,
                    self.gos[i],
                    self.ready,
                ),
            )
            for i, token in enumerate(tokens)
        ]
        for process in self.processes:
            process.start()

    def start(self, sites: range) -> None:
        """Let these sites enrol and start their agents; back once every one has."""
        for i in sites:
            self.gos[i].set()
        for _ in sites:
            try:
                site, error = self.ready.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                raise SystemExit(f"sites did not enrol within {START_TIMEOUT_S:.0f} s") from None
            if error is not None:
                raise SystemExit(f"site {site} did not start: {error}")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(timeout=30)


@dataclass
class JobRun:
    """One job's figures: end to end, the hub's CPU, and each site's latency."""

    seconds: float
    hub_cpu_s: float
    latencies_s: list[float]
    polls: int
    sites: int
    job_id: str


class Network:
    """The researcher's side of a running network, and the hub's own records."""

    def __init__(self, hub: HubProcess, hub_dir: Path, token: str, researcher: Researcher):
        self.hub, self.hub_dir, self.researcher = hub, hub_dir, researcher
        self.http = httpx.Client(
            base_url=hub.url,
            timeout=30.0,
            verify=ssl.create_default_context(cafile=str(hub.ca)),
            headers={"Authorization": f"Bearer {token}"},
        )

    def run_job(self, sites: int, values: Sequence[float]) -> JobRun:
        """Submit a job for ``sites`` sites (k = all), wait, open, pool and check it."""
        spec = self.researcher.job().model_copy(update={"min_sites": sites})
        cpu_before = self.hub.cpu_s()
        started = time.perf_counter()
        self.http.post("/api/jobs", json=spec.model_dump(mode="json")).raise_for_status()
        polls = self._wait(spec.id, lambda s: len(s["delivered"]) == sites)
        found = self.http.get(f"/api/jobs/{spec.id}/results").json()
        results = [SiteResult.model_validate(r) for r in found]
        pooled_n, pooled = pool(spec, results, self.researcher.box.private)
        seconds = time.perf_counter() - started
        check(pooled_n, pooled, values, sites, len(results))
        # each site's last message (its final state) counts towards the job's hub CPU
        polls += self._wait(
            spec.id, lambda s: all(v["state"] == "done" for v in s["sites"].values())
        )
        hub_cpu = self.hub.cpu_s() - cpu_before
        return JobRun(seconds, hub_cpu, self._latencies(spec.id), polls, sites, spec.id)

    def poll_cpu_s(self, job_id: str, polls: int = 50) -> float:
        """The hub's CPU seconds for one researcher status poll (to tell the sites' share
        of a job's hub CPU from the researcher's)."""
        before = self.hub.cpu_s()
        for _ in range(polls):
            self.http.get(f"/api/jobs/{job_id}").raise_for_status()
        return (self.hub.cpu_s() - before) / polls

    def _wait(self, job_id: str, done: Callable[[dict[str, Any]], bool]) -> int:
        deadline, polls = time.monotonic() + JOB_TIMEOUT_S, 0
        while True:
            status = self.http.get(f"/api/jobs/{job_id}").json()
            polls += 1
            if done(status):
                return polls
            stuck = {s: v for s, v in status["sites"].items() if v["state"] in STUCK}
            if stuck or time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not complete: {stuck or status['sites']}")
            time.sleep(POLL_S)

    def _latencies(self, job_id: str) -> list[float]:
        """Per site: from the hub taking the job to the hub storing its result (the
        hub's own timestamps, from its database)."""
        opened = open_hub(self.hub_dir)
        try:
            with opened.sessions() as session:
                taken = session.scalars(select(HubJob.created_at).filter_by(id=job_id)).one()
                stored = session.scalars(
                    select(HubResult.received_at).filter_by(job_id=job_id)
                ).all()
        finally:
            opened.close()
        return [(at - taken).total_seconds() for at in stored]

    def close(self) -> None:
        self.http.close()


def pool(spec: JobSpec, results: Sequence[SiteResult], private: bytes) -> tuple[int, Histogram]:
    """The researcher's pooled count and histogram from the sites' sealed results."""
    count, hist = spec.outputs
    opened = [open_result(result, private) for result in results]
    total = sum(read_counts(count, found[count.name])["all"] for found in opened)
    parts = [read_histograms(hist, found[hist.name])["all"] for found in opened]
    return total, combine_histograms(parts)


def check(n: int, pooled: Histogram, values: Sequence[float], sites: int, got: int) -> None:
    """A wrong answer fails the bench: NumPy's histogram over every value is the truth."""
    x, bins = np.asarray(values), np.asarray(EDGES)
    counts, _ = np.histogram(x, bins=bins)
    expected = (x.size, tuple(counts.tolist()), int((x < bins[0]).sum()), int((x > bins[-1]).sum()))
    found = (n, pooled.counts, pooled.below, pooled.above)
    if got != sites or found != expected:
        raise SystemExit(
            f"MISMATCH: {got} of {sites} results pooled to (n, counts, below, "
            f"above) = {found}; NumPy over all the values says {expected}"
        )


@contextmanager
def network(
    root: Path, sites: int, series: int, seed: int
) -> Iterator[tuple[Network, SiteProcesses]]:
    """A hub with ``sites`` registered by `jip hub site add` (none enrolled yet), serving,
    and a process per site that has its data and waits to be started."""
    hub_dir, researcher = root / "hub", Researcher.new()
    init_hub(hub_dir)
    opened = open_hub(hub_dir)
    tokens = [add_site(opened, site_dir(root, i).name).token for i in range(sites)]
    bearer = add_researcher(opened, "bench")["token"]
    opened.close()  # no database handle crosses the forks
    hub = HubProcess(hub_dir, root / "hub.log")
    try:
        processes = SiteProcesses(
            root, series, seed, hub, tokens, encode_key(researcher.publisher.public)
        )
        try:
            hub.wait_ready()
            net = Network(hub, hub_dir, bearer, researcher)
            try:
                yield net, processes
            finally:
                net.close()
        finally:
            processes.stop()
    finally:
        hub.stop()
