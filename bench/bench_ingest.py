"""C-STORE ingest speed: JIP's listener against Orthanc, measured in the same run.

    .venv/bin/python bench/bench_ingest.py [--small 2000] [--large 600] [--senders 4 16]

Makes two CT data sets with ``jip.samples`` (small 64x64 and 512x512 instances),
then sends each with dcmtk's ``storescu`` (``TCP_NODELAY=1``, which dcmtk reads from
the environment) to Orthanc and to JIP's listener (``jip up --no-airflow`` runs the
same ``ListenerGroup``), each started on a fresh data directory for every
measurement. First with one sender, then with each ``--senders`` count of concurrent
storescu processes; each C-STORE's latency (request sent -> response received) comes
from storescu's own timestamped log. Each measurement runs ``--repeat`` times with the
targets alternating (other load on the machine drifts), and starts after an
``os.sync()``, with the earlier measurements' data left in place until the end (see
:func:`measure`); prints the medians of instances/s, MB/s, p50 and p99 latency and
their ratios against Orthanc, and the CPU time the receiving server used per instance
(less sensitive than throughput to other load on the machine). A send that fails (either
target) is printed with storescu's exit status and last lines, and measured once more.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from timing import percentile

from jip.config import DicomPeer, Settings, StoreSettings
from jip.runtime import build_runtime
from jip.samples import image_series, random_patient, write_datasets
from jip.store.dimse.listener import ListenerGroup

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
SERIES_SIZE = 100
CALLING_AE = "BENCH"  # storescu's -aet: a declared peer of JIP, which stores from peers only


@dataclass(frozen=True)
class Result:
    target: str
    data_set: str
    senders: int
    instances: int
    seconds: float
    megabytes: float
    cpu_seconds: float  # used by the receiving server's processes during the run
    latencies_ms: tuple[float, ...] = ()  # each C-STORE, request sent -> response received

    def latency(self, share: float) -> float:
        return percentile(list(self.latencies_ms), share)

    @property
    def cpu_ms_per_instance(self) -> float:
        return self.cpu_seconds / self.instances * 1000

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.megabytes / self.seconds


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


Server = tuple[str, int, Callable[[], int], Callable[[], float]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_data_set(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` CT instances of ``size`` x ``size`` in series of 100 slices."""
    import random

    rng = random.Random(size)
    paths: list[Path] = []
    series = 0
    while len(paths) < count:
        slices = min(SERIES_SIZE, count - len(paths))
        datasets = image_series(
            patient=random_patient(rng, series),
            slices=slices,
            rows=size,
            columns=size,
            series_number=series + 1,
        )
        paths += write_datasets(datasets, folder / f"series{series:03d}")
        series += 1
    return paths


# -- servers -----------------------------------------------------------------------------------
def orthanc_config(workdir: Path, **settings: object) -> tuple[Path, int, int]:
    """An Orthanc 1.x configuration on free ports with a fresh storage directory and no
    plugins (``settings`` added): its path, HTTP port and DICOM port."""
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "DicomCheckCalledAet": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        **settings,
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    return config_path, http_port, dicom_port


@contextlib.contextmanager
def orthanc(workdir: Path) -> Iterator[Server]:
    """Orthanc 1.x serving the benchmark (see :func:`orthanc_config`)."""
    config_path, http_port, dicom_port = orthanc_config(
        workdir, RemoteAccessAllowed=True, StorageCompression=False, HttpServerEnabled=True
    )
    log = (workdir / "orthanc.log").open("w")
    # dcmtk keeps Nagle's algorithm on unless TCP_NODELAY is set: without it Orthanc
    # answers each C-STORE a delayed-ACK later (about 20 instances/s).
    env = {**os.environ, "TCP_NODELAY": "1"}
    process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=log, env=env)
    url = f"http://127.0.0.1:{http_port}"

    def count() -> int:
        with urllib.request.urlopen(f"{url}/statistics", timeout=30) as response:
            return int(json.load(response)["CountInstances"])

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                count()
                break
            except OSError as exc:
                if time.monotonic() > deadline or process.poll() is not None:
                    log_file = workdir / "orthanc.log"
                    raise RuntimeError(f"Orthanc did not start, see {log_file}") from exc
                time.sleep(0.1)
        yield "ORTHANC", dicom_port, count, lambda: cpu_seconds([process.pid])
    finally:
        process.terminate()
        process.wait(30)
        log.close()


LISTENER_PROCESSES = 0  # --listeners; 0: one per core, as `jip up`
MAX_SENDERS = 4  # --senders: JIP's associations per address and per AE must admit them all


@contextlib.contextmanager
def jip(workdir: Path) -> Iterator[Server]:
    """JIP's DICOM listener group on a fresh data directory; the sending AE is a declared
    peer (JIP refuses C-STORE from unknown AEs) and the association limits admit every
    sender (the defaults do up to 8; a limit is never the bottleneck measured)."""
    limit = max(8, MAX_SENDERS)
    settings = Settings(
        data_dir=workdir / "jip-data",
        store=StoreSettings(
            dicom_port=free_port(),
            dicom_host="127.0.0.1",
            listener_processes=LISTENER_PROCESSES,
            peers={"bench": DicomPeer(ae_title=CALLING_AE, host="127.0.0.1", port=free_port())},
            max_associations_per_address=limit,
            max_associations_per_ae=limit,
            max_associations=max(32, limit),
        ),
    )
    runtime = build_runtime(settings)  # migrates, as `jip up` does before the listener
    group = ListenerGroup(settings, build_runtime)  # as jip.embedded builds it
    group.start()
    try:
        group.wait_ready(120)

        def count() -> int:
            return runtime.catalog.counts()["instances"]

        pids = [int(pid) for pid in group.describe()["pids"]]  # type: ignore[attr-defined]
        yield settings.store.ae_title, group.port, count, lambda: cpu_seconds(pids)
    finally:
        group.stop()
        runtime.close()


# -- measurement -------------------------------------------------------------------------------
# storescu logs each request and response with a microsecond timestamp
# ("1796641498.136.619": seconds, milliseconds, microseconds), from which the latency of
# every C-STORE as the sender sees it is read: request sent -> response received.
LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%Q} %m%n
"""


def latencies_ms(log: str) -> list[float]:
    """Milliseconds from each "Sending Store Request" to the next "Received Store Response"."""
    found: list[float] = []
    sent: float | None = None
    for line in log.splitlines():
        stamp, _, message = line.partition(" ")
        if message.startswith("Sending Store Request"):
            sent = _seconds(stamp)
        elif message.startswith("Received Store Response") and sent is not None:
            found.append((_seconds(stamp) - sent) * 1000)
            sent = None
    return found


def _seconds(stamp: str) -> float:
    seconds, millis, micros = stamp.split(".")
    return int(seconds) + int(millis) / 1e3 + int(micros) / 1e6


def send(files: list[Path], aet: str, port: int, senders: int) -> tuple[float, list[float]]:
    """Seconds for ``senders`` concurrent storescu processes to send ``files``, and the
    latency of each C-STORE in milliseconds."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    groups = [files[i::senders] for i in range(senders)]
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as config:
        config.write(LOG_CONFIG)
    start = time.perf_counter()
    command = ["storescu", "-lc", config.name, "-aec", aet, "-aet", CALLING_AE]
    processes = [
        subprocess.Popen(
            [*command, "127.0.0.1", str(port), *map(str, group)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for group in groups
    ]
    outputs = [p.communicate() for p in processes]
    elapsed = time.perf_counter() - start
    os.unlink(config.name)
    latencies: list[float] = []
    for process, (out, error) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            said = (out + error).decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"storescu failed ({process.returncode}): {' | '.join(said)}")
        latencies += latencies_ms(out.decode(errors="replace") + error.decode(errors="replace"))
    if len(latencies) != len(files):
        raise RuntimeError(f"read {len(latencies)} latencies for {len(files)} instances")
    return elapsed, latencies


def measure(
    target: str,
    server: Callable[[Path], contextlib.AbstractContextManager[Server]],
    data_set: str,
    files: list[Path],
    senders: int,
    scratch: Path,
) -> Result:
    """One measurement, on a fresh data directory under ``scratch``.

    The data directory stays until the whole benchmark ends: removed at once, its
    thousands of files would tax the next measurement's file creations (ext4 without a
    journal, as on this VM, skips inodes freed in the last 30 s, one by one, on every
    new file: measured, up to a fifth of a server's CPU, depending on where its files
    land) rather than the server that wrote them.
    """
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    workdir = Path(tempfile.mkdtemp(prefix=f"{target}-", dir=scratch))
    with server(workdir) as (aet, port, count, cpu):
        # Start with nothing left to write back from the previous measurement (the
        # other server's unflushed files): it would slow this one's fsyncs down.
        os.sync()
        cpu_before = cpu()
        seconds, latencies = send(files, aet, port, senders)
        cpu_used = cpu() - cpu_before
        stored = count()
    if stored != len(files):
        raise RuntimeError(f"{target} stored {stored} of {len(files)} instances")
    return Result(
        target, data_set, senders, len(files), seconds, megabytes, cpu_used, tuple(latencies)
    )


def report(results: list[Result]) -> None:
    """Medians of the repeats per (data set, senders, target), and JIP/Orthanc.

    Throughput ratios are JIP/Orthanc (above 1: JIP faster); latency ratios are
    Orthanc/JIP too, so above 1 means JIP answers sooner there as well.
    """
    groups: dict[tuple[str, int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.data_set, r.senders, r.target), []).append(r)

    def median(key: tuple[str, int, str], figure: Callable[[Result], float]) -> float:
        return statistics.median(figure(r) for r in groups[key])

    print(
        f"{'data set':<16}{'senders':>8}{'target':>9}{'inst/s':>9}{'MB/s':>8}"
        f"{'CPU ms/inst':>13}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'JIP/Orthanc inst/s':>20}{'p50':>6}{'p99':>6}"
    )
    for key in groups:
        data_set, senders, target = key
        rate = median(key, lambda r: r.per_second)
        p50, p99 = median(key, lambda r: r.latency(0.5)), median(key, lambda r: r.latency(0.99))
        ratios = ""
        ref = (data_set, senders, "orthanc")
        if target == "jip" and ref in groups:
            ratios = (
                f"{rate / median(ref, lambda r: r.per_second):>20.2f}"
                f"{median(ref, lambda r: r.latency(0.5)) / p50:>6.2f}"
                f"{median(ref, lambda r: r.latency(0.99)) / p99:>6.2f}"
            )
        print(
            f"{data_set:<16}{senders:>8}{target:>9}{rate:>9.0f}"
            f"{median(key, lambda r: r.mb_per_second):>8.1f}"
            f"{median(key, lambda r: r.cpu_ms_per_instance):>13.2f}{p50:>8.2f}{p99:>8.2f}{ratios}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="64x64 CT instances")
    parser.add_argument("--large", type=int, default=600, help="512x512 CT instances")
    parser.add_argument(
        "--senders",
        type=int,
        nargs="+",
        default=[4, 16],
        help="concurrent senders, measured after one sender",
    )
    parser.add_argument("--only", choices=["jip", "orthanc"], help="measure one target")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per measurement (median; targets alternate)"
    )
    parser.add_argument(
        "--listeners", type=int, default=0, help="JIP listener processes (0: one per core)"
    )
    args = parser.parse_args()
    global LISTENER_PROCESSES, MAX_SENDERS
    LISTENER_PROCESSES = args.listeners
    MAX_SENDERS = max(args.senders)
    if not shutil.which("storescu"):
        sys.exit("storescu (dcmtk) is required")
    targets = {"orthanc": orthanc, "jip": jip}
    if args.only:
        targets = {args.only: targets[args.only]}
    elif not Path(ORTHANC).exists():
        sys.exit("Orthanc is required for the reference (or pass --only jip)")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data = Path(tmp)
        t0 = time.perf_counter()
        data_sets = {
            f"{args.small} x 64^2": make_data_set(data / "small", args.small, 64)
            if args.small
            else [],
            f"{args.large} x 512^2": make_data_set(data / "large", args.large, 512)
            if args.large
            else [],
        }
        print(f"generated data in {time.perf_counter() - t0:.0f} s", flush=True)
        results = []
        for senders in dict.fromkeys([1, *args.senders]):
            for name, files in data_sets.items():
                if not files:
                    continue
                order = list(targets.items())
                for run in range(args.repeat):
                    # Alternate who goes first: other load on the machine drifts.
                    for target, server in order if run % 2 == 0 else order[::-1]:
                        try:
                            result = measure(target, server, name, files, senders, data)
                        except RuntimeError as exc:  # printed, and measured once more
                            print(f"  {name}, {senders} sender(s), {target}: {exc}; again")
                            result = measure(target, server, name, files, senders, data)
                        print(
                            f"  {name}, {senders} sender(s), {target}: {result.per_second:.0f}/s,"
                            f" p50 {result.latency(0.5):.2f} ms, p99 {result.latency(0.99):.2f} ms",
                            flush=True,
                        )
                        results.append(result)
        report(results)


if __name__ == "__main__":
    main()
