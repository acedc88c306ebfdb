"""send: send each series of the run to a peer (C-STORE or STOW-RS, as the peer is configured).

Per series, one task that asks the site to send it (``POST /api/dicom/send``) with the
run's own token: the peer's address and credentials stay in the platform, no operator
container ever reaches the network, and the site checks that the run may read the series
and that who started it may send. A peer that is down is retried with growing waits; a
refusal (no right to send, unknown peer or series) fails the series at once.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from airflow.sdk import Param, dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException

from jip.flow.worker.tasks import SERIES_LABEL, fan_out, task_client, workflow_params

SEND = "send"  # the parameter object: {"peer": name}


@task(
    map_index_template=SERIES_LABEL,
    retries=4,
    retry_delay=timedelta(seconds=30),
    retry_exponential_backoff=True,
    max_retry_delay=timedelta(minutes=30),
)
def send_series(series_uid: str) -> dict[str, object]:
    """Ask the site to send one series; retried only while the peer cannot be reached."""
    context = get_current_context()
    context["jip_series"] = series_uid  # type: ignore[typeddict-unknown-key]
    peer = str((context["params"].get(SEND) or {}).get("peer") or "")
    if not peer:
        raise AirflowFailException("the parameter send.peer names no peer: start the run with one")
    with task_client(context) as client:
        headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
        try:
            response = httpx.post(
                f"{client.base_url}/api/dicom/send",
                json={"peer": peer, "series": [series_uid]},
                headers=headers,
                timeout=client.timeout_s * 10,
            )
        except httpx.TransportError as exc:
            raise RuntimeError(f"JIP at {client.base_url} is not reachable ({exc})") from exc
    if response.status_code in (502, 503, 504):  # the peer or the site is away: retry
        raise RuntimeError(f"send to {peer} failed for now: {response.text[:500]}")
    if response.status_code >= 400:
        raise AirflowFailException(f"send to {peer} refused: {response.text[:500]}")
    report: dict[str, object] = response.json()
    if report.get("failed"):
        raise RuntimeError(f"{report['failed']} instance(s) not sent to {peer}: {report}")
    return report


@dag(
    dag_id="send",
    description="Send series to a DICOM peer (C-STORE) or a DICOMweb peer (STOW-RS).",
    schedule=None,
    catchup=False,
    tags=["jip", "send"],
    params={
        **workflow_params(),
        SEND: Param(
            {"peer": ""},
            type="object",
            properties={
                "peer": {
                    "type": "string",
                    "title": "Peer",
                    "maxLength": 64,
                    "pattern": r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$",
                    "description": "The peer's name (`jip forward send --help` says where)",
                }
            },
            additionalProperties=False,
            description="Where the series go: a DICOM peer (C-STORE) or a DICOMweb one (STOW-RS).",
        ),
    },
)
def send() -> None:
    @task_group(group_id="series")
    def per_series(series_uid: str) -> None:
        send_series(series_uid)

    fan_out(per_series)


send()
