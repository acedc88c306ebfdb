"""organ-seg-radiomics: segment organs on abdominal CT, store the SEG, compute radiomics.

Per series, two operator steps (each one task: stage the input by WADO-RS, run the
operator, deliver its output; an operator pod on the cluster): organ-seg (the SEG to the
store by STOW-RS, referencing its CT) → radiomics (on the CT and the stored SEG;
radiomics.csv to the result store). Series run in parallel; one failing series stops
only its own steps.
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.operator_step import operator_step
from jip.flow.worker.tasks import fan_out, workflow_params

ORGAN_SEG = "organ-seg"
RADIOMICS = "radiomics"
VERSION = "0.1.0"


@dag(
    dag_id="organ-seg-radiomics",
    description="Organ segmentation (SEG to the store) and radiomics features (CSV) per CT series.",
    schedule=None,
    catchup=False,
    tags=["jip", "segmentation", "radiomics"],
    params=workflow_params(ORGAN_SEG, RADIOMICS),
)
def organ_seg_radiomics() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        seg = operator_step(series_uid, operator=ORGAN_SEG, version=VERSION)
        operator_step(series_uid, operator=RADIOMICS, version=VERSION, also=seg)

    fan_out(per_series)


organ_seg_radiomics()
