"""/metrics: the names the chart's dashboard reads, from every process of a site.

The end-to-end check runs on the session's shared `jip up` (tests/up_site.py): the
C-STOREs are answered by listener processes that serve no HTTP, so their counts reach
/metrics only through the shared directory the HTTP process reads.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tests.support.servers import serve_in_thread
from tests.up_site import UpSite

from jip import metrics
from jip.app import build_app
from jip.config import Settings
from jip.runtime import Runtime, build_runtime

TOKEN = "scrape-me-7f3a9c"
STRANGER = ("203.0.113.7", 40000)  # TEST-NET-3: no loopback, no allow list


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
    up_site: UpSite, tmp_path: Path
) -> None:
    # A small head MR of its own, not the session's abdominal CT: the auto-rule test
    # (tests/test_up_workflow.py) must be the first to send that, after its rule exists.
    import random

    from jip.samples import image_series, random_patient, write_datasets

    patient = random_patient(random.Random(4711), 1)
    probe = image_series(patient=patient, modality="MR", body_part="HEAD", slices=3,
                         rows=32, columns=32)  # fmt: skip
    files = [str(p) for p in write_datasets(probe, tmp_path / "probe")]
    sent = subprocess.run(  # storescu: answered by the listener processes
        ["storescu", "-aec", "JIP", "127.0.0.1", str(up_site.dicom_port), *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    stranger = httpx.post(
        f"{up_site.origin}/auth/token",
        data={"grant_type": "password", "username": "nobody-here", "password": "wrong-1234",
              "client_id": "jip-cli"},
    )  # fmt: skip
    assert stranger.status_code in (400, 401)
    up_site.api.get("/api/flow/runs")

    scrape = httpx.get(f"{up_site.origin}/metrics")  # from loopback: no token needed
    assert scrape.status_code == 200
    found = samples(scrape.text)

    stored = found[("jip_dicom_cstore_total", (("status", "success"),))]
    assert stored >= len(files)
    assert found[("jip_store_bytes_total", (("via", "dimse"),))] > 0
    assert found[("jip_dicom_cstore_seconds_count", ())] >= stored
    assert found[("jip_login_failures_total", ())] >= 1
    assert ("jip_index_lag_seconds", ()) in found
    assert any(name == "jip_flow_runs" for name, _ in found)
    routes = {dict(labels).get("route") for name, labels in found if name.startswith("jip_http")}
    assert "/api/flow/runs" in routes  # the route template, not the URL


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A site with auth on, a metrics token file and one allowed network."""
    data = tmp_path_factory.mktemp("metrics-gate")
    token_file = data / "metrics-token"
    token_file.write_text(f"{TOKEN}\n")
    settings = Settings(
        data_dir=data / "data",
        metrics={"allow": ["198.51.100.0/24"], "token_file": token_file},
    )
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()


def scrape(runtime: Runtime, client: tuple[str, int], **headers: str) -> httpx.Response:
    with TestClient(build_app(runtime), client=client) as test_client:
        return test_client.get("/metrics", headers=headers)


def test_metrics_are_refused_to_a_network_client_without_a_token(gated: Runtime) -> None:
    refused = scrape(gated, STRANGER)
    assert refused.status_code == 403
    assert "metrics.token_file" in refused.json()["detail"]
    assert "jip_" not in refused.text
    assert scrape(gated, STRANGER, authorization="Bearer wrong-token").status_code == 403
    assert scrape(gated, STRANGER, authorization=TOKEN).status_code == 403  # no scheme


def test_metrics_are_served_to_the_right_bearer_token_from_anywhere(gated: Runtime) -> None:
    served = scrape(gated, STRANGER, authorization=f"Bearer {TOKEN}")
    assert served.status_code == 200
    assert "jip_http_request_seconds" in served.text


def test_metrics_are_served_to_loopback_and_allowed_networks(gated: Runtime) -> None:
    assert scrape(gated, ("127.0.0.1", 40000)).status_code == 200
    assert scrape(gated, ("::1", 40000)).status_code == 200
    assert scrape(gated, ("198.51.100.20", 40000)).status_code == 200


def test_a_request_through_a_trusted_proxy_is_never_allowed_by_address(gated: Runtime) -> None:
    # The reverse proxy on loopback forwards a caller from an allowed network: still the
    # network (an Ingress), so only the token lets it in.
    forwarded = {"x-forwarded-for": "198.51.100.20"}
    assert scrape(gated, ("127.0.0.1", 40000), **forwarded).status_code == 403
    with_token = scrape(gated, ("127.0.0.1", 40000), authorization=f"Bearer {TOKEN}", **forwarded)
    assert with_token.status_code == 200


def test_an_unreadable_token_file_lets_no_one_in_by_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, metrics={"token_file": tmp_path / "missing"})
    runtime = build_runtime(settings)
    try:
        assert scrape(runtime, STRANGER, authorization="Bearer ").status_code == 403
        assert scrape(runtime, STRANGER, authorization=f"Bearer {TOKEN}").status_code == 403
    finally:
        runtime.close()


def test_a_bad_allow_entry_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"metrics\.allow: 'pods' is no IP address or CIDR"):
        Settings(data_dir=tmp_path, metrics={"allow": ["pods"]})


def interface_address() -> str | None:
    """A non-loopback IPv4 address of this machine, or None where it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_a_real_client_on_a_non_loopback_address_is_refused(tmp_path: Path) -> None:
    address = interface_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    runtime = build_runtime(Settings(data_dir=tmp_path / "d", metrics={"token_file": token_file}))
    try:
        with serve_in_thread(build_app(runtime), host=address) as origin:
            assert httpx.get(f"{origin}/metrics").status_code == 403
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.get(f"{origin}/metrics", headers=bearer).status_code == 200
            assert httpx.get(f"{origin}/healthz").status_code in (200, 503)  # probes stay open
    finally:
        runtime.close()


def test_the_relay_serves_the_services_metrics_on_a_port_of_its_own(tmp_path: Path) -> None:
    """The cluster's scrape path: the service answers only loopback; the relay beside it
    fetches over loopback and serves a network caller (the NetworkPolicy decides who)."""
    address = interface_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind")
    runtime = build_runtime(Settings(data_dir=tmp_path))
    try:
        with serve_in_thread(build_app(runtime)) as origin:
            relay = metrics.relay_server(host=address, port=0, source=f"{origin}/metrics")
            threading.Thread(target=relay.serve_forever, daemon=True).start()
            try:
                relayed = f"http://{address}:{relay.server_address[1]}"
                scraped = httpx.get(f"{relayed}/metrics")
                assert scraped.status_code == 200
                assert "jip_http_request_seconds" in scraped.text
                assert scraped.headers["content-type"].startswith("text/plain")
                assert httpx.get(f"{relayed}/healthz").status_code == 200
                assert httpx.get(f"{relayed}/api/me").status_code == 404  # nothing else
            finally:
                relay.shutdown()
                relay.server_close()
    finally:
        runtime.close()


def test_the_relay_says_when_the_service_is_away(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    relay = metrics.relay_server(
        host="127.0.0.1", port=0, source=f"http://127.0.0.1:{closed}/metrics"
    )
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{relay.server_address[1]}/metrics")
        assert answer.status_code == 502
        assert "is the service up?" in answer.text
    finally:
        relay.shutdown()
        relay.server_close()


def test_the_relay_command_has_help() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "jip.metrics", "relay", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--source" in shown.stdout
