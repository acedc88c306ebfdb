"""The DICOM listener: N processes accepting on one port, for `jip up`.

Start-up comes in two steps so that a restart answers associations as soon as it can:
the first interpreter starts before anything else (`jip up` calls :func:`prespawn`
before it parses its options; otherwise :meth:`ListenerGroup.prepare` starts it),
imports what it serves with and builds what needs no settings (the AE's presentation
contexts) while the composition recovers what the listener relies on (the catalog schema
migrated, the spool cleared); :meth:`ListenerGroup.start` then hands it its settings,
and only then does it build its adapters, bind the port and acknowledge anything. The
other processes start once the first accepts, so that the first has a core to itself
(two interpreters importing at once on two cores beside the parent finish later than
one); until they bind, the kernel sends every association to the first.

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
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

# `jip up` imports this module first (:func:`prespawn`): later steps import the rest.
if TYPE_CHECKING:
    import socket

    from jip.config import Settings
    from jip.store.adapters import AdaptersBuilder
    from jip.store.dimse.ae import JipAE

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
        self._env: dict[str, str] | None = None
        self._handed: Settings | None = None  # what start() handed the first process

    @property
    def process_count(self) -> int:
        return self.settings.store.listener_processes or os.cpu_count() or 1

    def prepare(self) -> None:
        """Start (or adopt: :func:`prespawn`) the first listener interpreter; it imports
        its modules, then waits for :meth:`start` (it binds nothing before)."""
        if not self._processes:
            self._env = _listener_environment(self.settings.data_dir)
            adopted = _adopt_early(self._env, self.build.__module__)
            self._processes = [adopted or _spawn_first(self.build.__module__, self._env)]

    def start(self) -> None:
        """Reserve the port, clear the spool, and let the (prepared) processes serve.

        Call it once the catalog is ready for writes (migrated): from here on the
        processes acknowledge C-STORE.
        """
        self.prepare()
        store = self.settings.store
        self._reservation = reserve_port(store.dicom_host, store.dicom_port)
        self.port = self._reservation.getsockname()[1]
        import shutil

        spool = spool_dir(self.settings)
        shutil.rmtree(spool, ignore_errors=True)  # left over from a crash: never acknowledged
        spool.mkdir(parents=True, exist_ok=True)
        settings = self.settings.model_copy(
            update={"store": store.model_copy(update={"dicom_port": self.port})}
        )
        self._handed = settings
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
        if self._processes and self._processes[0].is_ready():
            self._start_the_others()
        waiting = self.process_count - sum(process.is_ready() for process in self._processes)
        if waiting:
            return f"DICOM listener: {waiting} of {self.process_count} processes starting"
        return None

    def _start_the_others(self) -> None:
        """Once the first process accepts: start the rest, settings handed at once (the
        catalog is current); each serves as soon as it has imported its modules."""
        if self._handed is None or len(self._processes) >= self.process_count:
            return
        for _ in range(self.process_count - len(self._processes)):
            process = _Process.spawn(self.build.__module__, self._env)
            self._processes.append(process)
            process.hand_over(self._handed, self.build)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until every process accepts associations (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while (reason := self.not_ready()) is not None:
            exited = any(p.popen.poll() is not None for p in self._processes)
            if exited or time.monotonic() > deadline:
                from jip.errors import Unavailable

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
    def spawn(cls, builder_module: str, env: dict[str, str] | None = None) -> _Process:
        read_fd, write_fd = os.pipe()
        popen = subprocess.Popen(
            [
                *(sys.executable, "-m", "jip.store.dimse.listener"),
                *(str(write_fd), str(os.getpid()), builder_module),
            ],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=env,
        )
        os.close(write_fd)
        return cls(popen, read_fd)

    def hand_over(self, settings: Settings, build: AdaptersBuilder) -> None:
        """Send the settings and the builder: the process binds and serves."""
        import pickle

        from jip.errors import Unavailable

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


# The first listener process `jip up` started before it knew its settings, and the
# environment it was given; :meth:`ListenerGroup.prepare` adopts it when that matches.
_early: tuple[_Process, dict[str, str], str] | None = None
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # jip.metrics.MULTIPROC_ENV, without its imports


def prespawn(data_dir: Path, builder_module: str = "jip.runtime") -> None:
    """Start the first listener interpreter now, so that its imports overlap the
    caller's start-up (`jip up`, before it reads its settings). ``data_dir`` is a guess
    (its metrics files go there, read by prometheus_client as it is imported): the group
    adopts the process only if the settings agree, else it ends it and starts another.
    Nothing here binds or acknowledges: the process waits for :meth:`ListenerGroup.start`.
    """
    global _early
    if _early is not None:
        return
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # as jip.runtime.secure_data_dir
    env = _listener_environment(data_dir)
    _early = (_spawn_first(builder_module, env), env, builder_module)


def _listener_environment(data_dir: Path) -> dict[str, str]:
    """As ``jip.metrics.listener_environment(shared_dir(data_dir))``, whose import (that of
    prometheus_client) would take CPU from the listener's start."""
    shared = data_dir / "metrics"
    shared.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {**os.environ, _MULTIPROC_ENV: str(shared)}


def _spawn_first(builder_module: str, env: dict[str, str]) -> _Process:
    """The first process of a run; the metrics of an earlier run go (``clear_shared``)."""
    for stale in Path(env[_MULTIPROC_ENV]).glob("*.db"):
        stale.unlink(missing_ok=True)
    return _Process.spawn(builder_module, env)


def _adopt_early(env: dict[str, str], builder_module: str) -> _Process | None:
    """The prespawned process, if it was started for this environment and builder."""
    global _early
    if _early is None:
        return None
    (process, early_env, early_module), _early = _early, None
    same_place = early_env.get(_MULTIPROC_ENV) == env.get(_MULTIPROC_ENV)
    if same_place and early_module == builder_module and process.popen.poll() is None:
        return process
    log.info("DICOM listener: the process started early does not match; starting another")
    discard(process)
    return None


def discard_early() -> None:
    """Let a prespawned process that no group adopts leave (a role without a listener)."""
    global _early
    if _early is not None:
        discard(_early[0])
        _early = None


def discard(process: _Process) -> None:
    """End a process that was never handed its settings (it has bound nothing): still
    importing, SIGTERM's default action ends it."""
    process.close_stdin()
    process.popen.terminate()
    process.popen.wait()
    process.close()


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) the port the processes will share.

    Fails early and clearly when another program holds the port, and turns port 0 into
    a concrete port for all processes. A socket that does not listen receives no
    connections, so the reservation takes none of the processes' load.
    """
    import socket

    from jip.errors import Unavailable

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
def serve(
    settings: Settings, build: AdaptersBuilder, ae: JipAE, ready_fd: int, parent_pid: int
) -> None:
    """Run one listener process (``ae``: its contexts) until SIGTERM or its parent is gone."""
    import shutil
    import tempfile

    from jip.logs import setup_logging
    from jip.store.dimse.ae import configure_ae, drain, start_server

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    setup_logging(settings.log_level, settings.log_format)
    spool = spool_dir(settings) / str(os.getpid())
    spool.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(spool)  # pynetdicom spools C-STORE datasets with tempfile
    adapters = build(settings, migrate=False)
    store = settings.store
    server = start_server(configure_ae(ae, store), adapters, store.dicom_host, store.dicom_port)
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
SERVING_MODULES = ("jip.logs", "jip.store.dimse.ae", "pynetdicom.transport", "jip.backends")
# What pydicom imports if it can, and a listener never uses: it stores instances as
# received and decodes no pixels (numpy, Pillow, the JPEG codecs), and downloads no test
# data (requests, tqdm). Unavailable in a listener process, as if not installed, so that
# pydicom skips them: about a sixth of the CPU it spends before it accepts.
NOT_IMPORTED = ("numpy", "PIL", "requests", "tqdm", "pylibjpeg", "libjpeg", "openjpeg", "gdcm")


def import_serving_modules(builder_module: str) -> None:
    """What a listener process does first: make :data:`NOT_IMPORTED` unavailable, then
    import :data:`SERVING_MODULES` and the builder's module (only in a process of its
    own: an ``import numpy`` after this fails)."""
    for name in NOT_IMPORTED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: ImportError
    for module in (*SERVING_MODULES, builder_module):
        importlib.import_module(module)


def main() -> None:
    """``python -m jip.store.dimse.listener READY_FD PARENT_PID MODULE``;
    (settings, builder) pickled on stdin once the parent has recovered the catalog.

    MODULE (the builder's) and :data:`SERVING_MODULES` are imported and the AE's contexts
    built first, while the parent still recovers, so that serving starts once they come.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    os.umask(0o077)  # spool and blobs hold PHI, whoever started us
    import_serving_modules(sys.argv[3])
    from jip.store.dimse.ae import accepting_ae

    ae = accepting_ae()
    handed = sys.stdin.buffer.read()
    if not handed:
        return  # the parent stopped (or could not recover) before handing over
    import pickle

    settings, build = pickle.loads(handed)
    serve(settings, build, ae, int(sys.argv[1]), int(sys.argv[2]))


if __name__ == "__main__":
    main()
