"""annotate-review: organ segmentation, a person reviews it, radiomics on the reviewed SEG.

Per series: organ-seg (one operator step: stage, run, the SEG to the store) → annotate
(waits; see below) → radiomics (one operator step on the CT and the reviewed SEG;
radiomics.csv to the result store). On the cluster each operator step is a pod.

The ``annotate`` task waits, without holding a worker, until a person either marks the
series done (``POST /api/flow/runs/{run}/tasks/annotate/done``: radiomics runs on the
proposed SEG) or uploads a corrected SEG (``POST /api/flow/runs/{run}/tasks/annotate/seg``:
it is stored and radiomics runs on it).
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.operator_step import operator_step
from jip.flow.worker.operators import AwaitReviewOperator
from jip.flow.worker.tasks import fan_out, workflow_params

ORGAN_SEG = "organ-seg"
RADIOMICS = "radiomics"
VERSION = "0.1.0"


@dag(
    dag_id="annotate-review",
    description="Organ segmentation reviewed by a person (done, or a corrected SEG), then radiomics.",
    schedule=None,
    catchup=False,
    tags=["jip", "segmentation", "radiomics", "human-in-the-loop"],
    params=workflow_params(ORGAN_SEG, RADIOMICS),
)
def annotate_review() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        proposed = operator_step(series_uid, operator=ORGAN_SEG, version=VERSION)
        reviewed = AwaitReviewOperator(task_id="annotate", series_uid=series_uid, proposed=proposed)
        operator_step(series_uid, operator=RADIOMICS, version=VERSION, also=reviewed.output)

    fan_out(per_series)


annotate_review()
