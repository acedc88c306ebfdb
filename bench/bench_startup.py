"""Restart after kill -9 and memory at rest: `jip up --no-airflow` against Orthanc.

    .venv/bin/python bench/bench_startup.py [--repeat 3] [--settle 5] [--listeners 0]

Starts each server on free ports and a fresh data directory (Orthanc 1.x from a minimal
JSON config, plugins off; JIP with the benchmark's AE as a declared peer), waits until
it answers C-ECHO (and, for JIP, its HTTP API /healthz), lets it idle ``--settle``
seconds and sums the RSS (and PSS, which counts shared pages once) of its process tree
from /proc. Then, ``--repeat`` times for each probe, kills the whole process tree with
SIGKILL (a crash: the parent and its listener processes at once), starts the server
again on the same data at once, as a supervisor would, and calls it in a tight loop
with dcmtk's echoscu (C-ECHO) or storescu (one small CT instance, C-STORE) until one
association succeeds: that is the time from kill -9 to the first accepted association
(and, at the first C-ECHO, the CPU seconds its processes have used: all of them, and
the busiest listener's, the least its wall time can be; JIP's parent goes on after
it has handed the listener its settings, so its own CPU says nothing here).
The targets alternate. Prints medians and the ratios JIP/Orthanc (below 1: JIP sooner
or smaller), the time from kill -9 until JIP's HTTP API answers /healthz (it starts
after the listener), the memory of each process at rest, and the import graph of a JIP
listener process (``python -X importtime``).

Run it on a quiet machine for absolute figures; on a shared one read the ratios and
note ``/proc/loadavg`` (printed at the start and the end). It starts after an
``os.sync()`` and once the CPUs were 85 % idle for a second (at most a minute's wait):
in `make bench` it follows the 1M-series query benchmark, whose JVM and 2 GB of files
are still going away for some seconds.

Python runs with its bytecode cache on, as on an installed site (``PYTHONPYCACHEPREFIX``
in a temporary folder, ``PYTHONDONTWRITEBYTECODE`` dropped); the first, untimed start
fills it, C-STORE included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from bench_ingest import ORTHANC, free_port, orthanc_config
from timing import wait_until_quiet

from jip.samples import image_series, random_patient, write_datasets

CALLING_AE = "BENCH"
PROBE_TIMEOUT_S = 60.0  # a restart slower than this is reported as a failure
PROBES = ("C-ECHO", "C-STORE")


@dataclass
class Target:
    """One server: how to start it on its data, and where it answers."""

    name: str
    command: list[str]
    env: dict[str, str]
    dicom_port: int
    called_ae: str
    log: Path
    health_url: str | None = None  # JIP's HTTP API: "the rest" after the listener
    process: subprocess.Popen[bytes] | None = None
    times: dict[str, list[float]] = field(default_factory=dict)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # its own process group: kill -9 reaches the tree
            )

    def kill_9(self) -> None:
        """SIGKILL to every process of the tree at once, then wait until all are gone."""
        assert self.process is not None
        pids = process_tree(self.process.pid)
        everyone = [self.process.pid, *pids]
        os.killpg(self.process.pid, signal.SIGKILL)
        for pid in everyone:  # a child that left the group still goes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        while any(alive(pid) for pid in pids):
            time.sleep(0.005)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill_9()

    def record(self, figure: str, seconds: float) -> None:
        self.times.setdefault(figure, []).append(seconds)


def process_tree(root: int) -> list[int]:
    """The descendants of ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_s(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each process has used so far, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    spent = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            spent[pid] = (int(fields[11]) + int(fields[12])) / tick
    return spent


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """Summed RSS and PSS (MB) of ``pids``."""
    rss = pss = 0.0
    for pid in pids:
        one_rss, one_pss = process_memory_mb(pid)
        rss, pss = rss + one_rss, pss + one_pss
    return rss, pss


def process_memory_mb(pid: int) -> tuple[float, float]:
    """RSS and PSS (MB) of one process, from /proc."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "Rss":
            rss += int(value.split()[0])
        elif name == "Pss":
            pss += int(value.split()[0])
    return rss / 1024, pss / 1024


def process_label(pid: int) -> str:
    """What a process of the tree is: `jip up`'s own, a DICOM listener, Orthanc..."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    if "jip.store.dimse.listener" in argv:
        return "DICOM listener"
    if "up" in argv:
        return "jip up (HTTP API, indexer, ...)"
    return Path(argv[0]).name


def probe(target: Target, kind: str, instance: Path) -> bool:
    """One association: C-ECHO, or C-STORE of ``instance``."""
    tool = ["echoscu"] if kind == "C-ECHO" else ["storescu"]
    files = [] if kind == "C-ECHO" else [str(instance)]
    command = [*tool, "-to", "5", "-ta", "10", "-td", "10", "-aet", CALLING_AE]
    command += ["-aec", target.called_ae, "127.0.0.1", str(target.dicom_port), *files]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(what: str, target: Target, check: Callable[[], bool], since: float) -> float:
    """Seconds from ``since`` until ``check()`` holds."""
    while not check():
        assert target.process is not None
        if target.process.poll() is not None or time.monotonic() - since > PROBE_TIMEOUT_S:
            raise RuntimeError(f"{target.name}: no {what}, see {target.log}")
    return time.monotonic() - since


def wait_until_up(target: Target, instance: Path) -> None:
    started = time.monotonic()
    wait_for("C-ECHO after start", target, lambda: probe(target, "C-ECHO", instance), started)
    if target.health_url is not None:
        url = target.health_url
        wait_for("HTTP health", target, lambda: healthy(url), started)


def restart(target: Target, kind: str, instance: Path) -> None:
    """kill -9, start again at once, and time the first accepted association."""
    killed = time.monotonic()
    target.kill_9()
    target.start()
    seconds = wait_for(kind, target, lambda: probe(target, kind, instance), killed)
    target.record(f"kill -9 -> first {kind} accepted", seconds)
    if kind == "C-ECHO":  # CPU figures: what other load on the machine disturbs least
        assert target.process is not None
        spent = cpu_s([target.process.pid, *process_tree(target.process.pid)])
        listeners = [s for pid, s in spent.items() if process_label(pid) == "DICOM listener"]
        target.record("CPU to 1st C-ECHO, all processes", sum(spent.values()))
        target.record("CPU to 1st C-ECHO, its listener", max(listeners or spent.values()))
    if target.health_url is not None:
        url = target.health_url
        target.record(
            "kill -9 -> HTTP API healthy", wait_for("health", target, lambda: healthy(url), killed)
        )


def orthanc(workdir: Path) -> Target:
    config_path, _, dicom_port = orthanc_config(workdir, RemoteAccessAllowed=False)
    return Target(
        "Orthanc",
        [ORTHANC, str(config_path)],
        dict(os.environ),
        dicom_port,
        "ORTHANC",
        workdir / "orthanc.log",
    )


def jip(workdir: Path, listeners: int) -> Target:
    http_port, dicom_port = free_port(), free_port()
    peers = {"bench": {"ae_title": CALLING_AE, "host": "127.0.0.1", "port": free_port()}}
    env = {
        **os.environ,
        "JIP_STORE__PEERS": json.dumps(peers),
        "JIP_STORE__DICOM_HOST": "127.0.0.1",
        "JIP_AUTH__ADMIN_PASSWORD": secrets.token_urlsafe(16),
    }
    command = [sys.executable, "-m", "jip.cli.main", "--data-dir", str(workdir / "jip-data")]
    command += ["up", "--no-airflow", "--http-port", str(http_port)]
    command += ["--dicom-port", str(dicom_port), "--listeners", str(listeners)]
    return Target(
        "JIP",
        command,
        env,
        dicom_port,
        "JIP",
        workdir / "jip-up.log",
        health_url=f"http://127.0.0.1:{http_port}/healthz",
    )


def listener_imports() -> str:
    """What a JIP listener process imports before it serves (``-X importtime``)."""
    from jip.store.dimse import listener

    code = f"import {listener.__name__} as l\nl.import_serving_modules('jip.runtime')"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    rows = [
        line.split("|") for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    total_us = sum(
        int(row[0].split(":")[1]) for row in rows if row[0].split(":")[1].strip().isdigit()
    )
    # A name the listener made unavailable (NOT_IMPORTED) shows as a row of a few µs.
    top = {
        row[2].strip().split(".")[0]
        for row in rows
        if len(row) == 3 and row[1].strip().isdigit() and int(row[1]) > 100
    }
    heavy = sorted(
        top
        & {
            "fastapi",
            "starlette",
            "uvicorn",
            "alembic",
            "numpy",
            "PIL",
            "pandas",
            "SimpleITK",
            "airflow",
            "httpx",
            "requests",
            "jwt",
        }
    )
    return f"{len(rows)} modules, {total_us / 1e6:.2f} s of imports; heavy: {', '.join(heavy) or 'none'}"


def report(
    targets: list[Target],
    memory: dict[str, tuple[float, float, int]],
    per_process: dict[str, list[tuple[str, float, float]]],
) -> None:
    jip_target, reference = targets
    print(f"\n{'figure':38}{'JIP':>10}{'Orthanc':>10}{'JIP/Orthanc':>13}")
    for figure, times in jip_target.times.items():
        ours = statistics.median(times)
        theirs = reference.times.get(figure)
        if theirs is None:
            print(f"{figure:38}{ours:>9.2f}s{'-':>10}{'-':>13}")
            continue
        ref = statistics.median(theirs)
        print(f"{figure:38}{ours:>9.2f}s{ref:>9.2f}s{ours / ref:>12.1f}x")
    (rss, pss, count), (ref_rss, ref_pss, ref_count) = memory["JIP"], memory["Orthanc"]
    print(
        f"{'RSS at rest (MB, sum over processes)':38}{rss:>10.0f}{ref_rss:>10.0f}{rss / ref_rss:>12.1f}x"
        f"   ({count} vs {ref_count} processes)"
    )
    print(
        f"{'PSS at rest (MB, shared pages once)':38}{pss:>10.0f}{ref_pss:>10.0f}{pss / ref_pss:>12.1f}x"
    )
    for name, rows in per_process.items():
        for label, one_rss, one_pss in rows:
            print(f"  {name}: {label:34} RSS {one_rss:6.0f} MB   PSS {one_pss:6.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="restarts per probe (median)")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before RSS")
    parser.add_argument(
        "--listeners", type=int, default=0, help="JIP listener processes (0: one per core)"
    )
    args = parser.parse_args()
    if not (shutil.which("storescu") and shutil.which("echoscu") and Path(ORTHANC).exists()):
        sys.exit("dcmtk (echoscu, storescu) and Orthanc are required")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        root = Path(tmp)
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached
        os.environ["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}", flush=True)
        os.sync()  # the previous benchmark's files written back before, not during
        print(wait_until_quiet(), flush=True)
        listener_imports()  # compiles
        print(f"JIP listener process: {listener_imports()}", flush=True)
        slices = image_series(
            patient=random_patient(random.Random(1), 0),
            slices=2 * args.repeat + 2,
            rows=64,
            columns=64,
        )
        instances = iter(write_datasets(slices, root / "data"))
        (root / "jip").mkdir(), (root / "orthanc").mkdir()
        targets = [jip(root / "jip", args.listeners), orthanc(root / "orthanc")]
        memory: dict[str, tuple[float, float, int]] = {}
        per_process: dict[str, list[tuple[str, float, float]]] = {}
        try:
            for target in targets:
                target.start()
                wait_until_up(target, Path())
                if not probe(target, "C-STORE", next(instances)):  # warms the store path
                    raise RuntimeError(f"{target.name}: C-STORE failed, see {target.log}")
                time.sleep(args.settle)
                assert target.process is not None
                pids = [target.process.pid, *process_tree(target.process.pid)]
                memory[target.name] = (*memory_mb(pids), len(pids))
                per_process[target.name] = [
                    (process_label(pid), *process_memory_mb(pid)) for pid in pids
                ]
            for run in range(args.repeat):
                for kind in PROBES:
                    for target in targets if run % 2 == 0 else targets[::-1]:
                        restart(target, kind, next(instances) if kind == "C-STORE" else Path())
                        print(
                            f"  {target.name}: {kind} after {target.times[f'kill -9 -> first {kind} accepted'][-1]:.2f} s",
                            flush=True,
                        )
                        wait_until_up(target, Path())
                        time.sleep(1.0)  # at rest again before the next kill
        finally:
            for target in targets:
                target.stop()
        report(targets, memory, per_process)
        print(f"load average at end: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
