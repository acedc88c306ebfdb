"""annotate-review: organ segmentation, a person reviews it, radiomics on the reviewed SEG.

Per series: get-input → organ-seg → put-seg → annotate (waits; see below) →
radiomics-input (the CT and the reviewed SEG) → radiomics → put-csv.

The ``annotate`` task waits, without holding a worker, until a person either marks the
series done (``POST /api/flow/runs/{run}/tasks/annotate/done``: radiomics runs on the
proposed SEG) or uploads a corrected SEG (``POST /api/flow/runs/{run}/tasks/annotate/seg``:
it is stored and radiomics runs on it).
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.operators import AwaitReviewOperator
from jip.flow.worker.tasks import (
    fan_out,
    get_input,
    put_output,
    run_operator,
    workflow_params,
)

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
        staged = get_input.override(task_id="get-input")(series_uid)
        seg = run_operator.override(task_id=ORGAN_SEG)(staged, operator=ORGAN_SEG, version=VERSION)
        proposed = put_output.override(task_id="put-seg")(seg)
        reviewed = AwaitReviewOperator(task_id="annotate", series_uid=series_uid, proposed=proposed)
        seg_input = get_input.override(task_id="radiomics-input")(series_uid, also=reviewed.output)
        features = run_operator.override(task_id=RADIOMICS)(
            seg_input, operator=RADIOMICS, version=VERSION
        )
        put_output.override(task_id="put-csv")(features)

    fan_out(per_series)


annotate_review()
