"""``/api/projects``: which series belong to which project, and the assignment rules.

Assigning a series by hand needs the owner role in the project (or a site admin) and a
series the caller can already see: an owner cannot pull another project's series into
their own. Rules are site-wide and for site admins only. Registered before BASE's
``/api/projects/{name}`` routes, so ``/api/projects/rules`` is not read as a project.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from jip.api_types import RowIdPath
from jip.base import (
    AdminDep,
    CurrentUserDep,
    ProjectRole,
    ProjectsDep,
    project_scope,
    require_project_role,
)
from jip.errors import NotFound
from jip.store.catalog.projects import RULE_FIELDS, RuleInfo, SeriesProjects
from jip.store.deps import get_catalog
from jip.store.dicom_file import check_uid

router = APIRouter(prefix="/api/projects", tags=["projects"])


def get_series_projects(request: Request) -> SeriesProjects:
    return SeriesProjects(get_catalog(request).engine)


SeriesProjectsDep = Annotated[SeriesProjects, Depends(get_series_projects)]


class RuleIn(BaseModel):
    project: str
    calling_ae_title: str = Field(default="", max_length=16)
    field: str = Field(default="", description=f"one of {', '.join(sorted(RULE_FIELDS))}")
    pattern: str = Field(default="", max_length=128, description="* and ? wildcards")
    enabled: bool = True


class RulePatch(BaseModel):
    project: str | None = None
    calling_ae_title: str | None = Field(default=None, max_length=16)
    field: str | None = None
    pattern: str | None = Field(default=None, max_length=128)
    enabled: bool | None = None


class RuleOut(BaseModel):
    id: int
    project: str
    calling_ae_title: str
    field: str
    pattern: str
    enabled: bool

    @classmethod
    def of(cls, rule: RuleInfo) -> RuleOut:
        return cls(
            id=rule.pk,
            project=rule.project,
            calling_ae_title=rule.calling_ae_title,
            field=rule.field,
            pattern=rule.pattern,
            enabled=rule.enabled,
        )


class SeriesProjectsOut(BaseModel):
    series_instance_uid: str
    projects: list[str]  # those the caller may see


# -- rules (site admins) ---------------------------------------------------------------
@router.get("/rules")
def list_rules(_admin: AdminDep, data: SeriesProjectsDep) -> list[RuleOut]:
    """Assignment rules, applied in order to each newly catalogued series."""
    return [RuleOut.of(rule) for rule in data.rules()]


@router.post("/rules", status_code=201)
def add_rule(
    body: RuleIn, _admin: AdminDep, data: SeriesProjectsDep, projects: ProjectsDep
) -> RuleOut:
    projects.get(body.project)  # 404 for an unknown project
    return RuleOut.of(
        data.add_rule(
            body.project,
            calling_ae_title=body.calling_ae_title,
            field=body.field,
            pattern=body.pattern,
            enabled=body.enabled,
        )
    )


@router.get("/rules/{rule_id}")
def get_rule(rule_id: RowIdPath, _admin: AdminDep, data: SeriesProjectsDep) -> RuleOut:
    return RuleOut.of(data.rule(rule_id))


@router.patch("/rules/{rule_id}")
def update_rule(
    rule_id: RowIdPath,
    body: RulePatch,
    _admin: AdminDep,
    data: SeriesProjectsDep,
    projects: ProjectsDep,
) -> RuleOut:
    if body.project is not None:
        projects.get(body.project)
    return RuleOut.of(data.update_rule(rule_id, **body.model_dump(exclude_none=True)))


@router.delete("/rules/{rule_id}", status_code=204)
def remove_rule(rule_id: RowIdPath, _admin: AdminDep, data: SeriesProjectsDep) -> Response:
    data.remove_rule(rule_id)
    return Response(status_code=204)


# -- series of a project (its owners, site admins) -------------------------------------
def _visible_projects(data: SeriesProjects, series_uid: str, user: CurrentUserDep) -> list[str]:
    projects = data.projects_of([series_uid])[series_uid]
    scope = project_scope(user)
    return sorted(projects if scope is None else projects & scope)


@router.put("/{name}/series/{series_uid}")
def assign_series(
    name: str,
    series_uid: str,
    user: CurrentUserDep,
    data: SeriesProjectsDep,
    projects: ProjectsDep,
) -> SeriesProjectsOut:
    """Add a series the caller can see to project ``name`` (idempotent)."""
    require_project_role(user, name, ProjectRole.OWNER)
    projects.get(name)
    uid = check_uid(series_uid, "SeriesInstanceUID")
    if not user.is_admin and not _visible_projects(data, uid, user):
        raise NotFound(f"series {uid} not found")
    data.assign(uid, name)
    return SeriesProjectsOut(series_instance_uid=uid, projects=_visible_projects(data, uid, user))


@router.delete("/{name}/series/{series_uid}", status_code=204)
def unassign_series(
    name: str, series_uid: str, user: CurrentUserDep, data: SeriesProjectsDep
) -> Response:
    """Take a series out of project ``name``; its data stays (in its other projects)."""
    require_project_role(user, name, ProjectRole.OWNER)
    data.unassign(check_uid(series_uid, "SeriesInstanceUID"), name)
    return Response(status_code=204)
