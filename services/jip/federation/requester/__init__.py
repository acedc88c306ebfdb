"""The researcher's side of FEDERATION: submit a job, follow it, open and pool results.

Sites seal their results to the researcher's key and the hub relays what it cannot
read, so only this side can open them. Its parts:

- ``home``: :class:`ResearcherHome`, the folder with the researcher's keys, the hub's
  URL, token and pinned CA, and the record of jobs sent (offline ``list_jobs``);
- ``client``: :class:`HubSession`, the hub's researcher API (submit, status, results,
  later rounds, waiting);
- ``submission``: jobs from what a researcher types (compact output specs, Levene
  comparisons, deadlines) and :func:`submit_job`;
- ``pooling``: open every site's result and combine it exactly (``stats.combine_*``);
- ``rounds``: the Levene / Brown–Forsythe rounds after round 1 (:func:`follow`);
- ``report``: :func:`job_report`, the one JSON document the CLI and the UI show.

What it may import: FEDERATION's own modules and the core. The CLI
(``jip fed researcher|workflow|job``, in ``jip.cli.fed_job``) is its only caller here.
"""

from jip.federation.requester.client import HubSession, state_lines
from jip.federation.requester.home import (
    ResearcherHome,
    default_home,
    read_key_file,
    write_key_file,
)
from jip.federation.requester.pooling import open_all, pool_output
from jip.federation.requester.report import job_report
from jip.federation.requester.rounds import Comparison, Follow, LeveneDriver, follow
from jip.federation.requester.submission import (
    Request,
    build_job,
    parse_deadline,
    parse_levene,
    parse_output,
    read_cohort,
    read_spec_file,
    submit_job,
)

__all__ = [
    "Comparison",
    "Follow",
    "HubSession",
    "LeveneDriver",
    "Request",
    "ResearcherHome",
    "build_job",
    "default_home",
    "follow",
    "job_report",
    "open_all",
    "parse_deadline",
    "parse_levene",
    "parse_output",
    "pool_output",
    "read_cohort",
    "read_key_file",
    "read_spec_file",
    "state_lines",
    "submit_job",
    "write_key_file",
]
