"""Operators as pods through Airflow's own provider (the cluster shape).

:func:`operator_pod` is the one factory: from an operator's manifest (image, pinned by
digest where ``build/images.json`` knows it; cpu, memory; ``gpu: N``) it makes a
``KubernetesPodOperator`` whose pod is :func:`~jip.flow.worker.runner_kubernetes.build_pod`'s:
an init container fetches the series through the store's WADO-RS API with the run's own
token, the operator runs as the next init container on an emptyDir, and the main
container pushes the output back (DICOM by STOW-RS, other files through the flow API,
each recorded); the task returns what was delivered. The operator pod gets
no database, bucket or service-account credentials: only the API and the run's token,
and only in its two stage containers. Non-root, read-only root filesystem, no privilege
escalation, all capabilities dropped, seccomp RuntimeDefault; ``gpu: N`` adds the
``nvidia.com/gpu`` limit with the GPU pool's node selector and tolerations
(``flow.gpu``).

The pod is built when the task runs (the run's id, token and parameters are known only
then), so the DAG file does no I/O when it is parsed::

    seg = operator_step(series_uid, operator="organ-seg", version="0.1.0")
    operator_step(series_uid, operator="radiomics", version="0.1.0", also=seg)

:func:`~jip.flow.worker.operator_step.operator_step` is what DAGs call: an operator
pod on the cluster (``flow.runner = "kubernetes"``), one fused task on any other
runner; it imports this module (and Kubernetes' provider) only on the cluster, so
parsing DAGs elsewhere stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes import client as k8s

from jip.errors import Invalid
from jip.flow.worker.runner import OperatorJob, check_operator_name
from jip.flow.worker.runner_kubernetes import (
    STAGE_OUT_CONTAINER,
    PodResources,
    PodSettings,
    build_pod,
    image_name,
)

# The pod's own deadline beyond the operator's time limit (staging in and out).
_STAGING_GRACE_S = 600


@dataclass(frozen=True, kw_only=True)
class OperatorManifest:
    """What a workflow says about one operator step: which image, with what resources."""

    name: str
    version: str = "latest"
    # A full reference (``registry/jip/organ-seg@sha256:...``); None: from the registry,
    # the name and the version (or the digest in the image lock, see ``pinned``).
    image: str | None = None
    cpus: float | None = None
    memory: str | None = None
    gpu: int = 0
    timeout_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        check_operator_name(self.name)
        if self.gpu < 0:
            raise Invalid(f"operator {self.name}: gpu must be 0 or more, not {self.gpu}")

    @property
    def resources(self) -> PodResources:
        return PodResources(cpus=self.cpus, memory=self.memory, gpu=self.gpu)

    def image_ref(self, registry: str) -> str:
        return self.image or image_name(registry, self.name, self.version)

    def pinned(self, lock: Mapping[str, Any], registry: str) -> OperatorManifest:
        """This manifest with its image pinned by the digest ``lock`` (images.json) records."""
        entry = lock.get("images", {}).get(f"jip/{self.name}:{self.version}")
        if not entry or not entry.get("digest"):
            raise Invalid(
                f"the image lock has no digest for jip/{self.name}:{self.version}; "
                "run `make images` (or the offline bundle's install script) first"
            )
        return dataclasses.replace(self, image=f"{registry}jip/{self.name}@{entry['digest']}")


def load_lock(path: Path) -> dict[str, Any]:
    """An image lock (``build/images.json``, or the one the bundle's install writes)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Invalid(f"cannot read the image lock {path}: {exc}; run `make images`") from exc
    return data


class OperatorPodOperator(KubernetesPodOperator):
    """A KubernetesPodOperator whose pod is JIP's operator pod for one series."""

    template_fields: Sequence[str] = (*KubernetesPodOperator.template_fields, "series_uid", "also")

    def __init__(
        self,
        *,
        manifest: OperatorManifest,
        pod_settings: PodSettings,
        series_uid: Any,
        also: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest
        self.pod_settings = pod_settings
        self.series_uid = series_uid
        self.also = also

    @contextlib.contextmanager
    def _without_sidecar(self) -> Iterator[None]:
        """KPO reads ``do_xcom_push`` as "add the XCom sidecar and read its file"; JIP's
        pods write no such file, yet the task's return value (what it delivered) must
        reach XCom, which Airflow decides by the same flag after ``execute``."""
        push, self.do_xcom_push = self.do_xcom_push, False
        try:
            yield
        finally:
            self.do_xcom_push = push

    def operator_job(self, context: Any = None) -> OperatorJob:
        """The job of this task instance; without a context (a dry run), the manifest's."""
        from jip.flow.worker.tasks import run_id_of, run_token, series_of

        series = str(self.series_uid)
        # ``also`` is an earlier step's XCom, rendered only when the task runs.
        uids = (series, *(series_of(self.also) if context is not None else ()))
        params: Mapping[str, Any] = {}
        if context is not None:
            params = context["params"].get(self.manifest.name) or {}
        run_id = run_id_of(context) if context is not None else "dry-run"
        return OperatorJob(
            operator=self.manifest.name,
            version=self.manifest.version,
            input_dir=Path("/jip/input"),  # emptyDir staging: no worker folders
            output_dir=Path("/jip/output"),
            params=params,
            labels={"series": series, "task": self.task_id.rsplit(".", 1)[-1]},
            series=uids,
            run_id=run_id,
            api_token=run_token(context) if context is not None else None,
        )

    def pinned_manifest(self) -> OperatorManifest:
        """The manifest with its image pinned by the site's image lock (flow.image_lock),
        read when the task runs, not when the DAG is parsed; as it is without a lock."""
        lock = self.pod_settings.image_lock
        if lock is None or self.manifest.image is not None:
            return self.manifest
        return self.manifest.pinned(load_lock(lock), self.pod_settings.registry)

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        manifest = self.pinned_manifest()
        self.full_pod_spec = build_pod(
            self.operator_job(context),
            self.pod_settings,
            deadline_s=int(manifest.timeout_s) + _STAGING_GRACE_S,
            image=manifest.image_ref(self.pod_settings.registry),
            resources=manifest.resources,
        )
        with self._without_sidecar():
            return super().build_pod_request_obj(context, dry_run=dry_run)

    def execute(self, context: Any) -> dict[str, Any]:
        """Run the pod; return what it delivered, as put-output returns it."""
        from jip.flow.worker.tasks import delivered_by_pod

        series = str(self.series_uid)
        context["jip_series"] = series  # the mapped instance's label
        with self._without_sidecar():
            super().execute(context)
        return delivered_by_pod(context, series, self.manifest.name)


def operator_pod(
    *,
    manifest: OperatorManifest,
    task_id: str,
    series_uid: Any,
    also: Any = None,
    pod_settings: PodSettings | None = None,
    **kwargs: Any,
) -> OperatorPodOperator:
    """The one factory of operator pods; ``kwargs`` go to BaseOperator (retries, ...)."""
    if pod_settings is None:
        from jip.flow.worker.tasks import task_settings

        pod_settings = PodSettings.from_settings(task_settings())
    # Operators are untrusted code: the pod gets the API and the run's token, never a
    # shared volume, the result store's credentials nor a service-account token.
    pod = dataclasses.replace(pod_settings, work_pvc=None)
    return OperatorPodOperator(
        manifest=manifest,
        pod_settings=pod,
        series_uid=series_uid,
        also=also,
        task_id=task_id,
        namespace=pod.namespace,
        image=pod.stage_image,  # the main container; the operator is an init container
        base_container_name=STAGE_OUT_CONTAINER,
        init_container_logs=True,
        get_logs=True,
        do_xcom_push=True,  # the return value; no sidecar (see _without_sidecar)
        on_finish_action="delete_pod",
        automount_service_account_token=False,
        map_index_template="{{ jip_series }}",
        **kwargs,
    )
