"""A real site for the browser tests: uvicorn on loopback, auth on, sample data indexed,
and Debian's Chromium driven by Playwright (skipped when it is not installed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from tests.base.support import PASSWORD, add_user
from tests.fakes.workflow_engine import FakeEngine, series_workflow

from jip.app import build_app
from jip.base import users as users_module
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.meta.indexer import Indexer
from jip.runtime import Runtime, build_runtime
from jip.samples import synthetic_site, write_datasets

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
USERNAME = "rita"


@dataclass
class Site:
    origin: str
    runtime: Runtime
    engine: FakeEngine
    username: str = USERNAME
    password: str = PASSWORD


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    users_module.DEFAULT_COST = users_module.ScryptCost(n=2**10, r=8, p=1)
    users_module._dummy_hash.cache_clear()
    root = tmp_path_factory.mktemp("ui-site")
    port = _free_port()
    origin = f"http://127.0.0.1:{port}"
    runtime = build_runtime(Settings(data_dir=root / "data", auth={"public_url": origin}))
    datasets = synthetic_site(
        patients=3, studies_per_patient=2, series_per_study=2, slices=3, rows=64, columns=64, seed=5
    )
    for path in write_datasets(datasets, root / "spool"):
        runtime.ingestor.ingest_file(path)
    Indexer(catalog=runtime.catalog, storage=runtime.storage, index=runtime.index).run_once()
    project = runtime.settings.store.default_project
    add_user(runtime, USERNAME, projects={project: ProjectRole.RESEARCHER})
    app = build_app(runtime)
    # Airflow is slow to start: runs go to the in-memory fake engine of the flow tests.
    engine = FakeEngine(series_workflow("annotate-review", "fake-op", review=True))
    app.state.runtime.workflow_engine = engine
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="ui-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield Site(origin, runtime, engine)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runtime.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
