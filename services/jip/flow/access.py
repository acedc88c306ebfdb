"""Who may do what to a workflow run.

Reading (runs, logs, results) needs a project of every series of the run: outside them
the run does not exist for the caller (:class:`jip.flow.service.FlowService` checks
that). Changing things needs more:

- starting a run: the researcher role in a project of each of its series; the run's
  projects are those projects (all the series' projects for site admins and rules);
- cancelling it, marking its human step done, uploading a corrected SEG: a person with
  the researcher role in every project of the run;
- recording its results: the run's own token only (its tasks), never a person's;
- a run's token acts for its own run only, and never starts, cancels or reviews runs.

``caller`` None is JIP itself (the rule evaluator); :data:`jip.base.ANONYMOUS_ADMIN`
(authentication off) may do everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jip.base import ANONYMOUS_ADMIN, CurrentUser, ProjectRole
from jip.errors import Forbidden, NotFound

WRITE_ROLE = ProjectRole.RESEARCHER


def run_projects(
    caller: CurrentUser | None, series: Sequence[str], projects: Mapping[str, set[str]]
) -> list[str]:
    """The projects a run on ``series`` works for; Forbidden unless ``caller`` may start it.

    ``projects`` maps each series to its projects.
    """
    if caller is not None and caller.run_id is not None:
        raise Forbidden("a workflow run's token cannot start runs; a person or a rule must")
    if caller is None or caller.is_admin:
        return sorted(set().union(*(projects[uid] for uid in series)))
    writable = {p for p, role in caller.projects.items() if role.at_least(WRITE_ROLE)}
    lacking = [uid for uid in series if not projects[uid] & writable]
    if lacking:
        raise Forbidden(
            f"starting a workflow needs the {WRITE_ROLE.value} role in a project of each "
            f"series; you have it for none of the projects of {', '.join(lacking[:5])}"
        )
    return sorted(set().union(*(projects[uid] & writable for uid in series)))


def require_run_writer(caller: CurrentUser | None, run_id: str, projects: Sequence[str]) -> None:
    """Forbidden unless ``caller`` is a person with the researcher role in every one of
    the run's ``projects`` (cancel, review, corrected SEG)."""
    if caller is None or caller.is_admin:
        return
    if caller.run_id is not None:
        raise Forbidden("a workflow run's token cannot cancel or review runs; a person must")
    lacking = [p for p in projects if not caller.has_role(p, WRITE_ROLE)]
    if lacking or not projects:
        raise Forbidden(
            f"changing run {run_id!r} needs the {WRITE_ROLE.value} role in each of its "
            f"projects ({', '.join(projects) or 'none'}); you lack it in "
            f"{', '.join(lacking) or 'them'}"
        )


def require_run_token(caller: CurrentUser | None, run_id: str) -> None:
    """Forbidden unless ``caller`` is the run itself (its token), JIP, or anyone where
    authentication is off."""
    if caller is None or caller is ANONYMOUS_ADMIN or caller.run_id == run_id:
        return
    raise Forbidden(
        f"results of run {run_id!r} are recorded only by the run's own tasks, with the "
        "token the site issued to the run"
    )


def check_own_run(caller: CurrentUser | None, run_id: str) -> None:
    """A run's token sees its own run only."""
    if caller is not None and caller.run_id is not None and caller.run_id != run_id:
        raise NotFound(f"workflow run {run_id!r} not found")
