"""Runs an operator as a Kubernetes pod, built from the `kubernetes` client's models.

Two ways the data reaches the pod:

- **Shared work volume** (``flow.kubernetes_work_pvc`` set): Airflow's workers and the
  pods mount the same ReadWriteMany PVC holding ``flow.work_dir``; the pod mounts the
  job's input folder read-only and its output folder through ``subPath``.
- **emptyDir staging** (no PVC): an init container fetches the input series from the
  store's WADO-RS API into an emptyDir, the operator runs as the next init container
  (init containers run one after the other), and the pod's one main container pushes
  the output (STOW-RS, and other files through the flow API: the pod never holds the
  result store's credentials). The outcome then says ``delivered``. The stage containers
  reach the store and the flow API at their in-cluster Services (``flow.api``).

The CoreV1Api comes from the caller (tests pass a mock); ``create``, ``read``, ``logs``
and ``delete`` are the only calls made. Pods run as a non-root user with no privilege
escalation, no capabilities, a read-only root file system, no service-account token and
a deadline, and carry labels naming run, operator and series.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from jip.config import Settings
from jip.errors import Invalid, Unavailable
from jip.flow.worker.process import contract_env
from jip.flow.worker.runner import (
    OPERATOR_UID,
    LogSink,
    OperatorJob,
    OperatorOutcome,
    image_name,
    relay_lines,
)

INPUT_MOUNT = "/jip/input"
OUTPUT_MOUNT = "/jip/output"
OPERATOR_CONTAINER = "operator"
STAGE_IN_CONTAINER = "stage-input"
STAGE_OUT_CONTAINER = "stage-output"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]")
_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, kw_only=True)
class PodSettings:
    """What every operator pod of a site shares."""

    namespace: str = "jip"
    registry: str = ""
    cpus: float | None = None
    memory: str | None = None
    work_dir: Path = Path("/work")
    work_pvc: str | None = None
    stage_image: str = "jip/jip:0.1.0"
    api_url: str = ""
    # The store's and the flow API's Services (flow.api); empty: api_url serves both.
    store_api_url: str = ""
    flow_api_url: str = ""
    api_token: str | None = None
    service_account: str | None = None
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    # Pods asking for GPUs: the device plugin's resource, the GPU pool's node labels and
    # the tolerations of its taints (flow.gpu).
    gpu_resource: str = "nvidia.com/gpu"
    gpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[Mapping[str, str | int], ...] = ()
    # flow.image_lock: operator images pinned by the digests it records.
    image_lock: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PodSettings:
        from jip.flow.worker.api_client import api_url_of, service_urls_of

        flow = settings.flow
        store_url, flow_url = service_urls_of(settings)
        return cls(
            namespace=flow.kubernetes_namespace,
            registry=flow.image_registry,
            cpus=flow.operator_cpus,
            memory=flow.operator_memory,
            work_dir=settings.resolved_flow_work_dir,
            work_pvc=flow.kubernetes_work_pvc,
            stage_image=flow.kubernetes_stage_image,
            api_url=api_url_of(settings),
            store_api_url=store_url,
            flow_api_url=flow_url,
            api_token=settings.api_token.get_secret_value() if settings.api_token else None,
            gpu_resource=flow.gpu.resource,
            gpu_node_selector=dict(flow.gpu.node_selector),
            gpu_tolerations=tuple(dict(t) for t in flow.gpu.tolerations),
            image_lock=flow.image_lock,
        )


@dataclass(frozen=True, kw_only=True)
class PodResources:
    """One operator's needs (its manifest), over the site's defaults in PodSettings."""

    cpus: float | None = None
    memory: str | None = None
    gpu: int = 0


def pod_name(job: OperatorJob) -> str:
    """``jip-<operator>-<digest>``: DNS-1123, at most 63 characters, unique per job."""
    key = "|".join([job.run_id, str(job.input_dir), *sorted(job.labels.values())])
    return f"jip-{job.operator[:40]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def label_value(value: str) -> str:
    """A label value (63 characters of [A-Za-z0-9_.-]); long ones keep a digest."""
    clean = _LABEL_VALUE.sub("_", value).strip("_.-")
    if len(clean) <= 63:
        return clean
    return clean[:50].rstrip("_.-") + "-" + hashlib.sha256(value.encode()).hexdigest()[:12]


def build_pod(
    job: OperatorJob,
    settings: PodSettings,
    *,
    deadline_s: int | None = None,
    image: str | None = None,
    resources: PodResources | None = None,
) -> k8s.V1Pod:
    """The pod that runs ``job``; staged through the PVC or through the store's API.

    ``deadline_s`` (activeDeadlineSeconds) ends the pod even when nobody deletes it;
    ``image`` (e.g. pinned by digest) replaces ``<registry>jip/<operator>:<version>``;
    ``resources`` with ``gpu > 0`` adds the GPU limit, node selector and tolerations.
    """
    needs = resources or PodResources()
    name = pod_name(job)
    labels = {
        "app.kubernetes.io/name": "jip-operator",
        "app.kubernetes.io/part-of": "jip",
        "app.kubernetes.io/component": "operator",
        "jip/operator": job.operator,
        "jip/operator-version": label_value(job.version),
        **{f"jip/{key}": label_value(value) for key, value in job.labels.items()},
        **settings.extra_labels,
    }
    if job.run_id:
        labels["jip/run-id"] = label_value(job.run_id)
    annotations = {f"jip/{key}": value for key, value in job.labels.items()}
    if job.run_id:
        annotations["jip/run-id"] = job.run_id
    operator = _operator_container(job, settings, needs, image)
    tmp = k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())
    if settings.work_pvc:
        volumes = [
            k8s.V1Volume(
                name="work",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=settings.work_pvc
                ),
            ),
            tmp,
        ]
        operator.volume_mounts = [
            k8s.V1VolumeMount(
                name="work",
                mount_path=INPUT_MOUNT,
                sub_path=_work_subpath(job.input_dir, settings.work_dir),
                read_only=True,
            ),
            k8s.V1VolumeMount(
                name="work",
                mount_path=OUTPUT_MOUNT,
                sub_path=_work_subpath(job.output_dir, settings.work_dir),
            ),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ]
        init_containers, containers = None, [operator]
    else:
        volumes = [
            k8s.V1Volume(name="input", empty_dir=k8s.V1EmptyDirVolumeSource()),
            k8s.V1Volume(name="output", empty_dir=k8s.V1EmptyDirVolumeSource()),
            tmp,
        ]
        operator.volume_mounts = [
            k8s.V1VolumeMount(name="input", mount_path=INPUT_MOUNT, read_only=True),
            k8s.V1VolumeMount(name="output", mount_path=OUTPUT_MOUNT),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ]
        init_containers = [_stage_in_container(job, settings), operator]
        containers = [_stage_out_container(job, settings)]
    return k8s.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k8s.V1ObjectMeta(
            name=name, namespace=settings.namespace, labels=labels, annotations=annotations
        ),
        spec=k8s.V1PodSpec(
            restart_policy="Never",
            active_deadline_seconds=deadline_s,
            automount_service_account_token=False,
            service_account_name=settings.service_account,
            enable_service_links=False,
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=OPERATOR_UID,
                run_as_group=OPERATOR_UID,
                fs_group=OPERATOR_UID,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
            init_containers=init_containers,
            containers=containers,
            volumes=volumes,
            node_selector=dict(settings.gpu_node_selector) if needs.gpu else None,
            tolerations=[_toleration(t) for t in settings.gpu_tolerations] if needs.gpu else None,
        ),
    )


def _toleration(spec: Mapping[str, str | int]) -> k8s.V1Toleration:
    """A toleration written as Kubernetes writes it (``tolerationSeconds``)."""
    names = {wire: attr for attr, wire in k8s.V1Toleration.attribute_map.items()}
    unknown = sorted(set(spec) - set(names))
    if unknown:
        raise Invalid(
            f"flow.gpu.tolerations: unknown field {', '.join(unknown)}; "
            f"use Kubernetes' names ({', '.join(sorted(names))})"
        )
    return k8s.V1Toleration(**{names[key]: value for key, value in spec.items()})


def _container_security() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
    )


def _resources(settings: PodSettings, needs: PodResources) -> k8s.V1ResourceRequirements:
    limits: dict[str, str] = {}
    cpus = needs.cpus if needs.cpus is not None else settings.cpus
    memory = needs.memory or settings.memory
    if cpus is not None:
        limits["cpu"] = f"{cpus:g}"
    if memory is not None:
        limits["memory"] = memory
    if needs.gpu:
        limits[settings.gpu_resource] = str(needs.gpu)
    # Requests equal limits: the scheduler places the pod where it really fits.
    return k8s.V1ResourceRequirements(limits=limits or None, requests=dict(limits) or None)


def _operator_container(
    job: OperatorJob, settings: PodSettings, needs: PodResources, image: str | None
) -> k8s.V1Container:
    env = contract_env(INPUT_MOUNT, OUTPUT_MOUNT, job.params)
    env |= {"HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
    return k8s.V1Container(
        name=OPERATOR_CONTAINER,
        image=image or image_name(settings.registry, job.operator, job.version),
        image_pull_policy="IfNotPresent",
        env=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
        resources=_resources(settings, needs),
        security_context=_container_security(),
    )


def _stage_env(settings: PodSettings, job: OperatorJob) -> list[k8s.V1EnvVar]:
    env = [k8s.V1EnvVar(name="JIP_API_URL", value=settings.api_url)]
    for name, url in (
        ("JIP_FLOW__API__STORE_URL", settings.store_api_url),
        ("JIP_FLOW__API__FLOW_URL", settings.flow_api_url),
    ):
        if url and url != settings.api_url:
            env.append(k8s.V1EnvVar(name=name, value=url))
    token = job.api_token or settings.api_token  # the run's own token where it has one
    if token:
        env.append(k8s.V1EnvVar(name="JIP_API_TOKEN", value=token))
    return [*env, k8s.V1EnvVar(name="HOME", value="/tmp")]


def _stage_in_container(job: OperatorJob, settings: PodSettings) -> k8s.V1Container:
    if not job.series:
        raise Invalid("a pod without the shared work volume needs the job's input series")
    return k8s.V1Container(
        name=STAGE_IN_CONTAINER,
        image=settings.stage_image,
        command=[
            "python",
            "-m",
            "jip.flow.worker.stage",
            "fetch",
            "--dest",
            INPUT_MOUNT,
            *job.series,
        ],
        env=_stage_env(settings, job),
        volume_mounts=[
            k8s.V1VolumeMount(name="input", mount_path=INPUT_MOUNT),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ],
        security_context=_container_security(),
    )


def _stage_out_container(job: OperatorJob, settings: PodSettings) -> k8s.V1Container:
    series = job.labels.get("series") or (job.series[0] if job.series else "")
    return k8s.V1Container(
        name=STAGE_OUT_CONTAINER,
        image=settings.stage_image,
        command=[
            *("python", "-m", "jip.flow.worker.stage", "push", "--source", OUTPUT_MOUNT),
            *("--run-id", job.run_id, "--series", series, "--operator", job.operator),
        ],
        env=_stage_env(settings, job),
        volume_mounts=[
            k8s.V1VolumeMount(name="output", mount_path=OUTPUT_MOUNT, read_only=True),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ],
        security_context=_container_security(),
    )


def _work_subpath(path: Path, work_dir: Path) -> str:
    try:
        return path.resolve().relative_to(work_dir.resolve()).as_posix()
    except ValueError as exc:
        raise Invalid(f"{path} is not under the shared work directory {work_dir}") from exc


class KubernetesRunner:
    """Creates the job's pod, waits for it, relays the operator's log, deletes it."""

    name = "kubernetes"

    def __init__(
        self,
        *,
        api: Any = None,
        pod: PodSettings,
        timeout_s: float = 6 * 3600.0,
        poll_s: float = 2.0,
    ) -> None:
        self._api = api
        self.pod = pod
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    @property
    def api(self) -> Any:
        if self._api is None:  # in the cluster: the worker's service account
            from kubernetes import config

            config.load_incluster_config()
            self._api = k8s.CoreV1Api()
        return self._api

    def run(self, job: OperatorJob, log: LogSink) -> OperatorOutcome:
        pod = build_pod(job, self.pod, deadline_s=int(self.timeout_s) + 60)
        name, namespace = pod_name(job), self.pod.namespace
        image = image_name(self.pod.registry, job.operator, job.version)
        started = time.monotonic()
        self._call(self.api.create_namespaced_pod, namespace=namespace, body=pod)
        log(f"jip: started pod {namespace}/{name} ({image})")
        try:
            final = self._wait(name, namespace, started + self.timeout_s)
            progress = relay_lines(self._logs(name, namespace, OPERATOR_CONTAINER), log)
            staged = not self.pod.work_pvc
            code = _exit_code(final, OPERATOR_CONTAINER, init=staged)
            if staged and code == 0:
                stage_code = _exit_code(final, STAGE_OUT_CONTAINER, init=False)
                relay_lines(self._logs(name, namespace, STAGE_OUT_CONTAINER), log)
                code = stage_code
            return OperatorOutcome(
                exit_code=code if final is not None else -1,
                duration_s=time.monotonic() - started,
                progress=progress,
                timed_out=final is None,
                delivered=staged and code == 0,
            )
        finally:
            self._delete(name, namespace)

    def _wait(self, name: str, namespace: str, deadline: float) -> Any:
        """The pod once it has finished, or None at the deadline."""
        while True:
            pod = self._call(self.api.read_namespaced_pod, name=name, namespace=namespace)
            if pod.status is not None and pod.status.phase in _FINISHED_PHASES:
                return pod
            if time.monotonic() >= deadline:
                return None
            time.sleep(self.poll_s)

    def _logs(self, name: str, namespace: str, container: str) -> list[str]:
        try:
            text = self.api.read_namespaced_pod_log(
                name=name, namespace=namespace, container=container
            )
        except Exception as exc:  # a container that never started has no log
            return [f"jip: no log of container {container}: {exc}"]
        return str(text or "").splitlines()

    def _delete(self, name: str, namespace: str) -> None:
        # Already gone, or the API is away: the pod's deadline ends it anyway.
        with contextlib.suppress(Exception):
            self.api.delete_namespaced_pod(name=name, namespace=namespace, grace_period_seconds=10)

    @staticmethod
    def _call(method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status is None:
                raise Unavailable(f"Kubernetes API call failed: {exc}") from exc
            raise Unavailable(
                f"Kubernetes API answered {status}: {getattr(exc, 'reason', exc)}"
            ) from exc


def _exit_code(pod: Any, container: str, *, init: bool) -> int:
    if pod is None:
        return -1
    statuses = pod.status.init_container_statuses if init else pod.status.container_statuses
    for status in statuses or []:
        if status.name == container and status.state and status.state.terminated:
            return int(status.state.terminated.exit_code)
    # Never ran (an earlier init container failed, or the image could not be pulled).
    return 1
