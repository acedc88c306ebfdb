"""Every shipped DAG, parsed as Airflow's DAG processor parses it, in both shapes.

With ``JIP_FLOW__RUNNER=kubernetes`` (the cluster) each operator step is an
OperatorPodOperator whose pod request (built in a dry run, no cluster) validates strictly
against the Kubernetes API schema and runs under the restricted security settings; with
the default runner each operator step is one fused task (get-input, the operator and
put-output in one task process). The operator steps of a DAG are the operators its
parameters name (``workflow_params``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient

pytest.importorskip("airflow.providers.cncf.kubernetes", reason="the workflow extra's provider")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

import jip.config  # noqa: E402
from jip.flow.airflow_home import repository_dags_folder  # noqa: E402
from jip.flow.workflows import OPERATOR_KEY  # noqa: E402

KUBERNETES_VERSIONS = ("1.30", "1.33")
SERIES = "1.2.826.0.1.3680043.8.498.1234567890"
# The DAGs with operator steps and the steps each must have (a DAG gaining or losing an
# operator shows up here).
OPERATOR_DAGS = {
    "adc-harmonisation": {"adc-map", "roi-stats"},
    "annotate-review": {"organ-seg", "radiomics"},
    "convert-nifti": {"convert-nifti"},
    "deidentify": {"deidentify"},
    "organ-seg-radiomics": {"organ-seg", "radiomics"},
    "rtstruct-to-seg": {"rtstruct-to-seg"},
    "seg-radiomics": {"radiomics"},
    "seg-to-nifti": {"seg-to-nifti"},
}
# Steps that are no operator's: listing, finding the source series, the human step.
OTHER_STEPS = {"list_series", "cleanup", "series.find-source", "series.roi-series",
               "series.annotate"}  # fmt: skip


def parse_dags(runner: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("JIP_FLOW__RUNNER", runner)
    monkeypatch.setenv("JIP_API_URL", "https://jip.local")
    monkeypatch.setenv("JIP_FLOW__API__STORE_URL", "http://jip-store:8000")
    monkeypatch.setenv("JIP_FLOW__API__FLOW_URL", "http://jip-flow:8000")
    monkeypatch.setenv("JIP_FLOW__IMAGE_REGISTRY", "reg.local/")
    jip.config.get_settings.cache_clear()
    bag = DagBag(dag_folder=str(repository_dags_folder()))
    assert not bag.import_errors, bag.import_errors
    return dict(bag.dags)


@pytest.fixture
def clean_settings() -> Iterator[None]:
    yield
    jip.config.get_settings.cache_clear()


def operator_steps(dag: Any) -> dict[str, Any]:
    """The DAG's tasks named after the operators its parameters name."""
    operators = {
        name
        for name, param in dag.params.items()
        if isinstance(getattr(param, "schema", None), dict) and OPERATOR_KEY in param.schema
    }
    return {name: dag.task_dict[f"series.{name}"] for name in operators}


def test_every_operator_dag_is_listed(
    monkeypatch: pytest.MonkeyPatch, clean_settings: None
) -> None:
    dags = parse_dags("subprocess", monkeypatch)
    with_operators = {dag_id for dag_id, dag in dags.items() if operator_steps(dag)}
    assert with_operators == set(OPERATOR_DAGS)
    for dag_id, steps in OPERATOR_DAGS.items():
        assert set(operator_steps(dags[dag_id])) == steps, dag_id


def test_on_the_cluster_every_operator_step_is_a_restricted_pod(
    monkeypatch: pytest.MonkeyPatch, clean_settings: None
) -> None:
    from jip.flow.worker.pod_operator import OperatorPodOperator

    dags = parse_dags("kubernetes", monkeypatch)
    for dag_id in OPERATOR_DAGS:
        for name, task in operator_steps(dags[dag_id]).items():
            where = f"{dag_id}: {name}"
            assert isinstance(task, OperatorPodOperator), where
            task.series_uid = SERIES  # what the mapped instance renders
            request = task.build_pod_request_obj(dry_run=True)
            pod: dict[str, Any] = ApiClient().sanitize_for_serialization(request)
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(pod, version, strict=True)
            check_restricted(pod, where)
            containers = [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]
            assert [c["name"] for c in containers] == ["stage-input", "operator", "stage-output"]
            assert containers[1]["image"] == f"reg.local/jip/{name}:0.1.0", where
            for stage in (containers[0], containers[2]):
                env = {e["name"]: e.get("value") for e in stage["env"]}
                assert env["JIP_FLOW__API__STORE_URL"] == "http://jip-store:8000", where
                assert env["JIP_FLOW__API__FLOW_URL"] == "http://jip-flow:8000", where
                assert not stage.get("envFrom"), where  # no result-store credentials
        assert not fused_steps(dags[dag_id]), dag_id


def check_restricted(pod: dict[str, Any], where: str) -> None:
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False, where
    assert spec["securityContext"]["runAsNonRoot"] is True, where
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] > 0, where
    for container in [*spec["initContainers"], *spec["containers"]]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"] == {"drop": ["ALL"]}, where


def fused_steps(dag: Any) -> set[str]:
    from jip.flow.worker.tasks import process_series

    return {
        task_id
        for task_id, task in dag.task_dict.items()
        if getattr(task, "python_callable", None) is process_series.function
    }


def test_elsewhere_every_operator_step_is_one_fused_task(
    monkeypatch: pytest.MonkeyPatch, clean_settings: None
) -> None:
    dags = parse_dags("subprocess", monkeypatch)
    for dag_id, steps in OPERATOR_DAGS.items():
        dag = dags[dag_id]
        fused = {f"series.{name}" for name in steps}
        assert fused_steps(dag) == fused, dag_id
        for name, task in operator_steps(dag).items():
            assert task.op_kwargs["operator"] == name, dag_id
        # Nothing but the fused steps and the steps that are no operator's.
        assert set(dag.task_dict) - fused <= OTHER_STEPS, (dag_id, sorted(dag.task_dict))


def test_parsing_off_the_cluster_does_not_import_the_pod_factory() -> None:
    """Airflow parses every DAG file every few seconds: off the cluster the pod factory,
    Kubernetes' client and the provider's pod operator stay unimported."""
    import os
    import subprocess
    import sys

    dag_file = repository_dags_folder() / "organ_seg_radiomics.py"
    probe = (
        f"import runpy, sys; runpy.run_path({str(dag_file)!r}); "
        "loaded = [m for m in ('jip.flow.worker.pod_operator', 'kubernetes.client', "
        "'airflow.providers.cncf.kubernetes.operators.pod') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    env = {**os.environ, "JIP_FLOW__RUNNER": "subprocess"}
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=300)
