"""/metrics: the names the chart's dashboard reads, from every process of a site.

The end-to-end check runs on the session's shared `jip up` (tests/up_site.py): the
C-STOREs are answered by listener processes that serve no HTTP, so their counts reach
/metrics only through the shared directory the HTTP process reads.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.up_site import AbdomenCt, UpSite

from jip import metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) → value of a Prometheus text exposition."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_listener_processes_counts_are_added_to_this_processs(tmp_path: Path) -> None:
    shared = metrics.shared_dir(tmp_path)
    child = (
        "from jip import metrics\n"
        "metrics.CSTORE_TOTAL.labels('success').inc(3)\n"
        "metrics.STORED_BYTES.labels('dimse').inc(1000)\n"
        "metrics.CSTORE_SECONDS.observe(0.02)\n"
    )
    for _ in range(2):  # two listener processes
        subprocess.run(
            [sys.executable, "-c", child], env=metrics.listener_environment(shared), check=True
        )
    before = samples(metrics.exposition().decode())
    here = before.get(("jip_store_bytes_total", (("via", "dimse"),)), 0.0)
    metrics.STORED_BYTES.labels("dimse").inc(24)

    merged = samples(metrics.exposition(shared).decode())

    assert merged[("jip_dicom_cstore_total", (("status", "success"),))] >= 6
    assert merged[("jip_store_bytes_total", (("via", "dimse"),))] == here + 24 + 2000
    assert merged[("jip_dicom_cstore_seconds_count", ())] >= 2
    # One family per name, as Prometheus requires (the parser above would merge silently).
    text = metrics.exposition(shared).decode()
    assert text.count("# TYPE jip_store_bytes_total counter") == 1

    metrics.clear_shared(shared)
    assert not list(shared.glob("*.db"))


def test_a_scrape_survives_a_reader_that_fails() -> None:
    def broken() -> dict[str, int]:
        raise RuntimeError("database away")

    metrics.register_gauge("jip_test_broken", "A reader that fails.", "state", broken)
    metrics.register_gauge("jip_test_broken", "Registered twice: replaced.", "state", broken)
    assert "jip_test_broken" in metrics.exposition().decode()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")
def test_a_running_site_exposes_every_metric_the_dashboard_reads(
    up_site: UpSite, abdomen_ct: AbdomenCt
) -> None:
    written = abdomen_ct.send()  # storescu: answered by the listener processes
    stranger = httpx.post(
        f"{up_site.origin}/auth/token",
        data={"grant_type": "password", "username": "nobody-here", "password": "wrong-1234",
              "client_id": "jip-cli"},
    )  # fmt: skip
    assert stranger.status_code in (400, 401)
    up_site.api.get("/api/flow/runs")

    scrape = httpx.get(f"{up_site.origin}/metrics")  # public, as probes are
    assert scrape.status_code == 200
    found = samples(scrape.text)

    stored = found[("jip_dicom_cstore_total", (("status", "success"),))]
    assert stored >= len(list(written.series.path.glob("*.dcm")))
    assert found[("jip_store_bytes_total", (("via", "dimse"),))] > 0
    assert found[("jip_dicom_cstore_seconds_count", ())] >= stored
    assert found[("jip_login_failures_total", ())] >= 1
    assert ("jip_index_lag_seconds", ()) in found
    assert any(name == "jip_flow_runs" for name, _ in found)
    routes = {dict(labels).get("route") for name, labels in found if name.startswith("jip_http")}
    assert "/api/flow/runs" in routes  # the route template, not the URL
