"""Up in a second: what a DICOM listener process imports, the cheap recovery of a restart,
and a C-STORE sent the moment the listener accepts after a kill -9 is stored and indexed.

Real peers (dcmtk's storescu, a real `jip up`); no timing is asserted (see
bench/bench_startup.py for the figures).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import psutil
import pytest
from tests.support.network import free_port
from tests.up_site import wait_for

from jip.backends import catalog_engine_for
from jip.config import Settings
from jip.migrations import alembic_config, head_revision, is_current
from jip.runtime import catalog_is_ready, recover, secure_data_dir
from jip.samples import synthetic_site, write_datasets

JIP = [sys.executable, "-m", "jip.cli.main"]

# Never in a listener process, from its first import to serving a C-STORE: the HTTP
# stack, the migration tool, the rest of the platform, and what only workflows use.
NOT_IN_A_LISTENER = {
    "fastapi", "starlette", "uvicorn", "httpx", "jwt", "alembic", "mako", "airflow",
    "pandas", "SimpleITK", "nibabel", "highdicom", "minio", "jip.app", "jip.ui",
    "jip.meta", "jip.flow", "jip.federation", "jip.base.auth", "jip.base.identity",
    "jip.store.dicomweb.routes", "jip.store.download", "jip.store.routes",
    "numpy", "PIL", "requests", "tqdm",
}  # fmt: skip
# Not in `jip up` before it has started the listener's interpreters (nor httpx, though
# the command's settings come from jip.cli.site, the CLI's HTTP client module).
NOT_BEFORE = {"sqlalchemy", "pydicom", "pynetdicom", "numpy"}
NOT_BEFORE_THE_LISTENER_STARTS = NOT_IN_A_LISTENER | NOT_BEFORE


def loaded_modules(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (a name held as None
    is one made unavailable: :data:`jip.store.dimse.listener.NOT_IMPORTED`)."""
    script = (
        code
        + "\nimport sys, json; print(json.dumps(sorted(n for n, m in sys.modules.items() if m)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def offending(modules: set[str], forbidden: set[str]) -> set[str]:
    return {m for m in modules for f in forbidden if m == f or m.startswith(f + ".")}


def test_a_listener_process_imports_only_what_a_c_store_needs(tmp_path: Path) -> None:
    """The listener's own start-up, up to a bound server with the adapters built."""
    settings = Settings(data_dir=tmp_path / "data")
    recover(settings)  # the catalog the process opens (`jip up` does this first)
    code = textwrap.dedent(f"""
        import sys
        from jip.store.dimse import listener
        listener.import_serving_modules("jip.runtime")
        from jip.runtime import build_store_runtime
        from jip.config import Settings
        from jip.store.dimse.ae import build_ae, start_server
        settings = Settings(data_dir={str(settings.data_dir)!r})
        adapters = build_store_runtime(settings, migrate=False)
        server = start_server(build_ae(settings.store), adapters, "127.0.0.1", 0)
        server.shutdown()
        adapters.close()
    """)
    modules = loaded_modules(code)
    assert "pynetdicom" in modules and "jip.store.ingest" in modules  # it did serve
    assert offending(modules, NOT_IN_A_LISTENER) == set()


def test_jip_up_starts_the_listener_interpreters_before_importing_dicom_or_http() -> None:
    """What `jip up` imports up to ``ListenerGroup.prepare``: the command, settings,
    the composition's listener builder."""
    code = textwrap.dedent("""
        import click
        from jip.cli.main import cli
        cli.get_command(click.Context(cli), "up")
        from jip.embedded import listener_components
        from jip.config import Settings
        listener_components(Settings())
    """)
    assert offending(loaded_modules(code), NOT_BEFORE_THE_LISTENER_STARTS) == set()


def test_jip_up_starts_its_first_listener_before_reading_settings(tmp_path: Path) -> None:
    """`jip up`'s first act (``main``): the listener's interpreter starts while only click
    is loaded, so that its imports overlap the parent's settings and recovery."""
    code = textwrap.dedent(f"""
        from jip.cli.main import start_listener_early
        start_listener_early(["--data-dir", {str(tmp_path / "data")!r}, "up"])
        from jip.store.dimse import listener
        assert listener._early is not None
        listener.discard_early()
    """)
    before = {"pydantic", "pydantic_settings", "jip.config", "prometheus_client", "httpx"}
    assert offending(loaded_modules(code), before | NOT_BEFORE) == set()


def test_head_revision_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert heads == [head_revision()]


def test_a_restart_recovers_without_loading_alembic_or_sqlalchemy(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    engine = catalog_engine_for(settings.resolved_catalog_url)
    try:
        assert not is_current(engine)  # a new catalog: no schema yet
        recover(settings)  # migrates
        assert is_current(engine)
    finally:
        engine.dispose()
    code = textwrap.dedent(f"""
        from jip.config import Settings
        from jip.runtime import recover
        recover(Settings(data_dir={str(settings.data_dir)!r}))
    """)
    modules = loaded_modules(code)
    assert "jip.runtime" in modules
    # An embedded catalog is asked through sqlite3: no SQLAlchemy before the listener serves.
    assert offending(modules, {"alembic", "jip.base.identity", "sqlalchemy"}) == set()


def test_the_recovery_check_refuses_a_catalog_that_is_not_current(tmp_path: Path) -> None:
    """What makes `jip up` migrate (or create the default project) before any listener
    may acknowledge: a new catalog, one at another revision, one without the project."""
    settings = Settings(data_dir=tmp_path / "data")
    secure_data_dir(settings)  # as recover() first: an empty catalog file
    assert not catalog_is_ready(settings)
    recover(settings)
    assert catalog_is_ready(settings)
    engine = catalog_engine_for(settings.resolved_catalog_url)
    catalog = sqlite3.connect(settings.data_dir / "catalog.db")
    try:
        with catalog:
            catalog.execute("UPDATE alembic_version SET version_num = 'older'")
        assert not catalog_is_ready(settings)
        assert not is_current(engine)  # the PostgreSQL shape's check agrees
        with catalog:
            catalog.execute("UPDATE alembic_version SET version_num = ?", (head_revision(),))
        assert catalog_is_ready(settings)
        renamed = Settings(data_dir=settings.data_dir, store={"default_project": "inbox"})
        assert not catalog_is_ready(renamed)
    finally:
        catalog.close()
        engine.dispose()


def test_jip_up_hands_its_listener_the_settings_without_loading_sqlalchemy(
    tmp_path: Path,
) -> None:
    """Everything `jip up` does before its listener may serve (prepare, recover a current
    catalog, reserve the port and hand over) loads neither SQLAlchemy, nor DICOM, nor
    prometheus_client: what it loads then takes CPU from the listener's start."""
    settings = Settings(data_dir=tmp_path / "data")
    recover(settings)  # a restart: the catalog is current
    code = textwrap.dedent(f"""
        from jip.config import Settings
        from jip.embedded import listener_components
        from jip.runtime import recover
        settings = Settings(
            data_dir={str(settings.data_dir)!r}, store={{"dicom_host": "127.0.0.1", "dicom_port": 0}}
        )
        [group] = listener_components(settings)
        group.prepare()
        recover(settings)
        group.start()
        group.stop()
    """)
    forbidden = {"sqlalchemy", "alembic", "pydicom", "pynetdicom", "prometheus_client"}
    assert offending(loaded_modules(code), forbidden | NOT_IN_A_LISTENER) == set()


def test_recover_creates_a_default_project_that_settings_name_anew(tmp_path: Path) -> None:
    from jip.runtime import build_runtime

    recover(Settings(data_dir=tmp_path / "data"))
    renamed = Settings(data_dir=tmp_path / "data", store={"default_project": "inbox"})
    recover(renamed)  # schema current, project missing: the full recovery creates it
    runtime = build_runtime(renamed, migrate=False)
    try:
        assert "inbox" in runtime.identity.projects.names()
    finally:
        runtime.close()


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")
def test_a_c_store_sent_as_the_listener_accepts_after_kill_9_is_stored_and_indexed(
    tmp_path: Path,
) -> None:
    datasets = synthetic_site(patients=1, studies_per_patient=1, series_per_study=2, slices=1, seed=7)  # fmt: skip
    first, after = write_datasets(datasets, tmp_path / "study")
    http_port, dicom_port = free_port(), free_port()
    log = tmp_path / "jip-up.log"
    peers = {"storescu": {"ae_title": "STORESCU", "host": "127.0.0.1", "port": 9}}
    env = {**os.environ, "JIP_AUTH__ENABLED": "false", "JIP_STORE__PEERS": json.dumps(peers)}
    command = [*JIP, "--data-dir", str(tmp_path / "data"), "up", "--no-airflow"]
    command += ["--http-port", str(http_port), "--dicom-port", str(dicom_port)]
    api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10)

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

    def store(path: Path) -> bool | None:
        sent = subprocess.run(
            ["storescu", "-aec", "JIP", "127.0.0.1", str(dicom_port), str(path)],
            capture_output=True, timeout=60,
        )  # fmt: skip
        return True if sent.returncode == 0 else None

    def healthy() -> bool | None:
        try:
            return True if api.get("/healthz").is_success else None
        except httpx.HTTPError:
            return None

    def indexed(series_uid: str) -> bool | None:
        query = {"term": {"SeriesInstanceUID": series_uid}}
        found = api.post("/api/meta/search", json={"query": query})
        return True if found.is_success and found.json()["total"] == 1 else None

    process = start()
    try:
        wait_for("the first start", lambda: store(first), log, 120)
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        for each in tree:  # kill -9 of the whole site at once: a crash
            each.kill()
        psutil.wait_procs(tree, timeout=30)
        restart_at = log.stat().st_size
        process = start()
        wait_for("the first C-STORE after kill -9", lambda: store(after), log, 120)
        wait_for("the HTTP API", healthy, log, 120)
        restarted = log.read_text()[restart_at:]
        assert restarted.index("DICOM listener process ready") < restarted.index("JIP is up")
        assert "does not match" not in restarted  # the process started first was adopted
        for dataset in (datasets[0], datasets[1]):  # the instance before the crash, and after
            uid, series_uid = dataset.SOPInstanceUID, dataset.SeriesInstanceUID
            instances = api.get("/dicom-web/instances", params={"SOPInstanceUID": uid})
            assert instances.status_code == 200, instances.text
            assert [i["00080018"]["Value"] for i in instances.json()] == [[uid]]
            wait_for("the series in the index", lambda s=series_uid: indexed(s), log, 60)
    finally:
        api.close()
        if process.poll() is None:
            process.terminate()
            assert process.wait(timeout=90) == 0, log.read_text()[-6000:]


def test_a_lazy_export_named_like_its_module_is_refused() -> None:
    """``from jip.federation import levene`` would give the module once it is imported."""
    from jip import lazy_exports

    with pytest.raises(ValueError, match="levene"):
        lazy_exports("jip.federation", {"jip.federation.levene": ("levene", "LeveneCentre")})
    lookup = lazy_exports("jip.store", {"jip.store.zip_stream": ("ArchiveFormat",)})
    assert lookup("ArchiveFormat").__name__ == "ArchiveFormat"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="Nothing"):
        lookup("Nothing")


def test_jip_help_still_lists_every_command() -> None:
    """Commands load when looked up; the listing loads them all."""
    shown = subprocess.run([*JIP, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    for command in ("up", "status", "dicom", "user", "cohort", "flow", "hub", "backup"):
        assert f"\n  {command} " in shown.stdout
    up_help = subprocess.run([*JIP, "up", "--help"], capture_output=True, text=True, timeout=120)
    assert "--listeners" in up_help.stdout
