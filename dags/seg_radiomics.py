"""seg-radiomics: radiomics features of any SEG in the store, on the image series it references.

The run's series are SEG series (one, or a cohort of them), made by JIP or uploaded from
anywhere. Per SEG: find-source (reads the SEG by WADO-RS: the image series it was made
on is the radiomics parameter ``source_series_uid``, else its ReferencedSeriesSequence,
else the series holding the instances its frames derive from; see
jip.flow.worker.sources) → radiomics (one operator step on the SEG and its source; a pod
on the cluster; ``<SEG series>/radiomics.csv`` in the result store). A series that is no SEG, or whose source is not in
the store or not in the run's projects, fails alone, saying so.
"""

from __future__ import annotations

from airflow.sdk import dag, task_group

from jip.flow.worker.operator_step import operator_step
from jip.flow.worker.sources import find_source
from jip.flow.worker.tasks import fan_out, workflow_params

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
        sources = find_source.override(task_id="find-source")(
            series_uid, operator=RADIOMICS, modalities=["SEG"]
        )
        operator_step(series_uid, operator=RADIOMICS, version=VERSION, also=sources)

    fan_out(per_series)


seg_radiomics()
