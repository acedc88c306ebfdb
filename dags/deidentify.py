"""deidentify: a de-identified copy of each series (PS3.15 Annex E), stored as a new series.

Per series, one operator step (one task: get-input → deidentify → put-output, the new
series to the store by STOW-RS; an operator pod on the cluster). The new series are
recorded as results of the run, so an auto-rule that started this workflow never fires
again on them.
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.operator_step import operator_step
from jip.flow.worker.tasks import fan_out, workflow_params

DEIDENTIFY = "deidentify"
VERSION = "0.1.0"


@dag(
    dag_id="deidentify",
    description="De-identified copies of series (Basic Application Level Confidentiality Profile).",
    schedule=None,
    catchup=False,
    tags=["jip", "deidentification"],
    params=workflow_params(DEIDENTIFY),
)
def deidentify() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        operator_step(series_uid, operator=DEIDENTIFY, version=VERSION)

    fan_out(per_series)


deidentify()
