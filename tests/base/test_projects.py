"""Projects and memberships: names, roles, the last owner, cascades."""

from __future__ import annotations

import pytest
from tests.base.support import add_user

from jip.base.projects import Projects
from jip.base.schema import ProjectRole
from jip.errors import Conflict, Invalid, NotFound
from jip.runtime import Runtime


@pytest.fixture
def projects(runtime: Runtime) -> Projects:
    add_user(runtime, "alice")
    add_user(runtime, "bob")
    return runtime.identity.projects


def test_project_with_an_owner(projects: Projects) -> None:
    info = projects.create("lung", "Lung CT", owner="alice")
    assert info.members == {"alice": ProjectRole.OWNER}
    assert projects.get("lung").description == "Lung CT"


def test_project_names_are_slugs(projects: Projects) -> None:
    for bad in ("", "Lung", "a/b", "-x", "x" * 65):
        with pytest.raises(Invalid, match="project name"):
            projects.create(bad)


def test_set_member_adds_then_changes_the_role(projects: Projects) -> None:
    projects.create("lung", owner="alice")
    projects.set_member("lung", "bob", ProjectRole.VIEWER)
    info = projects.set_member("lung", "BOB", ProjectRole.RESEARCHER)
    assert info.members == {"alice": ProjectRole.OWNER, "bob": ProjectRole.RESEARCHER}
    assert projects.list(only={"lung"})[0].name == "lung"
    assert projects.list(only=set()) == []


def test_unknown_user_or_project_is_not_found(projects: Projects) -> None:
    projects.create("lung")
    with pytest.raises(NotFound, match="no user"):
        projects.set_member("lung", "nobody", ProjectRole.VIEWER)
    with pytest.raises(NotFound, match="no project"):
        projects.set_member("brain", "alice", ProjectRole.VIEWER)


def test_the_last_owner_can_be_replaced_but_not_removed(projects: Projects) -> None:
    projects.create("lung", owner="alice")
    with pytest.raises(Conflict, match="last owner"):
        projects.remove_member("lung", "alice")
    projects.set_member("lung", "bob", ProjectRole.OWNER)
    projects.set_member("lung", "alice", ProjectRole.VIEWER)
    assert projects.get("lung").members == {"alice": ProjectRole.VIEWER, "bob": ProjectRole.OWNER}


def test_removing_a_project_or_user_removes_memberships(
    projects: Projects, runtime: Runtime
) -> None:
    projects.create("lung", owner="alice")
    projects.create("brain", owner="alice")
    projects.set_member("brain", "bob", ProjectRole.VIEWER)
    projects.remove("lung")
    assert runtime.identity.users.get("alice").projects == {"brain": ProjectRole.OWNER}
    runtime.identity.users.remove("bob")
    assert projects.get("brain").members == {"alice": ProjectRole.OWNER}
    assert projects.names() == ["brain", "default"]  # the default project stays
