"""The site agent of FEDERATION: enrolment, policy, approval, the job book and the runs.

- ``files``: the site's keys and certificates on disk, and :func:`join` (`jip fed join`);
  ``identity``: the site id and identity key, of a joined site or one set up for
  bundles only (:func:`init_offline`);
- ``transport``: :class:`HubClient` (HTTPS out, mutual TLS, the hub's CA pinned) and
  :class:`Backoff`;
- ``policy``: :class:`SitePolicy` and :class:`Policies` (``fed_policy``, trusted keys);
- ``jobs``: :class:`JobBook` (``fed_jobs``: persisted before acknowledged) and the
  differencing guard's ledger (``fed_released_cohorts``);
- ``runner``: the in-process ``fed-stats`` workflow, on META's fields or on voxel values
  inside SEG segments (``images``: :class:`StoredImages`, the site's store read for it);
- ``agent``: :class:`SiteAgent` (the loop) and the approver's :func:`approve` /
  :func:`reject`; ``component``: :class:`AgentComponent`, the agent in `jip up`;
- ``carried`` and ``bundles``: jobs and results carried by hand as signed JSON files
  (`jip fed import-job`, `jip fed export-result`), under the same policy and audit, and
  the researcher's :func:`make_job_bundle` / :func:`read_result_bundle`;
- ``vocabulary``: :class:`Vocabulary`, local values mapped to the network's terms, and
  cohort queries rewritten with them; ``suggest``: proposed mappings;
- ``schema``: the ``fed_*`` tables.
"""

from jip.federation.site.agent import SiteAgent, approve, reject
from jip.federation.site.bundles import (
    export_result,
    import_job,
    make_job_bundle,
    read_result_bundle,
    settle_carried,
)
from jip.federation.site.carried import CarriedJobs, HubJobs, carried
from jip.federation.site.component import AgentComponent, hub_agent
from jip.federation.site.files import SiteFiles, join
from jip.federation.site.identity import SiteIdentity, init_offline, site_identity
from jip.federation.site.images import ImageSource, StoredImages
from jip.federation.site.jobs import JobBook, JobRecord, SqlCohortLedger, queue_view
from jip.federation.site.policy import Approval, Policies, SitePolicy
from jip.federation.site.runner import Outcome, run_fed_stats
from jip.federation.site.suggest import Suggestion, suggest
from jip.federation.site.transport import Backoff, HubClient
from jip.federation.site.vocabulary import TermMapping, Vocabulary

__all__ = [
    "AgentComponent",
    "Approval",
    "Backoff",
    "CarriedJobs",
    "HubClient",
    "HubJobs",
    "ImageSource",
    "JobBook",
    "JobRecord",
    "Outcome",
    "Policies",
    "SiteAgent",
    "SiteFiles",
    "SiteIdentity",
    "SitePolicy",
    "SqlCohortLedger",
    "StoredImages",
    "Suggestion",
    "TermMapping",
    "Vocabulary",
    "approve",
    "carried",
    "export_result",
    "hub_agent",
    "import_job",
    "init_offline",
    "join",
    "make_job_bundle",
    "queue_view",
    "read_result_bundle",
    "reject",
    "run_fed_stats",
    "settle_carried",
    "site_identity",
    "suggest",
]
