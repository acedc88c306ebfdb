"""The researcher's "Federated studies" pages: the jobs sent from the site's researcher
home, and each job's report (per-site and pooled tables, per-site plots, Levene's tests).

The home (keys, hub token, the record of submitted jobs) is the directory the setting
``federation.researcher_home`` names, opened with ``jip.federation.requester``; a report
opens the sites' sealed results with its key, so the pages are for the site's admins and
the people who do research here (a researcher or owner of some project), not viewers.
Without the setting, or without the requester library, the page says what is missing.
Reports are rendered by :mod:`.federation_report` from the library's dict alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from jip import errors
from jip.base import CurrentUser, ProjectRole
from jip.ui.federation_report import report_html
from jip.ui.routes import PageRoute, UserDep, render

STUDIES = "/ui/federation"
SETTING = "federation.researcher_home"

router = APIRouter(tags=["ui"], route_class=PageRoute, include_in_schema=False)


def researcher_user(request: Request, user: UserDep) -> CurrentUser:
    """The session's user, if an admin or a researcher (or owner) of some project."""
    request.state.ui_user = user
    roles = user.projects.values()
    if not user.is_admin and not any(role.at_least(ProjectRole.RESEARCHER) for role in roles):
        raise errors.Forbidden("federated studies are for researchers: ask an owner for the role")
    return user


ResearcherDep = Annotated[CurrentUser, Depends(researcher_user)]


def requester() -> Any:
    """``jip.federation.requester``, or None where this build has no researcher library."""
    try:
        from jip.federation import requester as library
    except ImportError:
        return None
    found: Any = library
    return found


def researcher_home(request: Request) -> Path | None:
    """The setting ``federation.researcher_home``, read so that a site whose settings have
    no such field (or no federation block) simply has no home."""
    federation = getattr(request.app.state.runtime.settings, "federation", None)
    value = getattr(federation, "researcher_home", None)
    return Path(value) if value else None


def missing(request: Request) -> str:
    """Why this site cannot show studies (empty when it can)."""
    if requester() is None:
        return "this site's JIP has no researcher library (jip.federation.requester)"
    path = researcher_home(request)
    if path is None:
        return (
            f"no researcher home is set: set {SETTING} (JIP_FEDERATION__RESEARCHER_HOME) "
            "to the directory `jip fed researcher init --home DIR` made"
        )
    if not path.is_dir():
        return f"{SETTING} is {path}, which is no directory: run `jip fed researcher init --home {path}`"
    return ""


@router.get(STUDIES)
def studies_page(request: Request, user: ResearcherDep) -> Response:
    problem = missing(request)
    jobs: list[dict[str, Any]] = []
    if not problem:
        home = requester().ResearcherHome.open(researcher_home(request))
        jobs = list(reversed(home.list_jobs()))  # newest first
    return render(request, "federation_studies.html", jobs=jobs, problem=problem)


@router.get(STUDIES + "/{job_id}")
def study_page(request: Request, user: ResearcherDep, job_id: str) -> Response:
    """One job's report, fetched from the hub and opened with the home's key now."""
    problem = missing(request)
    if problem:
        raise errors.Unavailable(problem)
    library = requester()
    home = library.ResearcherHome.open(researcher_home(request))
    report = library.job_report(home, job_id)
    return render(request, "federation_study.html", report=report, body=report_html(report))
