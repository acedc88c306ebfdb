"""Operators that need more than a decorated function: the human step.

:class:`AwaitReviewOperator` is the ``annotate`` task of a workflow with a human in the
loop. It defers to :class:`~jip.flow.worker.triggers.ReviewTrigger` (state "deferred",
which JIP reports as waiting) until a person marks the series done or uploads a corrected
SEG through the flow API, then returns the SEG the next steps use, in put-output's
shape: ``{"series": ..., "dicom": [SEG series UID]}``.

Why not Airflow's HITL operators: a corrected SEG is DICOM that belongs in the store and
in the run's results, which JIP records anyway; one place (the flow tables) then says
whether a series was reviewed, whichever way the person answered, and the same API works
with an external Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from jip.errors import Unavailable
from jip.flow.worker.tasks import (
    SERIES_LABEL,
    run_id_of,
    run_token_conn,
    task_client,
    task_settings,
)
from jip.flow.worker.triggers import ReviewTrigger


class AwaitReviewOperator(BaseOperator):
    """Wait until the series' review is done; return the SEG to go on with."""

    template_fields: Sequence[str] = ("series_uid", "proposed")

    def __init__(
        self,
        *,
        series_uid: Any,
        proposed: Any = None,
        poll_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("map_index_template", SERIES_LABEL)
        super().__init__(**kwargs)
        self.series_uid = series_uid
        self.proposed = proposed
        # None: the site's ``flow.review_poll_s``, read when the task runs.
        self.poll_s = poll_s

    def execute(self, context: Any) -> dict[str, Any]:
        context["jip_series"] = self.series_uid
        run_id = run_id_of(context)
        with task_client(context) as client:
            review = client.review(run_id, self.series_uid)
            if review.get("done"):
                return self._chosen(review)
            self.log.info("waiting for the review of series %s", self.series_uid)
            self.defer(
                trigger=ReviewTrigger(
                    api_url=client.base_url,
                    run_id=run_id,
                    series_uid=self.series_uid,
                    token_conn_id=run_token_conn(context),
                    poll_s=review_poll_s(self.poll_s),
                ),
                method_name="resume",
            )
        raise AssertionError("defer() does not return")  # pragma: no cover

    def resume(self, context: Any, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        context["jip_series"] = self.series_uid
        if not event or event.get("status") != "done":
            message = (event or {}).get("message", "no event")
            raise Unavailable(
                f"waiting for the review of series {self.series_uid} failed: {message}"
            )
        return self._chosen(event["review"])

    def _chosen(self, review: Mapping[str, Any]) -> dict[str, Any]:
        corrected = review.get("seg_series_instance_uid")
        proposed = (
            list((self.proposed or {}).get("dicom") or [])
            if isinstance(self.proposed, Mapping)
            else []
        )
        dicom = [corrected] if corrected else proposed
        self.log.info(
            "review of series %s done by %s; going on with %s",
            self.series_uid,
            review.get("done_by"),
            "the corrected SEG" if corrected else "the proposed SEG",
        )
        return {"series": self.series_uid, "dicom": dicom}


def review_poll_s(poll_s: float | None) -> float:
    """How often the trigger asks whether a review is done: ``poll_s``, else the site's
    ``flow.review_poll_s``."""
    return poll_s if poll_s is not None else task_settings().flow.review_poll_s
