"""organ-seg-radiomics: segment organs on abdominal CT, store the SEG, compute radiomics.

Per series: get-input (WADO-RS) → organ-seg → put-seg (the SEG to the store by STOW-RS,
referencing its CT) → radiomics-input (the CT and the stored SEG) → radiomics →
put-csv (radiomics.csv to the result store). Series run in parallel; one failing series
stops only its own steps.
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

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
        staged = get_input.override(task_id="get-input")(series_uid)
        seg = run_operator.override(task_id=ORGAN_SEG)(staged, operator=ORGAN_SEG, version=VERSION)
        stored = put_output.override(task_id="put-seg")(seg)
        seg_input = get_input.override(task_id="radiomics-input")(series_uid, also=stored)
        features = run_operator.override(task_id=RADIOMICS)(
            seg_input, operator=RADIOMICS, version=VERSION
        )
        put_output.override(task_id="put-csv")(features)

    fan_out(per_series)


organ_seg_radiomics()
