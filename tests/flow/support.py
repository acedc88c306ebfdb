"""Helpers of the flow tests: serve a site's API, ingest phantom series, wait for runs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydicom
import pytest
from jip_sdk.phantom import AbdomenPhantom, PhantomSeries, write_ct_series

from jip.runtime import Runtime

T = TypeVar("T")


def ingest_phantom(
    runtime: Runtime,
    phantom: AbdomenPhantom,
    folder: Path,
    *,
    modality: str | None = None,
    **kwargs: Any,
) -> PhantomSeries:
    """Write a phantom CT series under ``folder`` and ingest a copy (ingest consumes files)."""
    written = write_ct_series(phantom, folder, **kwargs)
    spool = folder.parent / f"{folder.name}-spool-{written.series_instance_uid}"
    shutil.copytree(written.series.path, spool)
    for path in sorted(spool.glob("*.dcm")):
        if modality is not None:
            ds = pydicom.dcmread(path)
            ds.Modality = modality
            ds.save_as(path)
        runtime.ingestor.ingest_file(path)
    shutil.rmtree(spool, ignore_errors=True)
    return written


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float = 240.0, every_s: float = 1.0
) -> T:
    """Call ``probe`` until it returns something other than None (or fail, naming ``what``)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            value = probe()
        except AssertionError as exc:
            value, last = None, exc
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached in {timeout_s:.0f} s ({last})")
        time.sleep(every_s)


def run_detail(api: httpx.Client, run_id: str) -> dict[str, Any]:
    response = api.get(f"/api/flow/runs/{run_id}")
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def wait_for_run(api: httpx.Client, run_id: str, timeout_s: float = 280.0) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        detail = run_detail(api, run_id)
        return detail if detail["state"] in ("success", "failed", "cancelled") else None

    return wait_for(f"run {run_id} to finish", finished, timeout_s)


def series_state(detail: dict[str, Any], series_uid: str) -> dict[str, Any]:
    return next(s for s in detail["per_series"] if s["series_instance_uid"] == series_uid)
