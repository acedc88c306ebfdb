"""Server memory during a 2 GB zip upload: JIP's upload API against Orthanc's REST API.

    .venv/bin/python bench/bench_upload.py [--size-mb 2048] [--image 512] [--interval 0.05]

Makes one zip (stored, not deflated) of CT instances from ``jip.samples`` adding up to
``--size-mb``, then uploads the same file to each server on a fresh data directory:

- JIP: its HTTP app (``jip.app.build_app``, auth off) in a process of its own under
  uvicorn, the zip as multipart/form-data to ``POST /api/store/upload``, exactly as
  `jip dicom upload` sends it (:class:`jip.cli.dicom_upload.FormBody`);
- Orthanc 1.x (plugins off): the zip as the body of ``POST /instances``, which unpacks
  and stores it.

Each server's resident memory (VmRSS from /proc) is sampled every ``--interval``
seconds from just before the upload until its answer; "above idle" is the peak minus
the RSS at rest after a small warm-up upload. Prints both, the instances each stored,
the seconds, and whether JIP stays under the issue's target of 300 MB above idle.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from bench_ingest import ORTHANC, free_port, orthanc_config

from jip.cli.dicom_upload import FormBody, UploadFile
from jip.samples import image_series, random_patient

TARGET_MB = 300
SERIES_SIZE = 100
# The JIP server process: the site's app under uvicorn, auth off, on the given data dir.
SERVE = """
import sys, uvicorn
from jip.app import build_app
from jip.config import Settings
from jip.runtime import build_runtime
settings = Settings(data_dir=sys.argv[1], auth={"enabled": False})
uvicorn.run(build_app(build_runtime(settings)), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", lifespan="off")
"""


@dataclass(frozen=True)
class Measurement:
    target: str
    idle_mb: float
    peak_mb: float
    instances: int
    seconds: float

    @property
    def above_idle_mb(self) -> float:
        return self.peak_mb - self.idle_mb


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The peak RSS of a process, sampled in a thread while the ``with`` block runs."""

    def __init__(self, pid: int, interval_s: float) -> None:
        self.pid, self.interval_s, self.peak = pid, interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def make_zip(target: Path, size_bytes: int, image: int) -> int:
    """A stored zip of CT instances (series of 100 slices) of at least ``size_bytes``;
    returns how many instances it holds. Written an instance at a time."""
    from io import BytesIO

    rng = random.Random(7)
    count = written = series = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        while written < size_bytes:
            datasets = image_series(
                patient=random_patient(rng, series), slices=SERIES_SIZE, rows=image,
                columns=image, series_number=series + 1,
            )  # fmt: skip
            for ds in datasets:
                buffer = BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                archive.writestr(f"series{series:04d}/{ds.SOPInstanceUID}.dcm", buffer.getvalue())
                count, written = count + 1, written + buffer.tell()
                if written >= size_bytes:
                    break
            series += 1
            print(f"\r  zip: {written / 2**20:,.0f} MB", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return count


def wait_until(what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300  # imports take a while on a busy machine
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def jip_upload(url: str, upload: Path) -> int:
    body = FormBody([UploadFile(upload, upload.name, upload.stat().st_size)])
    response = httpx.post(
        f"{url}/api/store/upload",
        content=body.chunks(lambda _: None),
        headers={"Content-Type": body.content_type, "Content-Length": str(body.length())},
        timeout=httpx.Timeout(60, read=3600),
    )
    response.raise_for_status()
    return int(response.json()["stored"])


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            yield chunk


def orthanc_upload(url: str, upload: Path) -> int:
    response = httpx.post(
        f"{url}/instances",
        content=file_chunks(upload),
        headers={"Content-Type": "application/zip", "Content-Length": str(upload.stat().st_size)},
        timeout=httpx.Timeout(60, read=3600),
    )
    response.raise_for_status()
    answer = response.json()  # one entry per instance of the zip
    return sum(1 for item in answer if item.get("Status") in ("Success", "AlreadyStored"))


def measure(
    name: str, command: list[str], url: str, probe: str, upload: Callable[[Path], int],
    files: tuple[Path, Path], interval_s: float, workdir: Path,
) -> Measurement:  # fmt: skip
    """Start the server, warm it up with the small zip, then sample it over the big one."""
    small, big = files
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(name, lambda: answers(f"{url}{probe}"), process)
        upload(small)
        time.sleep(2)
        idle = rss_mb(process.pid)
        started = time.monotonic()
        with Sampler(process.pid, interval_s) as sampler:
            stored = upload(big)
        seconds = time.monotonic() - started
        return Measurement(name, idle, sampler.peak, stored, seconds)
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=2048, help="size of the zip (MB)")
    parser.add_argument("--image", type=int, default=512, help="rows = columns of each image")
    parser.add_argument("--interval", type=float, default=0.05, help="RSS sampling (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-", dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        small, big = root / "warm-up.zip", root / "upload.zip"
        make_zip(small, 2 * 2**20, args.image)
        instances = make_zip(big, args.size_mb * 2**20, args.image)
        size_mb = big.stat().st_size / 2**20
        print(f"zip: {size_mb:,.0f} MB, {instances} instances of {args.image}x{args.image}")
        results = []
        jip_port = free_port()
        (root / "jip").mkdir()
        results.append(measure(
            "JIP", [sys.executable, "-c", SERVE, str(root / "jip" / "data"), str(jip_port)],
            f"http://127.0.0.1:{jip_port}", "/healthz", lambda p: jip_upload(
                f"http://127.0.0.1:{jip_port}", p), (small, big), args.interval, root / "jip",
        ))  # fmt: skip
        (root / "orthanc").mkdir()
        config, http_port, _ = orthanc_config(root / "orthanc", StorageCompression=False)
        orthanc_url = f"http://127.0.0.1:{http_port}"
        results.append(measure(
            "Orthanc", [ORTHANC, str(config)], orthanc_url, "/system",
            lambda p: orthanc_upload(orthanc_url, p), (small, big), args.interval,
            root / "orthanc",
        ))  # fmt: skip
    print(f"\n{'server':8} {'idle MB':>8} {'peak MB':>8} {'above idle':>10} {'stored':>7} {'s':>6}")
    for r in results:
        print(f"{r.target:8} {r.idle_mb:8.0f} {r.peak_mb:8.0f} {r.above_idle_mb:10.0f} "
              f"{r.instances:7d} {r.seconds:6.0f}")  # fmt: skip
    jip_result, reference = results
    ratio = jip_result.above_idle_mb / max(reference.above_idle_mb, 1)
    print(f"JIP / Orthanc, memory above idle: {ratio:.3f}")
    verdict = "meets" if jip_result.above_idle_mb < TARGET_MB else "MISSES"
    print(f"JIP {verdict} the target of < {TARGET_MB} MB above idle for a {size_mb:,.0f} MB zip")
    print(json.dumps({r.target: r.__dict__ | {"above_idle_mb": r.above_idle_mb} for r in results}))


if __name__ == "__main__":
    main()
