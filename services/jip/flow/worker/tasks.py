"""DAG building blocks: list the run's series, get-input, run-operator, put-output, cleanup.

A workflow maps a task group over the run's series (dynamic task mapping, ``.expand``):
one instance of each step per series, labelled with its Series Instance UID, and a
failing series stops only its own later steps. How many run at once is Airflow's
``parallelism``, which `jip up` sets from ``flow.max_parallel_series``. Each operator
step is :func:`jip.flow.worker.operator_step.operator_step`: one task that stages the
input, runs the operator and delivers its output, returning what it delivered
(``{"series", "dicom": [...], "files": [...]}``), which the next step takes as ``also``::

    @task_group(group_id="series")
    def per_series(series_uid):
        seg = operator_step(series_uid, operator="organ-seg", version="0.1.0")
        operator_step(series_uid, operator="radiomics", version="0.1.0", also=seg)

    fan_out(per_series)

On the cluster (``flow.runner = "kubernetes"``) that task is an operator pod; elsewhere
it is ``process_series`` (get-input, run-operator and put-output as one task: one
scheduler round and one task process instead of three). The three steps stay tasks of
their own for workflows that need them apart.

Each step reads settings (``JIP_*`` variables of Airflow's processes) when it runs, and
the run's conf for its series and their studies. Where the site issued the run a token
of its own (authentication on), the steps reach the site's API with it, read from the
Airflow Connection ``jip_run_<run_id>`` (never from the conf; see
:mod:`jip.flow.run_tokens`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Param, get_current_context, task

from jip.backends import runner_for
from jip.config import Settings
from jip.flow.schema import ResultKind
from jip.flow.worker import steps
from jip.flow.worker.api_client import JipClient
from jip.flow.worker.runner import OperatorJob
from jip.flow.workflows import (
    OPERATOR_KEY,
    RUN_TOKEN_KEY,
    SERIES_KEY,
    STUDIES_KEY,
    run_token_conn_id,
)

log = logging.getLogger(__name__)
operator_log = logging.getLogger("jip.operator")

# Mapped instances are labelled with their series (Airflow renders it when one ends).
SERIES_LABEL = "{{ jip_series }}"
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"


def workflow_params(*operators: str) -> dict[str, Param]:
    """The ``params`` of a workflow: its series and one object per operator step.

    Operator objects carry only a reference (``x-jip-operator``); the flow service fills
    in the operator's ``params.schema.json`` (no file is read when the DAG is parsed).
    """
    params: dict[str, Param] = {
        SERIES_KEY: Param(
            [],
            type="array",
            items={"type": "string", "pattern": UID_PATTERN, "maxLength": 64},
            description="Series Instance UIDs; the workflow runs once per series.",
        )
    }
    for name in operators:
        params[name] = Param(
            {},
            type="object",
            description=f"Parameters of the {name} operator (its params.schema.json).",
            **{OPERATOR_KEY: name},  # type: ignore[arg-type]
        )
    return params


# -- context helpers ---------------------------------------------------------------------------


def _context() -> Any:
    return get_current_context()


def _conf(context: Any) -> Mapping[str, Any]:
    return context["dag_run"].conf or {}


def run_id_of(context: Any) -> str:
    return str(context["dag_run"].run_id)


def _step(context: Any) -> str:
    return str(context["ti"].task_id).rsplit(".", 1)[-1]


def _label(context: Any, series_uid: str) -> None:
    context["jip_series"] = series_uid


def task_settings() -> Settings:
    """The site's settings as the task process sees them (``JIP_*`` variables)."""
    from jip.config import get_settings

    return get_settings()


def run_studies(context: Any) -> dict[str, str]:
    """The study of each of the run's series, as the site knew it at the start."""
    return dict(_conf(context).get(STUDIES_KEY) or {})


def run_token_conn(context: Any) -> str | None:
    """The Connection holding the run's own token; None when the site issued none."""
    return run_token_conn_id(run_id_of(context)) if _conf(context).get(RUN_TOKEN_KEY) else None


def run_token(context: Any) -> str | None:
    """The run's own token (AirflowNotFoundException once the run's token was closed)."""
    conn_id = run_token_conn(context)
    if conn_id is None:
        return None
    from airflow.sdk import Connection

    password = Connection.get(conn_id).password
    return str(password) if password else None


def task_client(context: Any, settings: Settings | None = None) -> JipClient:
    """A client of the site's API, with the run's own token when it has one (else the
    worker's ``api_token``)."""
    return JipClient.from_settings(settings or task_settings(), token=run_token(context))


def series_of(value: Any) -> list[str]:
    """Series UIDs from a put-output result (its DICOM series), a list or one UID."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [str(uid) for uid in value.get("dicom") or []]
    if isinstance(value, str):
        return [value]
    return [str(uid) for uid in value]


# -- the steps -----------------------------------------------------------------------------


@task
def list_series() -> list[str]:
    """The run's series, in the order given (map index i works on the i-th)."""
    context = _context()
    series = list(dict.fromkeys(_conf(context).get(SERIES_KEY) or context["params"][SERIES_KEY]))
    log.info("run has %d series", len(series))
    return series


def _stage(
    context: Any, settings: Settings, series_uid: str, step: str, also: Any
) -> dict[str, Any]:
    """get-input's work, shared by its task and by :func:`process_series`."""
    uids = [series_uid, *series_of(also)]
    dirs = steps.step_dirs(settings.resolved_flow_work_dir, run_id_of(context), series_uid, step)
    with task_client(context, settings) as client:
        steps.get_input(client, uids, dirs.input_dir, studies=run_studies(context))
    log.info("input staged: %s", ", ".join(uids))
    return {"series": series_uid, "input_dir": str(dirs.input_dir), "inputs": uids}


def _run(
    context: Any,
    settings: Settings,
    staged: Mapping[str, Any],
    step: str,
    *,
    operator: str,
    version: str,
) -> dict[str, Any]:
    """run-operator's work, shared by its task and by :func:`process_series`."""
    series_uid = str(staged["series"])
    run_id = run_id_of(context)
    dirs = steps.step_dirs(settings.resolved_flow_work_dir, run_id, series_uid, step)
    params = context["params"].get(operator) or {}
    job = OperatorJob(
        operator=operator,
        version=version,
        input_dir=Path(staged["input_dir"]),
        output_dir=dirs.output_dir,
        params=params,
        labels={"series": series_uid, "task": step},
        series=tuple(staged.get("inputs") or [series_uid]),
        run_id=run_id,
        api_token=run_token(context),  # pods that stage through the API use it
    )
    outcome = steps.run_operator(
        runner_for(settings), job, lambda line: operator_log.info("%s", line)
    )
    return {
        "series": series_uid,
        "operator": operator,
        "output_dir": str(dirs.output_dir),
        "delivered": outcome.delivered,
    }


def delivery(series_uid: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """put-output's result: the source series, its DICOM result series and file keys."""
    dicom = [r["result_series_uid"] for r in records if r["kind"] == ResultKind.DICOM.value]
    files = [r["key"] for r in records if r["kind"] == ResultKind.FILE.value]
    log.info("delivered %d DICOM series and %d files", len(dicom), len(files))
    return {"series": series_uid, "dicom": dicom, "files": files}


def delivered_by_pod(
    context: Any, series_uid: str, operator: str, settings: Settings | None = None
) -> dict[str, Any]:
    """What an operator pod delivered itself, as put-output's result (the flow API's
    records of the series made by ``operator``)."""
    with task_client(context, settings) as client:
        records = [
            r
            for r in client.results(run_id_of(context), series=series_uid)
            if r["operator"] == operator
        ]
    return delivery(series_uid, records)


def _deliver(context: Any, settings: Settings, produced: Mapping[str, Any]) -> dict[str, Any]:
    """put-output's work, shared by its task and by :func:`process_series`."""
    from jip.backends import storage_for

    series_uid = str(produced["series"])
    operator = str(produced["operator"])
    if produced.get("delivered"):  # the runner's pod pushed it already
        return delivered_by_pod(context, series_uid, operator, settings)
    with task_client(context, settings) as client:
        records = steps.put_output(
            client=client,
            results=storage_for(settings.resolved_results_url, settings),
            run_id=run_id_of(context),
            series_uid=series_uid,
            operator=operator,
            output_dir=Path(produced["output_dir"]),
        )
    return delivery(series_uid, records)


@task(map_index_template=SERIES_LABEL)
def get_input(series_uid: str, also: Any = None) -> dict[str, Any]:
    """Fetch the series (and ``also``: e.g. a SEG put-output stored) from the store."""
    context = _context()
    _label(context, series_uid)
    return _stage(context, task_settings(), series_uid, _step(context), also)


@task(map_index_template=SERIES_LABEL)
def run_operator(
    staged: Mapping[str, Any], *, operator: str, version: str = "latest"
) -> dict[str, Any]:
    """Run one operator on the staged input through the runner the settings name."""
    context = _context()
    _label(context, str(staged["series"]))
    return _run(
        context, task_settings(), staged, _step(context), operator=operator, version=version
    )


@task(map_index_template=SERIES_LABEL)
def put_output(produced: Mapping[str, Any]) -> dict[str, Any]:
    """DICOM results to the store (STOW-RS), other files to the result store; recorded."""
    context = _context()
    _label(context, str(produced["series"]))
    return _deliver(context, task_settings(), produced)


@task(map_index_template=SERIES_LABEL)
def process_series(
    series_uid: str, *, operator: str, version: str = "latest", also: Any = None
) -> dict[str, Any]:
    """get-input, one operator and put-output of one series as one task.

    For steps that belong together: each task costs a scheduler round and a task
    process start (about a second on a small site, ``bench/bench_flow.py``), and the
    three steps of one operator have nothing to gain from being scheduled apart: a
    retry repeats all three, each from a clean folder.
    """
    context = _context()
    _label(context, series_uid)
    settings = task_settings()
    step = _step(context)
    staged = _stage(context, settings, series_uid, step, also)
    produced = _run(context, settings, staged, step, operator=operator, version=version)
    return _deliver(context, settings, produced)


@task
def cleanup() -> None:
    """Remove the run's work folder, however its series ended (logs keep what happened)."""
    context = _context()
    folder = steps.run_work_dir(task_settings().resolved_flow_work_dir, run_id_of(context))
    shutil.rmtree(folder, ignore_errors=True)


def fan_out(per_series: Any) -> None:
    """Map a ``@task_group`` over the run's series, then clean up.

    The cleanup is a teardown of ``list_series``: it runs however the series ended and,
    unlike an ordinary last task, does not decide the run's state, so a run with a
    failed series ends failed.
    """
    series = list_series()
    per_series.expand(series_uid=series) >> cleanup().as_teardown(setups=series)  # type: ignore[arg-type]
