"""adc-harmonisation: an ADC map per DWI series, then ADC statistics per region.

Per DWI series, two operator steps (each one task: stage by WADO-RS, run, deliver; a pod
on the cluster): adc-map (the map to the store by STOW-RS) → roi-series (the stored map
and the series' SEG) → roi-stats (on the DWI series, its ADC map and its SEG;
roi_stats.json to the result store). The SEG is the one drawn on the DWI series,
named per series in the ``segmentations`` parameter ({DWI series UID: SEG series UID});
roi-stats pairs it with the ADC map by position (same geometry, same frame of
reference) and skips the multi-b DWI series itself. A series without a SEG stops after
its ADC map is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task, task_group

from jip.flow.worker.operator_step import operator_step
from jip.flow.worker.tasks import SERIES_LABEL, UID_PATTERN, fan_out, workflow_params

ADC_MAP = "adc-map"
ROI_STATS = "roi-stats"
VERSION = "0.1.0"
SEGMENTATIONS = "segmentations"


@task(map_index_template=SERIES_LABEL)
def roi_inputs(stored: Mapping[str, Any], series_uid: str) -> list[str]:
    """The stored ADC map and the series' SEG (the ``segmentations`` parameter)."""
    context: Any = get_current_context()
    context["jip_series"] = series_uid
    segmentations = context["params"].get(SEGMENTATIONS) or {}
    seg = segmentations.get(series_uid)
    if not seg:
        raise ValueError(f"series {series_uid}: no SEG named in the {SEGMENTATIONS} parameter")
    return [*(str(uid) for uid in stored.get("dicom") or []), str(seg)]


@dag(
    dag_id="adc-harmonisation",
    description="ADC map per DWI series (to the store) and ADC statistics per SEG segment (JSON).",
    schedule=None,
    catchup=False,
    tags=["jip", "diffusion", "harmonisation"],
    params={
        **workflow_params(ADC_MAP, ROI_STATS),
        SEGMENTATIONS: Param(
            {},
            type="object",
            propertyNames={"pattern": UID_PATTERN, "maxLength": 64},
            additionalProperties={"type": "string", "pattern": UID_PATTERN, "maxLength": 64},
            description="The SEG drawn on each DWI series: {DWI series UID: SEG series UID}.",
        ),
    },
)
def adc_harmonisation() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        stored = operator_step(series_uid, operator=ADC_MAP, version=VERSION)
        wanted = roi_inputs.override(task_id="roi-series")(stored, series_uid)
        operator_step(series_uid, operator=ROI_STATS, version=VERSION, also=wanted)

    fan_out(per_series)


adc_harmonisation()
