"""The site's Prometheus metrics, in one place, so that a dashboard knows every name.

Every part of a site exposes ``/metrics`` (``jip up`` and each cluster role). The DICOM
listener runs in processes of its own (:mod:`jip.store.dimse.listener`) that serve no
HTTP: they are started with ``PROMETHEUS_MULTIPROC_DIR`` set, so prometheus_client
keeps their values in files there, and the HTTP process adds them to its own when it is
scraped (:func:`exposition`). Families that exist both in-process and in those files
(``jip_store_bytes_total``: STOW-RS here, C-STORE there) are merged, sample by sample.

Names (the chart's Grafana dashboard, charts/jip/dashboards/jip.json, uses them):

- ``jip_dicom_cstore_total{status}``, ``jip_dicom_cstore_seconds``: C-STOREs answered,
  by outcome (``success``, ``refused``, ``failed``), and the time to answer them;
- ``jip_store_bytes_total{via}``: bytes of new instances stored, ``dimse`` (C-STORE from a
  peer, retrieves included) or ``http`` (STOW-RS, uploads, results);
- ``jip_index_lag_seconds``: age of the oldest instance the indexer has not indexed yet;
- ``jip_flow_runs{state}``: workflow runs by state, counted when scraped;
- ``jip_http_request_seconds{route,method,status}``: HTTP latency by route template;
- ``jip_login_failures_total``: failed password logins.

``/metrics`` answers loopback clients only unless ``metrics.allow`` or
``metrics.token_file`` say otherwise (:class:`jip.edge.MetricsGate`). In the cluster,
each JIP pod runs :func:`relay` beside the service (``python -m jip.metrics relay``): it
serves ``/metrics`` on a port of its own, which no Service routes and the
NetworkPolicy opens to the monitoring namespace only, by fetching the service's
``/metrics`` over loopback.
"""

from __future__ import annotations

import argparse
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Latency buckets from a quick C-STORE (a few ms) to a slow WADO render (tens of s).
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

CSTORE_TOTAL = Counter("jip_dicom_cstore", "C-STORE requests answered, by outcome.", ["status"])
CSTORE_SECONDS = Histogram(
    "jip_dicom_cstore_seconds",
    "Time to answer one C-STORE (checks, storage, catalog).",
    buckets=_SECONDS,
)
STORED_BYTES = Counter(
    "jip_store_bytes", "Bytes of new instances stored, by the way they came in.", ["via"]
)
INDEX_LAG = Gauge(
    "jip_index_lag_seconds",
    "Age of the oldest stored instance not indexed yet (0: none).",
    multiprocess_mode="max",  # only the indexer sets it; listener processes hold 0
)
HTTP_SECONDS = Histogram(
    "jip_http_request_seconds",
    "HTTP request latency by route template, method and status.",
    ["route", "method", "status"],
    buckets=_SECONDS,
)
LOGIN_FAILURES = Counter("jip_login_failures", "Failed password logins.")


class _CallbackGauge(Collector):
    """A gauge family computed when scraped (e.g. runs by state from the database)."""

    def __init__(self, name: str, doc: str, label: str, read: Callable[[], dict[str, int]]) -> None:
        self.name, self.doc, self.label, self.read = name, doc, label, read

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.doc, labels=[self.label])
        try:
            counts = self.read()
        except Exception:  # a scrape must not fail because the database is away
            counts = {}
        for value, count in sorted(counts.items()):
            family.add_metric([value], count)
        yield family


_callbacks: dict[str, _CallbackGauge] = {}


def register_gauge(name: str, doc: str, label: str, read: Callable[[], dict[str, int]]) -> None:
    """Expose ``read()`` (label value → number) as gauge ``name``; the last caller wins.

    A process builds its runtime more than once in tests, so registering again replaces
    the reader instead of failing on a duplicate name.
    """
    old = _callbacks.pop(name, None)
    if old is not None:
        REGISTRY.unregister(old)
    _callbacks[name] = _CallbackGauge(name, doc, label, read)
    REGISTRY.register(_callbacks[name])


def shared_dir(data_dir: Path) -> Path:
    """Where the listener processes of the site with this data directory keep metrics."""
    return data_dir / "metrics"


def listener_environment(directory: Path) -> dict[str, str]:
    """The environment for a listener process whose metrics the HTTP process exposes."""
    directory.mkdir(parents=True, exist_ok=True)
    return {**os.environ, MULTIPROC_ENV: str(directory)}


def clear_shared(directory: Path) -> None:
    """Forget the listener processes' files of an earlier run (counters restart at 0)."""
    if directory.is_dir():
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)


def exposition(shared: Path | None = None) -> bytes:
    """This process's metrics plus those the listener processes left in ``shared``."""
    families: dict[str, Metric] = {}
    sources: list[Iterable[Metric]] = [REGISTRY.collect()]
    if shared is not None and shared.is_dir() and any(shared.glob("*.db")):
        sources.append(MultiProcessCollector(None, path=str(shared)).collect())
    for source in sources:
        for family in source:
            _merge(families, family)
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Fixed(list(families.values())))
    return generate_latest(merged)


def _merge(families: dict[str, Metric], family: Metric) -> None:
    known = families.get(family.name)
    if known is None:
        families[family.name] = family
        return
    totals = {(s.name, tuple(sorted(s.labels.items()))): s for s in known.samples}
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue  # per process; meaningless summed
        key = (sample.name, tuple(sorted(sample.labels.items())))
        before = totals.get(key)
        totals[key] = (
            sample if before is None else before._replace(value=before.value + sample.value)
        )
    known.samples = list(totals.values())


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


# -- The relay: /metrics on a port of its own (the cluster's scrape path) -------------------
RELAY_PORT = 9102
RELAY_TIMEOUT_S = 10.0
log = logging.getLogger(__name__)


class _RelayHandler(BaseHTTPRequestHandler):
    """GET /metrics fetches ``source`` over loopback; GET /healthz answers the relay's
    probes; everything else is a 404. No header of the caller is passed on."""

    source = ""
    server_version = "jip-metrics-relay"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, b"ok\n", "text/plain")
        elif self.path == "/metrics":
            self._relay()
        else:
            self._answer(404, b"only /metrics and /healthz are served here\n", "text/plain")

    def _relay(self) -> None:
        try:
            with urllib.request.urlopen(self.source, timeout=RELAY_TIMEOUT_S) as upstream:
                body = upstream.read()
                content_type = upstream.headers.get("Content-Type", CONTENT_TYPE)
        except (urllib.error.URLError, OSError) as exc:
            message = f"cannot read {self.source}: {exc}; is the service up?\n"
            self._answer(502, message.encode(), "text/plain")
            return
        self._answer(200, body, content_type)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics relay: " + format, *args)


def relay_server(*, host: str, port: int, source: str) -> ThreadingHTTPServer:
    """A server on ``host:port`` relaying ``source`` (the service's loopback /metrics)."""
    handler = type("RelayHandler", (_RelayHandler,), {"source": source})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jip.metrics",
        description="Serve a JIP service's /metrics on a port of its own (the cluster's "
        "scrape path): the service answers /metrics to loopback callers only.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("relay", help="relay the service's /metrics to this port")
    run.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    run.add_argument("--port", type=int, default=RELAY_PORT, help="port to listen on")
    run.add_argument(
        "--source",
        default=f"http://127.0.0.1:{os.environ.get('JIP_HTTP_PORT', '8000')}/metrics",
        help="the service's /metrics, on loopback (default: JIP_HTTP_PORT or 8000)",
    )
    args = parser.parse_args(argv)
    server = relay_server(host=args.host, port=args.port, source=args.source)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log.info("relaying %s on %s:%s/metrics", args.source, args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
