"""The audit log: what BASE records, filters, CSV export, and that it is append-only."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from tests.base.support import add_user, auth_for, password_login, tokens_for

from jip.base.audit import AuditFilter, AuditLog
from jip.base.schema import ProjectRole, now_utc
from jip.runtime import Runtime


@pytest.fixture
def audit(runtime: Runtime) -> AuditLog:
    return runtime.identity.audit


def actions(audit: AuditLog) -> list[tuple[str, str, str]]:
    return [(r.action, r.username, r.target) for r in reversed(audit.list())]


def test_logins_failures_and_logouts_are_recorded(
    client: TestClient, runtime: Runtime, audit: AuditLog
) -> None:
    add_user(runtime, "alice")
    password_login(client, "alice", "wrong-password")
    tokens = tokens_for(client, "alice")
    client.post("/auth/logout", data={"refresh_token": tokens["refresh_token"]})
    assert actions(audit) == [
        ("login.failed", "alice", ""),
        ("login", "alice", ""),
        ("logout", "alice", ""),
    ]
    failed = audit.list(AuditFilter(action="login.failed"))[0]
    assert failed.client_ip == "testclient"
    assert failed.detail == {"client_id": "jip-cli"}


def test_user_and_project_changes_are_recorded_with_the_actor(
    client: TestClient, runtime: Runtime, audit: AuditLog
) -> None:
    add_user(runtime, "root", admin=True)
    admin = auth_for(client, "root")
    client.post("/api/users", headers=admin, json={"username": "carol"})
    client.patch("/api/users/carol", headers=admin, json={"is_admin": True})
    client.put("/api/users/carol/password", headers=admin, json={"password": "carols-password"})
    client.post("/api/projects", headers=admin, json={"name": "lung"})
    client.put("/api/projects/lung/members/carol", headers=admin, json={"role": "owner"})
    client.delete("/api/users/carol", headers=admin)
    changes = [a for a in actions(audit) if not a[0].startswith("login")]
    assert changes == [
        ("user.create", "root", "carol"),
        ("user.update", "root", "carol"),
        ("user.password", "root", "carol"),
        ("project.create", "root", "lung"),
        ("project.member.set", "root", "lung/carol"),
        ("user.remove", "root", "carol"),
    ]
    assert audit.list(AuditFilter(action="user.update"))[0].detail == {"is_admin": True}


def test_passwords_never_reach_the_audit_log(
    client: TestClient, runtime: Runtime, audit: AuditLog
) -> None:
    add_user(runtime, "root", admin=True)
    admin = auth_for(client, "root")
    client.post("/api/users", headers=admin, json={"username": "carol", "password": "p4ssw0rd-x"})
    password_login(client, "carol", "typo-p4ssw0rd")
    exported = "".join(audit.export_csv())
    assert "p4ssw0rd" not in exported


def test_filters_by_user_action_prefix_and_time(audit: AuditLog) -> None:
    start = now_utc()
    audit.record("user.create", username="root", target="a", at=start)
    audit.record("user.remove", username="root", target="a", at=start + timedelta(minutes=1))
    audit.record("login", username="a", at=start + timedelta(minutes=2))
    assert [r.action for r in audit.list(AuditFilter(action="user."))] == [
        "user.remove",
        "user.create",
    ]
    assert [r.action for r in audit.list(AuditFilter(username="a"))] == ["login"]
    window = AuditFilter(since=start + timedelta(seconds=30), until=start + timedelta(minutes=2))
    assert [r.action for r in audit.list(window)] == ["user.remove"]


def test_paging_goes_back_with_before_id(audit: AuditLog) -> None:
    for n in range(5):
        audit.record("login", username=f"u{n}")
    first = audit.list(limit=2)
    second = audit.list(limit=2, before_id=first[-1].id)
    assert [r.username for r in first + second] == ["u4", "u3", "u2", "u1"]


def test_admin_reads_and_exports_the_log_as_csv(
    client: TestClient, runtime: Runtime, audit: AuditLog
) -> None:
    add_user(runtime, "root", admin=True)
    password_login(client, "=HYPERLINK(evil)", "whatever")  # an attempted username is input
    admin = auth_for(client, "root")
    listed = client.get("/api/audit", headers=admin, params={"action": "login."}).json()
    assert [e["action"] for e in listed] == ["login.failed"]

    response = client.get("/api/audit/export", headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["action"] for r in rows] == ["login.failed", "login", "audit.export"]
    assert rows[0]["username"].startswith("'=")  # never a live formula in a spreadsheet
    assert audit.list(AuditFilter(action="audit.export"))[0].username == "root"


def test_the_audit_table_is_append_only(runtime: Runtime, audit: AuditLog) -> None:
    audit.record("login", username="alice")
    with runtime.engine.connect() as connection:
        with pytest.raises(DatabaseError, match="append-only"):
            connection.execute(text("UPDATE audit_log SET username = 'mallory'"))
        connection.rollback()
        with pytest.raises(DatabaseError, match="append-only"):
            connection.execute(text("DELETE FROM audit_log"))
    assert [r.username for r in audit.list()] == ["alice"]


def test_removing_a_user_keeps_their_entries(client: TestClient, runtime: Runtime) -> None:
    add_user(runtime, "root", admin=True)
    add_user(runtime, "alice", projects={"lung": ProjectRole.VIEWER})
    tokens_for(client, "alice")
    runtime.identity.users.remove("alice")
    assert runtime.identity.audit.list(AuditFilter(username="alice"))
