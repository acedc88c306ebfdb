"""Projects and their members: the unit every query of every service is limited to.

A project name is a short slug (it becomes a Keycloak group and a path segment of the
``groups`` claim, ``/projects/<name>/<role>``). A project with members keeps at least one
owner, so someone can always manage it besides the site admins.
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from jip.base.ledger import bump_token_version
from jip.base.schema import Membership, Project, ProjectRole, User, as_utc, now_utc
from jip.errors import Conflict, Invalid, NotFound

PROJECT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def check_project_name(name: str) -> str:
    if not PROJECT_NAME_RE.fullmatch(name):
        raise Invalid(
            f"project name {name!r} is invalid: use 1-64 lower-case letters, digits, '_' or"
            " '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ProjectInfo:
    name: str
    description: str
    created_at: datetime
    members: dict[str, ProjectRole]


class Projects:
    """Project records and memberships over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, description: str = "", owner: str | None = None) -> ProjectInfo:
        check_project_name(name)
        with Session(self.engine) as session, session.begin():
            if _find(session, name) is not None:
                raise Conflict(f"project {name!r} already exists")
            project = Project(name=name, description=description, created_at=now_utc())
            session.add(project)
            session.flush()
            if owner is not None:
                user = _user(session, owner)
                session.add(
                    Membership(user_id=user.id, project_id=project.id, role=ProjectRole.OWNER)
                )
                session.flush()
            return _info(session, project)

    def ensure(self, name: str, description: str = "") -> None:
        """Create the project unless it exists (the site's default project on start)."""
        if name in self.names():
            return
        with contextlib.suppress(Conflict):  # another process created it meanwhile
            self.create(name, description)

    def get(self, name: str) -> ProjectInfo:
        with Session(self.engine) as session:
            return _info(session, _get(session, name))

    def list(self, only: Iterable[str] | None = None) -> builtins.list[ProjectInfo]:
        """Every project, or those named in ``only`` (a caller's project scope)."""
        with Session(self.engine) as session:
            query = select(Project).order_by(Project.name)
            if only is not None:
                query = query.where(Project.name.in_(list(only)))
            return [_info(session, project) for project in session.scalars(query)]

    def names(self) -> builtins.list[str]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Project.name).order_by(Project.name)))

    def update(self, name: str, *, description: str) -> ProjectInfo:
        with Session(self.engine) as session, session.begin():
            project = _get(session, name)
            project.description = description
            session.flush()
            return _info(session, project)

    def remove(self, name: str) -> None:
        """Remove the project; its members' access tokens end (they named it)."""
        with Session(self.engine) as session, session.begin():
            project = _get(session, name)
            members = session.scalars(
                select(Membership.user_id).where(Membership.project_id == project.id)
            ).all()
            bump_token_version(session, *members)
            session.delete(project)

    def set_member(self, name: str, username: str, role: ProjectRole) -> ProjectInfo:
        """Add ``username`` to the project, or change their role (which ends the access
        tokens naming the old role; a new member's tokens lack the project, harmlessly)."""
        with Session(self.engine) as session, session.begin():
            project = _get(session, name)
            user = _user(session, username)
            membership = session.get(Membership, (user.id, project.id))
            if membership is None:
                session.add(Membership(user_id=user.id, project_id=project.id, role=role))
            else:
                if membership.role == ProjectRole.OWNER and role != ProjectRole.OWNER:
                    _keep_an_owner(session, project, user)
                if membership.role != role:
                    bump_token_version(session, user.id)
                membership.role = role
            session.flush()
            return _info(session, project)

    def remove_member(self, name: str, username: str) -> ProjectInfo:
        with Session(self.engine) as session, session.begin():
            project = _get(session, name)
            user = _user(session, username)
            membership = session.get(Membership, (user.id, project.id))
            if membership is None:
                raise NotFound(f"{user.username!r} is not a member of project {name!r}")
            if membership.role == ProjectRole.OWNER:
                _keep_an_owner(session, project, user)
            session.delete(membership)
            bump_token_version(session, user.id)
            session.flush()
            return _info(session, project)


def _find(session: Session, name: str) -> Project | None:
    return session.scalar(select(Project).where(Project.name == name))


def _get(session: Session, name: str) -> Project:
    project = _find(session, name)
    if project is None:
        raise NotFound(f"no project {name!r}")
    return project


def _user(session: Session, username: str) -> User:
    name = username.strip().lower()
    user = session.scalar(select(User).where(User.username == name))
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def _keep_an_owner(session: Session, project: Project, leaving: User) -> None:
    others = session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(
            Membership.project_id == project.id,
            Membership.role == ProjectRole.OWNER,
            Membership.user_id != leaving.id,
        )
    )
    if not others:
        raise Conflict(
            f"{leaving.username!r} is the last owner of project {project.name!r}:"
            " make another member owner first"
        )


def _info(session: Session, project: Project) -> ProjectInfo:
    rows = session.execute(
        select(User.username, Membership.role)
        .join(User, User.id == Membership.user_id)
        .where(Membership.project_id == project.id)
        .order_by(User.username)
    )
    return ProjectInfo(
        name=project.name,
        description=project.description,
        created_at=as_utc(project.created_at),
        members={username: ProjectRole(role) for username, role in rows},
    )
