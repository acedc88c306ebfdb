"""A workflow run's own token: the run's projects as a researcher, never admin, revocable;
signed with the site's key beside the embedded issuer and beside Keycloak alike."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from unittest import mock

import jwt
import pytest
from fastapi.testclient import TestClient
from tests.base.support import add_user, bearer, install_key, site_settings

from jip.app import build_app
from jip.base import Identity
from jip.base.keys import SigningKeys
from jip.base.schema import ProjectRole, now_utc
from jip.config import Settings
from jip.errors import Invalid, Unauthorized
from jip.runtime import Runtime, build_runtime

KEYCLOAK = "https://keycloak.example/realms/jip"


@pytest.fixture
def identity(runtime: Runtime) -> Identity:
    add_user(runtime, "alice", projects={"lung": ProjectRole.RESEARCHER})
    add_user(runtime, "bob", projects={"brain": ProjectRole.OWNER})
    return runtime.identity


def run_token(
    identity: Identity, run_id: str = "run-1", projects: tuple[str, ...] = ("lung",)
) -> str:
    return identity.issue_run_token(run_id=run_id, projects=projects, ttl_s=600, started_by="root")


def test_a_run_token_is_a_researcher_in_exactly_its_projects(
    client: TestClient, identity: Identity
) -> None:
    token = bearer(run_token(identity))
    me = client.get("/api/me", headers=token).json()
    assert me == {"username": "run:run-1", "is_admin": False, "projects": {"lung": "researcher"}}
    assert [p["name"] for p in client.get("/api/projects", headers=token).json()] == ["lung"]
    assert client.get("/api/projects/brain", headers=token).status_code == 404
    assert client.get("/api/users", headers=token).status_code == 403


def test_the_current_user_names_the_run_and_who_started_it(identity: Identity) -> None:
    user = identity.authenticator.authenticate(run_token(identity, "run-7"))
    assert user.run_id == "run-7"
    assert user.started_by == "root"
    assert not user.is_admin
    assert dict(user.projects) == {"lung": ProjectRole.RESEARCHER}


def test_a_run_started_by_an_admin_is_no_admin(identity: Identity) -> None:
    token = identity.issue_run_token(run_id="r", projects=[], ttl_s=60, started_by="root")
    user = identity.authenticator.authenticate(token)
    assert not user.is_admin and dict(user.projects) == {}


def test_a_revoked_run_token_is_refused_at_once(client: TestClient, identity: Identity) -> None:
    token = bearer(run_token(identity, "run-2"))
    other = bearer(run_token(identity, "run-3"))
    assert client.get("/api/me", headers=token).status_code == 200
    identity.revoke_run_token("run-2")
    response = client.get("/api/me", headers=token)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert client.get("/api/me", headers=other).status_code == 200


def test_an_expired_run_token_is_refused(identity: Identity, runtime: Runtime) -> None:
    assert identity.run_tokens is not None
    token = identity.run_tokens.issue(
        run_id="old",
        projects=["lung"],
        ttl_s=60,
        started_by="alice",
        now=now_utc() - timedelta(hours=1),
    )
    with pytest.raises(Unauthorized, match="expired"):
        identity.authenticator.authenticate(token)


def test_a_forged_run_claim_is_refused(identity: Identity) -> None:
    """Same key, but no token the site recorded: a made-up run id or jti gets nothing."""
    claims = jwt.decode(run_token(identity), options={"verify_signature": False})
    keys = identity.issuer.keys  # type: ignore[union-attr]
    for changed in ({"jip_run": "another-run"}, {"jti": "0" * 32}):
        forged = jwt.encode({**claims, **changed}, keys.private_key, algorithm="RS256")
        with pytest.raises(Unauthorized):
            identity.authenticator.authenticate(forged)


def test_run_tokens_check_their_arguments(identity: Identity) -> None:
    with pytest.raises(Invalid):
        identity.issue_run_token(run_id="", projects=["lung"], ttl_s=60, started_by="a")
    with pytest.raises(Invalid):
        identity.issue_run_token(run_id="r", projects=["Not A Project"], ttl_s=60, started_by="a")
    with pytest.raises(Invalid):
        identity.issue_run_token(run_id="r", projects=["lung"], ttl_s=0, started_by="a")


# -- beside Keycloak (cluster shape) -----------------------------------------------------------
@pytest.fixture
def keycloak_key(tmp_path: Path) -> SigningKeys:
    keys = SigningKeys(tmp_path / "keycloak")
    keys.private_key  # noqa: B018
    return keys


@pytest.fixture
def cluster(tmp_path: Path, issuer_key: Path, keycloak_key: SigningKeys) -> Iterator[Runtime]:
    settings: Settings = site_settings(
        tmp_path / "data", issuer_url=KEYCLOAK, jwks_url=f"{KEYCLOAK}/certs"
    )
    install_key(settings, issuer_key)
    runtime = build_runtime(settings)
    verifier = runtime.identity.authenticator.verifier
    verifier.client().fetch_data = mock.MagicMock(  # type: ignore[attr-defined]
        return_value=keycloak_key.jwks()
    )
    yield runtime
    runtime.close()


def keycloak_token(keys: SigningKeys, **extra: object) -> str:
    now = int(time.time())
    claims = {
        "iss": KEYCLOAK,
        "aud": "jip",
        "sub": "uuid",
        "typ": "Bearer",
        "iat": now,
        "exp": now + 300,
        "preferred_username": "alice",
        "groups": ["/projects/lung/researcher"],
        **extra,
    }
    return jwt.encode(claims, keys.private_key, algorithm="RS256", headers={"kid": keys.kid})


def test_run_tokens_work_beside_keycloak(cluster: Runtime, keycloak_key: SigningKeys) -> None:
    identity = cluster.identity
    assert identity.issuer is None
    client = TestClient(build_app(cluster))
    token = bearer(run_token(identity, "k-run"))
    assert client.get("/api/me", headers=token).json()["username"] == "run:k-run"
    people = bearer(keycloak_token(keycloak_key))
    assert client.get("/api/me", headers=people).json()["username"] == "alice"
    identity.revoke_run_token("k-run")
    assert client.get("/api/me", headers=token).status_code == 401


def test_beside_keycloak_the_site_key_signs_only_run_tokens(
    cluster: Runtime, keycloak_key: SigningKeys
) -> None:
    authenticator = cluster.identity.authenticator
    claims = jwt.decode(run_token(cluster.identity), options={"verify_signature": False})
    del claims["jip_run"]
    site_keys = authenticator.site.keys  # type: ignore[union-attr]
    not_a_run = jwt.encode(claims, site_keys.private_key, algorithm="RS256")
    with pytest.raises(Unauthorized):
        authenticator.authenticate(not_a_run)
    # Keycloak cannot mint run tokens either.
    with pytest.raises(Unauthorized):
        authenticator.authenticate(
            keycloak_token(keycloak_key, jip_run="k-run", jip_projects=["lung"])
        )
