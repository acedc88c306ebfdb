"""jip-selftest: proves that JIP can start a workflow, fan out per series and read its logs.

Two tasks: ``list_series`` reads ``conf["series"]`` and ``process_series`` is mapped over
it (dynamic task mapping), one task instance per series, labelled with the series UID.
``fail_series`` makes the instance for that one series fail; ``sleep_s`` keeps every
instance busy long enough to cancel the run. Tests in ``tests/flow/`` trigger it.
"""

from __future__ import annotations

import time

from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="jip-selftest",
    description="JIP self-test: one task instance per series, no data touched.",
    schedule=None,
    catchup=False,
    tags=["jip", "selftest"],
    params={
        "series": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Series Instance UIDs; one mapped task instance per entry.",
        ),
        "fail_series": Param(
            None,
            type=["null", "string"],
            description="Make the task instance of this series fail.",
        ),
        "sleep_s": Param(
            0,
            type="number",
            minimum=0,
            maximum=3600,
            description="Seconds each series task waits before it finishes.",
        ),
    },
)
def jip_selftest() -> None:
    @task
    def list_series() -> list[str]:
        series = list(get_current_context()["params"]["series"])
        print(f"jip-selftest: {len(series)} series")
        return series

    # The series UID labels each mapped instance in the UI and in the REST API
    # (`rendered_map_index`), so per-series progress is readable without map indexes.
    @task(map_index_template="{{ series_label }}")
    def process_series(series_instance_uid: str) -> str:
        context = get_current_context()
        context["series_label"] = series_instance_uid  # type: ignore[typeddict-unknown-key]
        params = context["params"]
        print(f"jip-selftest: processing series {series_instance_uid}")
        time.sleep(float(params["sleep_s"]))
        if params["fail_series"] == series_instance_uid:
            raise RuntimeError(f"jip-selftest: failing series {series_instance_uid} as asked")
        print(f"jip-selftest: done series {series_instance_uid}")
        return series_instance_uid

    process_series.expand(series_instance_uid=list_series())


jip_selftest()
