"""The identity tables on each catalog backend (SQLite; PostgreSQL when configured)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError
from tests.base.support import PASSWORD, install_key, site_settings

from jip.base.schema import ProjectRole
from jip.runtime import build_runtime


def test_login_rotation_and_audit_on_the_catalog_backend(
    catalog_url: str, tmp_path: Path, issuer_key: Path
) -> None:
    settings = site_settings(tmp_path / "data", enabled=True).model_copy(
        update={"catalog_url": catalog_url}
    )
    install_key(settings, issuer_key)
    runtime = build_runtime(settings)
    try:
        identity = runtime.identity
        assert identity.issuer is not None
        identity.users.create("alice", PASSWORD)
        identity.projects.create("lung", owner="alice")
        first = identity.issuer.password_grant(
            "alice", PASSWORD, client_id="jip-cli", scope="openid", client_ip="10.0.0.1"
        )
        claims = identity.authenticator.verifier.verify(first.access_token)
        assert claims["groups"] == ["/projects/lung/owner"]
        second = identity.issuer.refresh_grant(
            first.refresh_token, client_id="jip-cli", client_ip="10.0.0.1"
        )
        with pytest.raises(Exception, match="already used"):
            identity.issuer.refresh_grant(
                first.refresh_token, client_id="jip-cli", client_ip="10.0.0.1"
            )
        with pytest.raises(Exception, match="already used"):
            identity.issuer.refresh_grant(
                second.refresh_token, client_id="jip-cli", client_ip="10.0.0.1"
            )
        assert identity.users.get("alice").projects == {"lung": ProjectRole.OWNER}
        assert [r.action for r in identity.audit.list()] == ["token.reuse", "token.reuse", "login"]
        with runtime.engine.connect() as connection, pytest.raises(DatabaseError):
            connection.execute(text("DELETE FROM audit_log"))
    finally:
        runtime.close()
