"""Local users: password hashing, create/verify/passwd/remove, admin bootstrap."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from jip.base import users as users_module
from jip.base.schema import User
from jip.base.users import (
    ScryptCost,
    Users,
    check_password,
    hash_password,
    needs_rehash,
)
from jip.errors import Conflict, Invalid, NotFound, Unauthorized
from jip.runtime import Runtime


@pytest.fixture
def users(runtime: Runtime) -> Users:
    return runtime.identity.users


def test_production_hash_is_salted_scrypt_with_32_mib_cost() -> None:
    first = hash_password("s3cret-password", ScryptCost())
    second = hash_password("s3cret-password", ScryptCost())
    assert first.startswith("scrypt$32768$8$1$")
    assert first != second  # a salt per hash
    assert check_password("s3cret-password", first)
    assert not check_password("s3cret-passwore", first)
    assert not check_password("s3cret-password", "md5$abc")


def test_created_user_verifies_with_its_password_only(users: Users) -> None:
    users.create("Alice", "alice-password")
    assert users.verify("alice", "alice-password").username == "alice"
    assert users.verify("ALICE", "alice-password").username == "alice"
    with pytest.raises(Unauthorized, match="invalid username or password"):
        users.verify("alice", "wrong-password")
    with pytest.raises(Unauthorized, match="invalid username or password"):
        users.verify("nobody", "alice-password")


def test_password_is_stored_hashed(users: Users, runtime: Runtime) -> None:
    users.create("alice", "alice-password")
    with Session(runtime.engine) as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "alice"))
    assert stored is not None and "alice-password" not in stored
    assert stored.startswith("scrypt$")


def test_disabled_user_cannot_log_in(users: Users) -> None:
    users.create("alice", "alice-password")
    users.create("root", "root-password", is_admin=True)
    users.update("alice", disabled=True)
    with pytest.raises(Unauthorized):
        users.verify("alice", "alice-password")


def test_invalid_usernames_and_short_passwords_are_refused(users: Users) -> None:
    with pytest.raises(Invalid, match="username"):
        users.create("no spaces", "long-enough-password")
    with pytest.raises(Invalid, match="too short"):
        users.create("alice", "short")


def test_duplicate_username_is_a_conflict(users: Users) -> None:
    users.create("alice", "alice-password")
    with pytest.raises(Conflict):
        users.create("ALICE", "other-password")


def test_set_password_replaces_the_old_one(users: Users) -> None:
    users.create("alice", "alice-password")
    users.set_password("alice", "new-alice-password")
    assert users.verify("alice", "new-alice-password")
    with pytest.raises(Unauthorized):
        users.verify("alice", "alice-password")


def test_remove_deletes_the_user(users: Users) -> None:
    users.create("alice", "alice-password")
    users.remove("alice")
    assert [u.username for u in users.list()] == []
    with pytest.raises(NotFound):
        users.remove("alice")


def test_last_enabled_admin_cannot_be_removed_demoted_or_disabled(users: Users) -> None:
    users.create("root", "root-password", is_admin=True)
    with pytest.raises(Conflict, match="last enabled admin"):
        users.remove("root")
    with pytest.raises(Conflict):
        users.update("root", is_admin=False)
    with pytest.raises(Conflict):
        users.update("root", disabled=True)
    users.create("second", "second-password", is_admin=True)
    users.update("root", is_admin=False)
    assert not users.get("root").is_admin


def test_bootstrap_generates_a_one_time_admin_password_once(users: Users) -> None:
    generated = users.bootstrap_admin(None)
    assert generated is not None and len(generated) >= 12
    admin = users.verify("admin", generated)
    assert admin.is_admin
    assert users.bootstrap_admin(None) is None  # users exist: nothing happens


def test_bootstrap_uses_the_configured_admin_password(users: Users) -> None:
    assert users.bootstrap_admin(SecretStr("configured-password")) is None
    assert users.verify("admin", "configured-password").is_admin


def test_bootstrap_does_nothing_when_users_exist(users: Users) -> None:
    users.create("alice", "alice-password")
    assert users.bootstrap_admin(None) is None
    with pytest.raises(NotFound):
        users.get("admin")


def test_login_rehashes_a_password_stored_with_another_cost(
    users: Users, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    users.create("alice", "alice-password")
    stronger = ScryptCost(n=2**11, r=8, p=1)
    monkeypatch.setattr(users_module, "DEFAULT_COST", stronger)
    users.verify("alice", "alice-password")
    with Session(runtime.engine) as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "alice"))
    assert stored is not None and not needs_rehash(stored, stronger)
    assert users.verify("alice", "alice-password")
