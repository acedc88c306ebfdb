"""The DICOM listener: N processes accepting on one port, for `jip up`.

Start-up comes in two steps so that a restart answers associations as soon as it can:
:meth:`ListenerGroup.prepare` starts the interpreters at once, and each imports what it
serves with while the composition recovers what the listener relies on (the catalog
schema migrated, the spool cleared); :meth:`ListenerGroup.start` then hands each one
its settings, and only then does it bind the port and acknowledge anything.

Each process binds the DIMSE port with ``SO_REUSEPORT``, so the kernel spreads
associations over them and concurrent senders use every core (one Python process is
held to one core by its GIL). Each builds its own adapters with the builder the
composition hands over (``jip.runtime.build_store_runtime``), without migrating (the parent
did); catalog writes from several processes meet in the database, which already
serialises them.

Received datasets are spooled under ``<data_dir>/spool/<pid>/`` (``tempfile.tempdir``),
on the filesystem of the default blob store (``<data_dir>/blobs``), so that the
ingest's move is a rename (file storage elsewhere copies; S3 uploads).

Stopping (SIGTERM): a process closes its listening socket, lets in-flight associations
finish for up to ``network_timeout_s``, then aborts what is left. An instance is only
acknowledged once stored and catalogued, so an aborted association loses nothing that
was acknowledged and leaves only spool files, which are removed.

``max_associations`` applies per listener process.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pickle
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jip import metrics
from jip.config import Settings
from jip.errors import Unavailable

if TYPE_CHECKING:  # `jip up` starts the processes before it imports the catalog's code
    from jip.store.adapters import AdaptersBuilder

log = logging.getLogger(__name__)

_SWEEP_INTERVAL_S = 60.0


def spool_dir(settings: Settings) -> Path:
    """Where listener processes spool received datasets (inside the data dir)."""
    return settings.data_dir / "spool"


class ListenerGroup:
    """The DIMSE listener processes of one site (a :class:`jip.embedded.Component`).

    ``build`` makes each process's adapters; it travels pickled, so it must be a
    module-level function (the composition passes ``jip.runtime.build_store_runtime``).
    """

    name = "dicom"

    def __init__(self, settings: Settings, build: AdaptersBuilder) -> None:
        self.settings = settings
        self.build = build
        self.port = settings.store.dicom_port
        self._processes: list[_Process] = []
        self._reservation: socket.socket | None = None

    @property
    def process_count(self) -> int:
        return self.settings.store.listener_processes or os.cpu_count() or 1

    def prepare(self) -> None:
        """Start the listener interpreters; they import their modules, then wait for
        :meth:`start` (they neither bind nor acknowledge before it)."""
        if not self._processes:
            shared = metrics.shared_dir(self.settings.data_dir)
            metrics.clear_shared(shared)
            env = metrics.listener_environment(shared)
            self._processes = [_Process.spawn(self.build, env) for _ in range(self.process_count)]

    def start(self) -> None:
        """Reserve the port, clear the spool, and let the (prepared) processes serve.

        Call it once the catalog is ready for writes (migrated): from here on the
        processes acknowledge C-STORE.
        """
        self.prepare()
        store = self.settings.store
        self._reservation = reserve_port(store.dicom_host, store.dicom_port)
        self.port = self._reservation.getsockname()[1]
        spool = spool_dir(self.settings)
        shutil.rmtree(spool, ignore_errors=True)  # left over from a crash: never acknowledged
        spool.mkdir(parents=True, exist_ok=True)
        settings = self.settings.model_copy(
            update={"store": store.model_copy(update={"dicom_port": self.port})}
        )
        for process in self._processes:
            process.hand_over(settings, self.build)
        log.info(
            "DICOM listener starting",
            extra={"ae_title": store.ae_title, "port": self.port, "processes": self.process_count},
        )

    def not_ready(self) -> str | None:
        for process in self._processes:
            if process.popen.poll() is not None:
                return f"DICOM listener process {process.pid} exited ({process.popen.returncode})"
        waiting = sum(not process.is_ready() for process in self._processes)
        if not self._processes or waiting:
            return f"DICOM listener: {waiting} of {self.process_count} processes starting"
        return None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until every process accepts associations (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while (reason := self.not_ready()) is not None:
            exited = any(p.popen.poll() is not None for p in self._processes)
            if exited or time.monotonic() > deadline:
                raise Unavailable(reason)
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self._processes:
            process.close_stdin()  # a prepared process that got no settings leaves at once
            if process.popen.poll() is None:
                process.popen.terminate()  # SIGTERM: drain, then exit
        deadline = time.monotonic() + self.settings.store.network_timeout_s + 10
        for process in self._processes:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "DICOM listener process did not stop; killing it", extra={"pid": process.pid}
                )
                process.popen.kill()
                process.popen.wait()
            process.close()
        self._processes.clear()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None

    def describe(self) -> dict[str, object]:
        store = self.settings.store
        return {
            "ae_title": store.ae_title,
            "host": store.dicom_host,
            "port": self.port,
            "processes": len(self._processes),
            "pids": [p.pid for p in self._processes],
        }


class _Process:
    """One listener process and the pipe on which it says it is ready.

    A plain ``python -m jip.store.dimse.listener`` rather than multiprocessing: nothing of
    the parent (threads, its ``__main__``) is copied or re-imported. The builder's module
    is named on the command line, so that the process imports it before it is needed;
    the settings and the builder travel pickled over stdin, secrets included.
    """

    def __init__(self, popen: subprocess.Popen[bytes], ready_fd: int) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._ready_fd = ready_fd
        self._ready = False

    @classmethod
    def spawn(cls, build: AdaptersBuilder, env: dict[str, str] | None = None) -> _Process:
        read_fd, write_fd = os.pipe()
        popen = subprocess.Popen(
            [
                *(sys.executable, "-m", "jip.store.dimse.listener"),
                *(str(write_fd), str(os.getpid()), build.__module__),
            ],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=env,
        )
        os.close(write_fd)
        return cls(popen, read_fd)

    def hand_over(self, settings: Settings, build: AdaptersBuilder) -> None:
        """Send the settings and the builder: the process binds and serves."""
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(pickle.dumps((settings, build)))
            self.popen.stdin.close()
        except BrokenPipeError as exc:
            raise Unavailable(
                f"DICOM listener process {self.pid} exited before it started "
                f"({self.popen.poll()}); its error is in the log above"
            ) from exc

    def close_stdin(self) -> None:
        if self.popen.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.popen.stdin.close()

    def is_ready(self) -> bool:
        if not self._ready and self._ready_fd >= 0:
            readable, _, _ = select.select([self._ready_fd], [], [], 0)
            self._ready = bool(readable) and os.read(self._ready_fd, 1) == b"R"
        return self._ready

    def close(self) -> None:
        if self._ready_fd >= 0:
            os.close(self._ready_fd)
            self._ready_fd = -1


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) the port the processes will share.

    Fails early and clearly when another program holds the port, and turns port 0 into
    a concrete port for all processes. A socket that does not listen receives no
    connections, so the reservation takes none of the processes' load.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Unavailable(
            f"cannot listen for DICOM on {host}:{port}: {exc.strerror}; "
            "choose another port (JIP_STORE__DICOM_PORT)"
        ) from exc
    return sock


# -- inside each listener process ------------------------------------------------------------
def serve(settings: Settings, build: AdaptersBuilder, ready_fd: int, parent_pid: int) -> None:
    """Run one listener process until SIGTERM or until its parent is gone."""
    from jip.logs import setup_logging
    from jip.store.dimse.ae import build_ae, start_server

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    setup_logging(settings.log_level, settings.log_format)
    spool = spool_dir(settings) / str(os.getpid())
    spool.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(spool)  # pynetdicom spools C-STORE datasets with tempfile
    adapters = build(settings, migrate=False)
    store = settings.store
    ae = build_ae(store)
    server = start_server(ae, adapters, store.dicom_host, store.dicom_port)
    log.info("DICOM listener process ready", extra={"port": store.dicom_port, "pid": os.getpid()})
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    try:
        last_sweep = time.monotonic()
        while not stop.wait(1.0):
            if os.getppid() != parent_pid:
                log.warning("parent process gone; DICOM listener stopping")
                break
            if time.monotonic() - last_sweep > _SWEEP_INTERVAL_S:
                sweep_spool(spool, 2 * store.network_timeout_s)
                last_sweep = time.monotonic()
    finally:
        drain(server, store.network_timeout_s)
        adapters.close()
        shutil.rmtree(spool, ignore_errors=True)
        log.info("DICOM listener process stopped", extra={"pid": os.getpid()})


def drain(server: object, grace_s: float) -> None:
    """Stop accepting, let associations finish for ``grace_s``, then abort the rest.

    Every association thread is joined before returning, so no ingest is running when
    the adapters close; an aborted C-STORE was never acknowledged.
    """
    from pynetdicom.transport import ThreadedAssociationServer

    assert isinstance(server, ThreadedAssociationServer)
    server.shutdown()
    deadline = time.monotonic() + grace_s
    fast_path = getattr(server, "fast_path", None)
    if fast_path is not None:
        fast_path.drain(deadline)
    for assoc in server.active_associations:
        assoc.join(max(0.0, deadline - time.monotonic()))
    for assoc in server.active_associations:
        log.warning("aborting association at shutdown", extra={"peer": assoc.requestor.ae_title})
        assoc.abort()
        assoc.join()


def sweep_spool(spool: Path, older_than_s: float) -> None:
    """Remove spool files of transfers that were aborted (pynetdicom leaves them)."""
    cutoff = time.time() - older_than_s
    for path in spool.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            continue


# What a listener process serves with, imported before its settings arrive.
SERVING_MODULES = ("jip.logs", "jip.store.dimse.ae", "pynetdicom.transport")


def main() -> None:
    """``python -m jip.store.dimse.listener READY_FD PARENT_PID [MODULE ...]``;
    (settings, builder) pickled on stdin once the parent has recovered the catalog.

    The MODULEs (the builder's) and :data:`SERVING_MODULES` are imported first, while
    the parent still recovers, so that serving starts as soon as the settings come.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    for module in (*SERVING_MODULES, *sys.argv[3:]):
        importlib.import_module(module)
    handed = sys.stdin.buffer.read()
    if not handed:
        return  # the parent stopped (or could not recover) before handing over
    settings, build = pickle.loads(handed)
    serve(settings, build, int(sys.argv[1]), int(sys.argv[2]))


if __name__ == "__main__":
    main()
