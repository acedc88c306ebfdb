"""The flow's parts of `jip up`: the embedded Airflow and the auto-rule evaluator.

Both follow :class:`jip.embedded.Component`. The rule evaluator's adapters (catalog
database, blob storage, metadata index, workflow engine) are opened by the composition
(:mod:`jip.embedded`), which hands :class:`RuleComponent` a function that opens them. Airflow's processes get the ``JIP_*``
variables tasks need to reach this site (API URL, work folder, result store, runner),
derived from the settings `jip up` runs with, flags included, so a task builds the same
:class:`Settings` as the site.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from jip.config import Settings
from jip.flow.embedded_airflow import EmbeddedAirflow
from jip.flow.engine import WorkflowEngine
from jip.flow.rules import RuleEvaluator
from jip.flow.run_tokens import RunTokenIssuer, RunTokenPolicy
from jip.flow.service import FlowService
from jip.flow.worker.api_client import local_api_url
from jip.flow.worker.runner import operators_dir
from jip.flow.worker.runner_subprocess import check_operator_isolation
from jip.meta import MetaIndex, SeriesMatcher
from jip.store import BlobStorage, Catalog

log = logging.getLogger(__name__)

# How often the rule component closes the tokens of runs that ended unobserved.
RUN_SWEEP_INTERVAL_S = 30.0


def task_environment(settings: Settings) -> dict[str, str]:
    """The ``JIP_*`` variables of Airflow's processes, hence of every task."""
    flow = settings.flow
    env = {
        "JIP_DATA_DIR": str(settings.data_dir),
        "JIP_RESULTS_URL": settings.resolved_results_url,
        "JIP_API_URL": local_api_url(settings),
        "JIP_LOG_LEVEL": settings.log_level,
        "JIP_FLOW__WORK_DIR": str(settings.resolved_flow_work_dir),
        "JIP_FLOW__RUNNER": flow.runner,
        "JIP_FLOW__CONTAINER_ENGINE": flow.container_engine,
        "JIP_FLOW__OPERATORS_DIR": str(operators_dir(settings)),
        "JIP_FLOW__IMAGE_REGISTRY": flow.image_registry,
        "JIP_FLOW__OPERATOR_TIMEOUT_S": str(flow.operator_timeout_s),
        "JIP_FLOW__REVIEW_POLL_S": str(flow.review_poll_s),
        "JIP_FLOW__OPERATOR_ISOLATION": flow.operator_isolation,
    }
    if flow.operator_user is not None:
        env["JIP_FLOW__OPERATOR_USER"] = flow.operator_user
    if flow.operator_cpus is not None:
        env["JIP_FLOW__OPERATOR_CPUS"] = str(flow.operator_cpus)
    if flow.operator_memory is not None:
        env["JIP_FLOW__OPERATOR_MEMORY"] = flow.operator_memory
    if settings.api_token is not None:
        env["JIP_API_TOKEN"] = settings.api_token.get_secret_value()
    if settings.s3_access_key is not None:
        env["JIP_S3_ACCESS_KEY"] = settings.s3_access_key
    if settings.s3_secret_key is not None:
        env["JIP_S3_SECRET_KEY"] = settings.s3_secret_key.get_secret_value()
    return env


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while starting, so a half-started Airflow is
    stopped (uvicorn's own handlers are not installed yet)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM while starting Airflow")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class AirflowComponent:
    """The embedded Airflow (api-server, scheduler, dag-processor, triggerer)."""

    name = "airflow"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.airflow = EmbeddedAirflow(settings, extra_env=task_environment(settings))

    def start(self) -> None:
        # Refuse at once, not at the first operator run, when operators cannot be isolated.
        check_operator_isolation(self.settings)
        with _interruptible():
            self.airflow.start()

    def not_ready(self) -> str | None:
        return None if self.airflow.running else "airflow is not running"

    def stop(self) -> None:
        self.airflow.stop()

    def describe(self) -> dict[str, object]:
        return {
            "url": self.airflow.url,
            "pids": self.airflow.pids,
            "log_dir": str(self.airflow.log_dir),
            "home": str(self.airflow.home),
        }


class RuleComponent:
    """Evaluates auto-rules every ``flow.rule_interval_s`` in a thread of `jip up`."""

    name = "rules"

    def __init__(self, settings: Settings, open_adapters: Callable[[], RuleAdapters]) -> None:
        self.settings = settings
        self.open_adapters = open_adapters
        self.interval_s = settings.flow.rule_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._adapters: RuleAdapters | None = None
        self.last_pass: float | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._adapters = self.open_adapters()
        evaluator = build_evaluator(self.settings, self._adapters)
        self._thread = threading.Thread(
            target=self._loop, args=(evaluator,), name="jip-rules", daemon=True
        )
        self._thread.start()

    def _loop(self, evaluator: RuleEvaluator) -> None:
        swept = 0.0
        while not self._stop.wait(self.interval_s):
            try:
                if evaluator.service.engine.healthy():
                    evaluator.evaluate()
                    if time.monotonic() - swept >= RUN_SWEEP_INTERVAL_S:
                        # Runs nobody looked at since they ended: revoke their tokens.
                        evaluator.service.close_ended_runs()
                        swept = time.monotonic()
                    self.last_error = None
                else:
                    self.last_error = "the workflow engine is not healthy; rules wait"
                self.last_pass = time.time()
            except Exception as exc:  # keep evaluating: the next pass may succeed
                self.last_error = str(exc)
                log.exception("rule evaluation failed")

    def not_ready(self) -> str | None:
        if self._thread is None or not self._thread.is_alive():
            return "the rule evaluator is not running"
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._adapters is not None:
            self._adapters.close()
            self._adapters = None

    def describe(self) -> dict[str, object]:
        return {
            "interval_s": self.interval_s,
            "quiet_period_s": self.settings.meta.series_quiet_period_s,
        }


@dataclass(frozen=True, kw_only=True)
class RuleAdapters:
    """What the rule evaluator works on, opened for it alone by the composition."""

    db: Engine
    storage: BlobStorage
    index: MetaIndex
    workflow_engine: WorkflowEngine
    # Issues each run's own token (None: runs get none; auth off).
    identity: RunTokenIssuer | None = None

    def close(self) -> None:
        for close in (self.index.close, self.workflow_engine.close, self.db.dispose):
            with contextlib.suppress(Exception):
                close()


def build_evaluator(settings: Settings, adapters: RuleAdapters) -> RuleEvaluator:
    """A rule evaluator on the site's catalog, storage, index and workflow engine."""
    tokens = None
    if adapters.identity is not None:
        tokens = RunTokenPolicy.from_settings(settings, adapters.identity)
    elif settings.auth.enabled:
        log.warning(
            "auth is enabled but the rule evaluator has no identity: runs it starts get no token"
        )
    service = FlowService(
        db=adapters.db,
        engine=adapters.workflow_engine,
        operators_dir=operators_dir(settings),
        tokens=tokens,
    )
    matcher = SeriesMatcher(
        catalog=Catalog(adapters.db), storage=adapters.storage, index=adapters.index
    )
    return RuleEvaluator(
        service=service, matcher=matcher, quiet_period_s=settings.meta.series_quiet_period_s
    )
