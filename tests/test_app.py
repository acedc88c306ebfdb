"""build_app mounts every service: a router that fails to import stops the app, never vanishes."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

from jip.app import ROUTERS, build_app
from jip.config import Settings
from jip.runtime import build_runtime


def test_every_service_is_mounted(tmp_path: Path) -> None:
    runtime = build_runtime(Settings(data_dir=tmp_path))
    try:
        app = build_app(runtime)
        paths = {route.path for route in app.routes if isinstance(route, APIRoute)}
    finally:
        runtime.close()
    for expected in (
        "/dicom-web/studies",  # store: DICOMweb (once dropped silently on an ImportError)
        "/api/dicom/peers",  # store: our SCU
        "/api/store/stats",  # store: administration
        "/api/meta/search",  # meta
        "/api/flow/workflows",  # flow
        "/api/projects",  # base
        "/api/admin/status",  # ui: the status page
        "/",  # ui: the pages
    ):
        assert expected in paths, f"{expected} is not served"


def test_each_router_is_mounted_once() -> None:
    assert len({id(router) for router in ROUTERS}) == len(ROUTERS)
