"""The site agent: takes jobs from the hub, decides under the site's policy, runs them,
and sends back only sealed, checked aggregates; every step in the site's audit log.

One cycle (:meth:`SiteAgent.cycle`): long-poll the hub, persist each delivered round (a
later round opened from its entry sealed to this site's box key; one that does not open
is kept refused, the reason in the audit log), then acknowledge it (persist first: a crash in between makes the hub send it again, and
the book takes it once); then settle every round that is not settled: intake (the
policy's refusals, then manual or automatic approval), run, store the sealed result,
post it, and tell the hub each new state. A restart resumes from the book: a stored
result is posted again as the same bytes, never recomputed. :meth:`start` /
:meth:`stop` run cycles in a thread (a `jip up` component), reconnecting with back-off.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from jip.base import AuditLog
from jip.errors import Conflict, Forbidden, Invalid, JipError
from jip.federation.disclosure import DifferencingGuard
from jip.federation.protocol import (
    DeclaredOutput,
    JobSpec,
    RoundRequest,
    SiteJobState,
    SiteJobStatus,
    open_round,
    seal_result,
)
from jip.federation.site.files import SiteFiles
from jip.federation.site.images import ImageSource
from jip.federation.site.jobs import (
    JobBook,
    JobRecord,
    SqlCohortLedger,
    released_cohort,
    round_document,
)
from jip.federation.site.policy import Approval, Policies
from jip.federation.site.runner import run_fed_stats
from jip.federation.site.transport import Backoff, HubClient
from jip.federation.site.vocabulary import Vocabulary
from jip.meta import MetaIndex

log = logging.getLogger(__name__)
AGENT = "fed-agent"
MAX_REASON = 2000


class SiteAgent:
    """The federation agent of one site (see the module docstring)."""

    name = "federation"

    def __init__(
        self,
        engine: Engine,
        index: MetaIndex,
        files: SiteFiles,
        *,
        hub: HubClient | None = None,
        wait_s: float = 25.0,
        backoff: Backoff | None = None,
        images: ImageSource | None = None,
    ) -> None:
        self.engine, self.index, self.files = engine, index, files
        self.book, self.policies, self.audit = JobBook(engine), Policies(engine), AuditLog(engine)
        self._hub, self.wait_s = hub, wait_s
        self.backoff = backoff or Backoff()
        self.images = images  # voxel values for `parameters.source = "roi"` jobs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    @property
    def hub(self) -> HubClient:
        if self._hub is None:
            self._hub = HubClient(self.files)
        return self._hub

    @property
    def site_id(self) -> str:
        return self.hub.site_id

    # -- the loop ------------------------------------------------------------------------
    def cycle(self, wait_s: float | None = None) -> int:
        """One poll and everything it makes due; returns how many rounds were new."""
        self.settle()  # what a restart left owing the hub goes out first
        jobs, rounds = self.hub.poll(self.wait_s if wait_s is None else wait_s)
        new = 0
        for job in jobs:
            new += self._take(job.id, 1, job.model_dump(mode="json"), job.project)
        for request in rounds:
            new += self._take_round(request)
        self.settle()
        return new

    def _take(
        self, job_id: str, round: int, spec: dict[str, Any], project: str, unopened: str = ""
    ) -> int:
        added = self.book.add(job_id, round, spec)
        if added:
            detail = {"round": round, "project": project}
            self._audit("fed.job.received", job_id, detail)
            if unopened:
                record = self.book.get(job_id, round)
                self._refuse(record, unopened, rule="sealed round")
        self.hub.ack(job_id, round)  # only once it is persisted
        return int(added)

    def _take_round(self, request: RoundRequest) -> int:
        """Open this site's entry of a sealed round and keep the opened outputs (an
        entry that does not open is kept as a refused round, and the hub is told why)."""
        outputs: tuple[DeclaredOutput, ...] | None = None
        unopened = ""
        try:
            outputs = open_round(request, self.site_id, self.files.box_private())
        except (Forbidden, Invalid) as exc:
            unopened = str(exc)
        document = round_document(request.job_id, request.round, outputs)
        return self._take(request.job_id, request.round, document, "", unopened)

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.cycle()
                self.backoff.reset()
                self.last_error = None
            except JipError as exc:
                self.last_error = str(exc)
                delay = self.backoff.next_delay()
                log.warning(
                    "federation hub unreachable", extra={"error": str(exc), "retry_s": delay}
                )
                self._stop.wait(delay)
            except Exception as exc:  # the agent must outlive one bad cycle
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("federation agent cycle failed")
                self._stop.wait(self.backoff.next_delay())

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="fed-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.wait_s + 20)
        if self._hub is not None:
            self._hub.close()

    def not_ready(self) -> str | None:
        return self.last_error

    def describe(self) -> dict[str, object]:
        return {"hub": self.files.hub().get("hub_url"), "last_error": self.last_error}

    # -- settling rounds -----------------------------------------------------------------
    def settle(self) -> None:
        for record in self.book.all():
            record = self._advance(record)
            if record.result is not None and not record.result_posted:
                try:
                    self.hub.result(record.result)
                except Conflict as exc:
                    self._audit("fed.result.conflict", record.job_id, {"reason": str(exc)})
                self.book.mark_posted(record.job_id, record.round)
            if record.state.value != record.reported_state:
                self.hub.state(
                    SiteJobStatus(
                        job_id=record.job_id,
                        site_id=self.site_id,
                        state=record.state,
                        reason=(record.reason or None) and record.reason[:MAX_REASON],
                        updated_at=datetime.now(UTC),
                    )
                )
                self.book.mark_reported(record.job_id, record.round, record.state)

    def _advance(self, record: JobRecord) -> JobRecord:
        if record.state.final:
            return record
        job = self._job_of(record)
        if job is None:
            return self._refuse(record, "round 1 of this job was not released at this site")
        if job.deadline <= datetime.now(UTC):
            self._audit("fed.job.missed_deadline", record.job_id, {"round": record.round})
            return self.book.decide(record.job_id, record.round, SiteJobState.MISSED_DEADLINE)
        policy = self.policies.get()
        if record.round == 1:
            refusal = policy.job_refusal(job, self.policies.trusted())
        else:
            refusal = policy.outputs_refusal(record.round_outputs)
        if refusal is not None:
            return self._refuse(record, refusal)
        if record.state is SiteJobState.QUEUED and record.round == 1:
            if policy.approval is not Approval.AUTOMATIC:
                return record  # waits for `jip fed approve`
            self._audit("fed.job.approved", record.job_id, {"by": "policy (automatic)"})
        return self._run(record, job)

    def _job_of(self, record: JobRecord) -> JobSpec | None:
        if record.round == 1:
            return record.job
        first = self.book.all()
        for other in first:
            if other.job_id == record.job_id and other.round == 1:
                return other.job if other.state is SiteJobState.DONE else None
        return None

    def _refuse(self, record: JobRecord, reason: str, rule: str = "policy") -> JobRecord:
        self._audit(
            "fed.job.refused",
            record.job_id,
            {"round": record.round, "rule": rule, "reason": reason},
        )
        return self.book.decide(
            record.job_id, record.round, SiteJobState.REFUSED, reason[:MAX_REASON]
        )

    def _run(self, record: JobRecord, job: JobSpec) -> JobRecord:
        outputs = job.outputs if record.round == 1 else record.round_outputs
        policy = self.policies.get()
        secret = self.files.ledger_secret()
        guard = DifferencingGuard(SqlCohortLedger(self.engine), policy.disclosure(), secret)
        try:
            job = self._in_local_terms(job)
            outcome = run_fed_stats(
                job, outputs, self.index, policy.disclosure(), guard, images=self.images
            )
        except JipError as exc:
            self._audit(
                "fed.job.failed", record.job_id, {"round": record.round, "reason": str(exc)}
            )
            return self.book.decide(
                record.job_id, record.round, SiteJobState.FAILED, str(exc)[:MAX_REASON]
            )
        if outcome.released is None:
            reason = outcome.refusal or "refused"
            self._audit(
                "fed.output.refused",
                record.job_id,
                {
                    "round": record.round,
                    "series": len(outcome.series),
                    "refusals": outcome.refusals,
                },
            )
            return self._refuse(record, reason, rule="disclosure")
        result = seal_result(
            job.id, self.site_id, record.round, outcome.released, job.researcher_key
        )
        cohort = released_cohort(job.id, outcome.series, secret)
        self.book.store_result(record.job_id, record.round, result, cohort)
        self._audit(
            "fed.result.released",
            record.job_id,
            {
                "round": record.round,
                "outputs": sorted(outcome.released),
                "series": len(outcome.series),
                "size": result.size,
                "sha256": result.sha256,
            },
        )
        return self.book.get(record.job_id, record.round)

    def _in_local_terms(self, job: JobSpec) -> JobSpec:
        """The job with its cohort query in this site's values: the network's terms go
        through the site's vocabulary (`jip fed mapping`); unmapped terms stay as sent."""
        query = Vocabulary(self.engine).translate(dict(job.cohort.query))
        if query == job.cohort.query:
            return job
        return job.model_copy(update={"cohort": job.cohort.model_copy(update={"query": query})})

    def _audit(self, action: str, job_id: str, detail: dict[str, Any]) -> None:
        self.audit.record(action, username=AGENT, target=f"job:{job_id}", detail=detail)


# -- what a site admin does --------------------------------------------------------------
def approve(engine: Engine, job_id: str, by: str) -> JobRecord:
    """A person approves a queued job (it runs on the agent's next cycle)."""
    record = JobBook(engine).decide(
        job_id, 1, SiteJobState.APPROVED, by=by, expect=SiteJobState.QUEUED
    )
    AuditLog(engine).record("fed.job.approved", username=by, target=f"job:{job_id}")
    return record


def reject(engine: Engine, job_id: str, by: str, reason: str) -> JobRecord:
    """A person refuses a queued job; the hub is told why."""
    text = f"refused by the site's approver: {reason}"[:MAX_REASON]
    record = JobBook(engine).decide(
        job_id, 1, SiteJobState.REFUSED, text, by=by, expect=SiteJobState.QUEUED
    )
    AuditLog(engine).record(
        "fed.job.refused",
        username=by,
        target=f"job:{job_id}",
        detail={"reason": text, "rule": "approver"},
    )
    return record
