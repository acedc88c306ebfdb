"""BASE API: users (admins), projects and members (admins, owners), the caller, the audit log.

Every change is recorded in the audit log with the acting user and client address.
``PUBLIC_ROUTERS`` need no token; ``API_ROUTERS`` are protected by the app-wide guard.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, SecretStr

from jip.api_types import RowIdQuery
from jip.base.audit import AuditAction, AuditFilter, AuditRecord
from jip.base.auth import project_scope, require_project_role
from jip.base.deps import (
    AdminDep,
    AuditDep,
    ClientIpDep,
    CurrentUserDep,
    IssuerDep,
    ProjectsDep,
    UsersDep,
    require_local_users,
)
from jip.base.issuer_routes import router as issuer_router
from jip.base.projects import ProjectInfo
from jip.base.schema import ProjectRole
from jip.base.throttle import LoginBusy, TooManyAttempts
from jip.base.users import UserInfo, generate_password

users_router = APIRouter(
    prefix="/api/users", tags=["users"], dependencies=[Depends(require_local_users)]
)
projects_router = APIRouter(prefix="/api/projects", tags=["projects"])
me_router = APIRouter(prefix="/api/me", tags=["me"])
audit_router = APIRouter(prefix="/api/audit", tags=["audit"])

PUBLIC_ROUTERS = [issuer_router]
API_ROUTERS = [users_router, projects_router, me_router, audit_router]


# -- schemas -------------------------------------------------------------------------------
class UserOut(BaseModel):
    username: str
    is_admin: bool
    disabled: bool
    created_at: datetime
    projects: dict[str, ProjectRole]

    @classmethod
    def of(cls, info: UserInfo) -> UserOut:
        return cls(**info.__dict__)


class UserCreate(BaseModel):
    username: str
    # Unset: a one-time password is generated and returned once.
    password: SecretStr | None = None
    is_admin: bool = False


class UserCreated(UserOut):
    one_time_password: str | None = None


class UserUpdate(BaseModel):
    is_admin: bool | None = None
    disabled: bool | None = None


class PasswordSet(BaseModel):
    password: SecretStr


class PasswordChange(BaseModel):
    current_password: SecretStr
    new_password: SecretStr


class ProjectOut(BaseModel):
    name: str
    description: str
    created_at: datetime
    members: dict[str, ProjectRole]

    @classmethod
    def of(cls, info: ProjectInfo) -> ProjectOut:
        return cls(**info.__dict__)


class ProjectCreate(BaseModel):
    name: str
    description: str = ""
    owner: str | None = Field(default=None, description="username of the first owner")


class ProjectUpdate(BaseModel):
    description: str


class MemberSet(BaseModel):
    role: ProjectRole


class Me(BaseModel):
    username: str
    is_admin: bool
    projects: dict[str, ProjectRole]


class AuditOut(BaseModel):
    id: int
    at: datetime
    username: str
    action: str
    target: str
    detail: dict[str, object]
    client_ip: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditOut:
        return cls(**record.__dict__)


# -- users (site admins) ---------------------------------------------------------------------
@users_router.get("")
def list_users(_admin: AdminDep, users: UsersDep) -> list[UserOut]:
    return [UserOut.of(info) for info in users.list()]


@users_router.post("", status_code=201)
def create_user(
    body: UserCreate, admin: AdminDep, users: UsersDep, audit: AuditDep, ip: ClientIpDep
) -> UserCreated:
    """Create a user; without a password, the response carries a one-time password."""
    generated = None if body.password is not None else generate_password()
    password = body.password.get_secret_value() if body.password is not None else generated
    assert password is not None
    info = users.create(body.username, password, is_admin=body.is_admin)
    audit.record(
        AuditAction.USER_CREATE,
        username=admin.username,
        target=info.username,
        detail={"is_admin": info.is_admin},
        client_ip=ip,
    )
    return UserCreated(**UserOut.of(info).model_dump(), one_time_password=generated)


@users_router.get("/{username}")
def get_user(username: str, _admin: AdminDep, users: UsersDep) -> UserOut:
    return UserOut.of(users.get(username))


@users_router.patch("/{username}")
def update_user(
    username: str,
    body: UserUpdate,
    admin: AdminDep,
    users: UsersDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> UserOut:
    """Grant or take admin rights, disable or enable (disabling ends the user's sessions)."""
    info = users.update(username, is_admin=body.is_admin, disabled=body.disabled)
    audit.record(
        AuditAction.USER_UPDATE,
        username=admin.username,
        target=info.username,
        detail=body.model_dump(exclude_none=True),
        client_ip=ip,
    )
    return UserOut.of(info)


@users_router.put("/{username}/password", status_code=204)
def set_password(
    username: str,
    body: PasswordSet,
    admin: AdminDep,
    users: UsersDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> Response:
    """Set a user's password; their sessions end."""
    users.set_password(username, body.password.get_secret_value())
    audit.record(
        AuditAction.USER_PASSWORD, username=admin.username, target=username.lower(), client_ip=ip
    )
    return Response(status_code=204)


@users_router.delete("/{username}", status_code=204)
def remove_user(
    username: str, admin: AdminDep, users: UsersDep, audit: AuditDep, ip: ClientIpDep
) -> Response:
    users.remove(username)
    audit.record(
        AuditAction.USER_REMOVE, username=admin.username, target=username.lower(), client_ip=ip
    )
    return Response(status_code=204)


# -- projects ----------------------------------------------------------------------------------
@projects_router.get("")
def list_projects(user: CurrentUserDep, projects: ProjectsDep) -> list[ProjectOut]:
    """The caller's projects (every project for site admins)."""
    return [ProjectOut.of(info) for info in projects.list(project_scope(user))]


@projects_router.post("", status_code=201)
def create_project(
    body: ProjectCreate, admin: AdminDep, projects: ProjectsDep, audit: AuditDep, ip: ClientIpDep
) -> ProjectOut:
    info = projects.create(body.name, body.description, owner=body.owner)
    audit.record(
        AuditAction.PROJECT_CREATE,
        username=admin.username,
        target=info.name,
        detail={"owner": body.owner} if body.owner else {},
        client_ip=ip,
    )
    return ProjectOut.of(info)


@projects_router.get("/{name}")
def get_project(name: str, user: CurrentUserDep, projects: ProjectsDep) -> ProjectOut:
    require_project_role(user, name, ProjectRole.VIEWER)
    return ProjectOut.of(projects.get(name))


@projects_router.patch("/{name}")
def update_project(
    name: str,
    body: ProjectUpdate,
    user: CurrentUserDep,
    projects: ProjectsDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> ProjectOut:
    require_project_role(user, name, ProjectRole.OWNER)
    info = projects.update(name, description=body.description)
    audit.record(AuditAction.PROJECT_UPDATE, username=user.username, target=name, client_ip=ip)
    return ProjectOut.of(info)


@projects_router.delete("/{name}", status_code=204)
def remove_project(
    name: str, admin: AdminDep, projects: ProjectsDep, audit: AuditDep, ip: ClientIpDep
) -> Response:
    projects.remove(name)
    audit.record(AuditAction.PROJECT_REMOVE, username=admin.username, target=name, client_ip=ip)
    return Response(status_code=204)


@projects_router.get("/{name}/members")
def list_members(name: str, user: CurrentUserDep, projects: ProjectsDep) -> dict[str, ProjectRole]:
    require_project_role(user, name, ProjectRole.VIEWER)
    return projects.get(name).members


@projects_router.put("/{name}/members/{username}")
def set_member(
    name: str,
    username: str,
    body: MemberSet,
    user: CurrentUserDep,
    projects: ProjectsDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> ProjectOut:
    """Add a member or change their role (owners and site admins); effective at the
    member's next login or token refresh."""
    require_project_role(user, name, ProjectRole.OWNER)
    info = projects.set_member(name, username, body.role)
    audit.record(
        AuditAction.MEMBER_SET,
        username=user.username,
        target=f"{name}/{username.lower()}",
        detail={"role": body.role.value},
        client_ip=ip,
    )
    return ProjectOut.of(info)


@projects_router.delete("/{name}/members/{username}", status_code=204)
def remove_member(
    name: str,
    username: str,
    user: CurrentUserDep,
    projects: ProjectsDep,
    audit: AuditDep,
    ip: ClientIpDep,
) -> Response:
    require_project_role(user, name, ProjectRole.OWNER)
    projects.remove_member(name, username)
    audit.record(
        AuditAction.MEMBER_REMOVE,
        username=user.username,
        target=f"{name}/{username.lower()}",
        client_ip=ip,
    )
    return Response(status_code=204)


# -- the caller -----------------------------------------------------------------------------
@me_router.get("")
def me(user: CurrentUserDep) -> Me:
    """Who the token says the caller is, and their projects."""
    return Me(username=user.username, is_admin=user.is_admin, projects=dict(user.projects))


@me_router.put("/password", status_code=204, dependencies=[Depends(require_local_users)])
def change_my_password(
    body: PasswordChange, user: CurrentUserDep, issuer: IssuerDep, audit: AuditDep, ip: ClientIpDep
) -> Response:
    """Change one's own password (local users); every session and token of the user ends.

    The current password is checked under the login limits (429 with Retry-After)."""
    try:
        issuer.change_password(
            user.username,
            body.current_password.get_secret_value(),
            body.new_password.get_secret_value(),
            client_ip=ip,
        )
    except (TooManyAttempts, LoginBusy) as exc:
        status = 429 if isinstance(exc, TooManyAttempts) else 503
        return JSONResponse(
            {"detail": str(exc)},
            status_code=status,
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    audit.record(
        AuditAction.USER_PASSWORD, username=user.username, target=user.username, client_ip=ip
    )
    return Response(status_code=204)


# -- audit log (site admins) --------------------------------------------------------------------
def _filter(
    username: str | None = None,
    action: Annotated[
        str | None, Query(description="an action, or a prefix ending in '.' (user.)")
    ] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditFilter:
    return AuditFilter(username=username, action=action, since=since, until=until)


AuditFilterDep = Annotated[AuditFilter, Depends(_filter)]


@audit_router.get("")
def list_audit(
    _admin: AdminDep,
    audit: AuditDep,
    where: AuditFilterDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: RowIdQuery = None,
) -> list[AuditOut]:
    """Newest first; for the next page pass the smallest ``id`` seen as ``before_id``."""
    return [AuditOut.of(record) for record in audit.list(where, limit=limit, before_id=before_id)]


@audit_router.get("/export", response_class=StreamingResponse)
def export_audit(
    admin: AdminDep, audit: AuditDep, where: AuditFilterDep, ip: ClientIpDep
) -> StreamingResponse:
    """The matching entries, oldest first, as a CSV download."""
    audit.record(
        AuditAction.AUDIT_EXPORT,
        username=admin.username,
        detail={k: str(v) for k, v in where.__dict__.items() if v is not None},
        client_ip=ip,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        audit.export_csv(where),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="jip-audit-{stamp}.csv"'},
    )
