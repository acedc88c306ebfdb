"""End to end with the real hub: a site (its own catalog and index, series made by
jip.samples) joins the hub over mutual TLS; a researcher submits a count and a histogram
of PatientAgeYears, opens the sealed result, and it equals the local computation; an
untrusted workflow is refused and the reason is in the site's audit log."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.federation.site.support import Researcher
from tests.support.network import free_port

from jip.base import AuditFilter, AuditLog
from jip.config import Settings
from jip.federation import DeclaredOutput, SiteResult, encode_key, open_result
from jip.federation.site import Backoff, Policies, SiteAgent, SiteFiles, join
from jip.meta import Indexer
from jip.runtime import Runtime, build_runtime
from jip.samples import synthetic_site, write_datasets

hub_package = pytest.importorskip("jip.federation.hub")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[object, str]]:
    import uvicorn

    hub_package.init_hub(tmp_path / "hub")
    opened = hub_package.open_hub(tmp_path / "hub")
    port = free_port()
    server = uvicorn.Server(
        hub_package.server_config(
            opened, "127.0.0.1", port, log_config=None, timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the hub did not start"
        time.sleep(0.02)
    yield opened, f"https://127.0.0.1:{port}"
    server.should_exit = server.force_exit = True
    thread.join(timeout=30)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[tuple[Runtime, list[float]]]:
    runtime = build_runtime(Settings(data_dir=tmp_path / "site", auth={"enabled": False}))
    datasets = synthetic_site(
        patients=6, studies_per_patient=2, series_per_study=2, slices=1, rows=16, columns=16, seed=5
    )
    for path in write_datasets(datasets, tmp_path / "spool"):
        runtime.ingestor.ingest_file(path)
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).drain()
    ages = {ds.SeriesInstanceUID: float(str(ds.PatientAge)[:3]) for ds in datasets}
    yield runtime, list(ages.values())
    runtime.close()


def test_a_researcher_opens_exactly_the_local_computation(
    tmp_path: Path, hub: tuple[object, str], runtime: tuple[Runtime, list[float]]
) -> None:
    opened, url = hub
    site_runtime, ages = runtime
    enrolment = hub_package.add_site(opened, "mannheim")
    researcher_token = hub_package.add_researcher(opened, "ana")["token"]
    files = SiteFiles.of(site_runtime.settings.data_dir)
    join(files, url, enrolment.token, ca_file=opened.paths.ca_cert)
    researcher, stranger = Researcher.new(), Researcher.new()
    policies = Policies(site_runtime.engine)
    policies.trust("publisher", encode_key(researcher.publisher.public))
    policies.set({"projects": "default", "approval": "automatic"})

    values = np.sort(np.array(ages))
    split = next(v for v in np.unique(values) if 5 <= (values < v).sum() <= values.size - 5)
    edges = (0.0, float(split), 150.0)
    outputs = (
        DeclaredOutput(name="n", kind="count", field="PatientAgeYears"),
        DeclaredOutput(name="age", kind="histogram", field="PatientAgeYears", edges=edges),
    )
    job = researcher.job(outputs, query={"match_all": {}}, project="default")
    untrusted = researcher.job(outputs, workflow=stranger.workflow(), project="default")
    http = httpx.Client(
        verify=ssl.create_default_context(cafile=str(opened.paths.ca_cert)),
        headers={"Authorization": f"Bearer {researcher_token}"},
    )
    for spec in (job, untrusted):
        answer = http.post(f"{url}/api/jobs", json=spec.model_dump(mode="json"))
        assert answer.status_code < 300, answer.text

    agent = SiteAgent(
        site_runtime.engine, site_runtime.index, files, wait_s=1, backoff=Backoff(0.01, 0.05)
    )
    agent.cycle()
    agent.cycle(0)

    results = http.get(f"{url}/api/jobs/{job.id}/results").json()
    (result,) = [SiteResult.model_validate(r) for r in results]
    found = open_result(result, researcher.box.private)
    counts, _ = np.histogram(values, bins=edges)
    assert found["n"] == {"all:n": values.size}
    assert found["age"] == {"all:counts": counts.tolist(), "all:below": 0, "all:above": 0}
    status = http.get(f"{url}/api/jobs/{untrusted.id}").json()
    site_state = next(iter(status["sites"].values()))
    assert "refused" in str(site_state)
    (refused,) = AuditLog(site_runtime.engine).list(AuditFilter(action="fed.job.refused"))
    assert refused.target == f"job:{untrusted.id}"
    assert "not a trusted key" in refused.detail["reason"]
