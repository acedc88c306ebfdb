"""``operator_step``: how a DAG writes one operator step, whatever runs it.

A module of its own so that parsing a DAG file imports Kubernetes' provider only on the
cluster: :mod:`jip.flow.worker.pod_operator` is imported only when ``flow.runner`` is
``kubernetes``, and :mod:`jip.flow.worker.tasks` never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jip.flow.worker.tasks import process_series, task_settings

if TYPE_CHECKING:
    from airflow.sdk.definitions.xcom_arg import XComArg

    from jip.flow.worker.pod_operator import OperatorManifest


def operator_step(
    series_uid: Any,
    *,
    operator: str,
    version: str = "latest",
    task_id: str | None = None,
    also: Any = None,
    manifest: OperatorManifest | None = None,
) -> XComArg:
    """One operator step of a DAG as one task, on the site's runner; its XCom is what it
    delivered, as put-output returns it (``{"series", "dicom": [...], "files": [...]}``).

    ``flow.runner = "kubernetes"`` (the cluster): an operator pod that stages in and
    out through the API itself. Any other runner: ``process_series`` (get-input, the
    operator, put-output in one task process). ``also``: more series to stage (a SEG an
    earlier step delivered, a list of UIDs). Reading the settings here reads ``JIP_*``
    variables only, never a file or the network, so parsing stays cheap.
    """
    settings = task_settings()
    if settings.flow.runner == "kubernetes":
        from jip.flow.worker.pod_operator import OperatorManifest, PodSettings, operator_pod

        chosen = manifest or OperatorManifest(
            name=operator, version=version, timeout_s=settings.flow.operator_timeout_s
        )
        return operator_pod(
            manifest=chosen,
            task_id=task_id or operator,
            series_uid=series_uid,
            also=also,
            pod_settings=PodSettings.from_settings(settings),
        ).output
    return process_series.override(task_id=task_id or operator)(
        series_uid, operator=operator, version=version, also=also
    )
