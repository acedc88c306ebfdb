"""Helpers for tests that drive the self-test workflow (`dags/jip_selftest.py`) on an engine."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from jip.flow.engine import TaskInstance, WorkflowEngine, WorkflowRun

SELFTEST = "jip-selftest"
MAPPED = "process_series"


def series_uids(count: int) -> list[str]:
    # UIDs as DICOM writes them (PS3.5 9.1): digits and dots only.
    return [f"1.2.826.0.1.3680043.10.{uuid.uuid4().int % 10**12}.{n}" for n in range(count)]


def wait_for_run(engine: WorkflowEngine, run_id: str, timeout_s: float = 180.0) -> WorkflowRun:
    deadline = time.monotonic() + timeout_s
    while True:
        run = engine.get_run(SELFTEST, run_id)
        if run.state.finished:
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {run.state} after {timeout_s:.0f} s")
        time.sleep(0.5)


def wait_for_tasks(
    engine: WorkflowEngine,
    run_id: str,
    condition: Callable[[list[TaskInstance]], bool],
    timeout_s: float = 120.0,
) -> list[TaskInstance]:
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = engine.task_instances(SELFTEST, run_id)
        if condition(tasks):
            return tasks
        if time.monotonic() > deadline:
            states = [(t.task_id, t.map_index, t.state) for t in tasks]
            pytest.fail(f"task instances of {run_id} never got there: {states}")
        time.sleep(0.5)


def mapped(tasks: list[TaskInstance]) -> list[TaskInstance]:
    return [t for t in tasks if t.task_id == MAPPED]
