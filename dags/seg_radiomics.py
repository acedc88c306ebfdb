"""seg-radiomics: radiomics features of any SEG in the store, on the image series it references.

The run's series are SEG series (one, or a cohort of them), made by JIP or uploaded from
anywhere. Per SEG: get-seg (WADO-RS) → find-source (the image series the SEG was made on:
the radiomics parameter ``source_series_uid``, else its ReferencedSeriesSequence, else the
series holding the instances its frames derive from; see jip.flow.worker.sources) →
radiomics-input (the SEG and its source) → radiomics → put-csv (``<SEG series>/
radiomics.csv`` in the result store). A series that is no SEG, or whose source is not in
the store or not in the run's projects, fails alone, saying so.
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.sources import find_source
from jip.flow.worker.tasks import fan_out, get_input, put_output, run_operator, workflow_params

RADIOMICS = "radiomics"
VERSION = "0.1.0"


@dag(
    dag_id="seg-radiomics",
    description="Radiomics features (CSV) of SEG series in the store, on the image series each SEG references.",
    schedule=None,
    catchup=False,
    tags=["jip", "radiomics", "segmentation"],
    params=workflow_params(RADIOMICS),
)
def seg_radiomics() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        seg = get_input.override(task_id="get-seg")(series_uid)
        sources = find_source.override(task_id="find-source")(
            seg, operator=RADIOMICS, modalities=["SEG"]
        )
        staged = get_input.override(task_id="radiomics-input")(series_uid, also=sources)
        features = run_operator.override(task_id=RADIOMICS)(
            staged, operator=RADIOMICS, version=VERSION
        )
        put_output.override(task_id="put-csv")(features)

    fan_out(per_series)


seg_radiomics()
