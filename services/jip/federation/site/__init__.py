"""The site agent of FEDERATION: enrolment, policy, approval, the job book and the runs.

- ``files``: the site's keys and certificates on disk, and :func:`join` (`jip fed join`);
- ``transport``: :class:`HubClient` (HTTPS out, mutual TLS, the hub's CA pinned) and
  :class:`Backoff`;
- ``policy``: :class:`SitePolicy` and :class:`Policies` (``fed_policy``, trusted keys);
- ``jobs``: :class:`JobBook` (``fed_jobs``: persisted before acknowledged) and the
  differencing guard's ledger (``fed_released_cohorts``);
- ``runner``: the in-process ``fed-stats`` workflow on META's fields;
- ``agent``: :class:`SiteAgent` (the loop; a `jip up` component) and the approver's
  :func:`approve` / :func:`reject`;
- ``schema``: the ``fed_*`` tables.
"""

from jip.federation.site.agent import SiteAgent, approve, reject
from jip.federation.site.files import SiteFiles, join
from jip.federation.site.jobs import JobBook, JobRecord, SqlCohortLedger, queue_view
from jip.federation.site.policy import Approval, Policies, SitePolicy
from jip.federation.site.runner import Outcome, run_fed_stats
from jip.federation.site.transport import Backoff, HubClient

__all__ = [
    "Approval",
    "Backoff",
    "HubClient",
    "JobBook",
    "JobRecord",
    "Outcome",
    "Policies",
    "SiteAgent",
    "SiteFiles",
    "SitePolicy",
    "SqlCohortLedger",
    "approve",
    "join",
    "queue_view",
    "reject",
    "run_fed_stats",
]
