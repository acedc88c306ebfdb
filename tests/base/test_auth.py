"""Token claims → CurrentUser, project scope, and validation against a remote JWKS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from unittest import mock

import jwt
import pytest

from jip.backends import authenticator_for
from jip.base.auth import (
    ANONYMOUS_ADMIN,
    Authenticator,
    CurrentUser,
    JwksVerifier,
    project_scope,
    require_project_role,
    user_from_claims,
)
from jip.base.keys import SigningKeys
from jip.base.schema import ProjectRole
from jip.config import Settings
from jip.errors import Forbidden, NotFound, Unauthorized, Unavailable

KEYCLOAK = "https://keycloak.example/realms/jip"


def test_keycloak_style_claims_map_to_the_current_user() -> None:
    user = user_from_claims(
        {
            "sub": "f3b0c1d2-uuid",
            "preferred_username": "alice",
            "realm_access": {"roles": ["offline_access", "researcher", "owner"]},
            "groups": [
                "/projects/lung/researcher",
                "/projects/brain/viewer",
                "/projects/brain/owner",  # the highest role counts
                "/other-group",
                "/projects/bad/superuser",
            ],
        }
    )
    assert user.username == "alice"
    assert not user.is_admin
    assert dict(user.projects) == {"lung": ProjectRole.RESEARCHER, "brain": ProjectRole.OWNER}


def test_admin_role_makes_a_site_admin() -> None:
    user = user_from_claims({"sub": "root", "realm_access": {"roles": ["admin"]}})
    assert user.is_admin and user.username == "root"


def test_claims_without_a_user_are_refused() -> None:
    with pytest.raises(Unauthorized):
        user_from_claims({"aud": "jip"})


def test_project_scope_is_all_for_admins_and_own_projects_otherwise() -> None:
    assert project_scope(CurrentUser("root", is_admin=True)) is None
    member = CurrentUser("alice", projects={"lung": ProjectRole.VIEWER})
    assert project_scope(member) == {"lung"}
    assert project_scope(CurrentUser("nobody")) == set()


def test_require_project_role_hides_foreign_projects_and_checks_rank() -> None:
    alice = CurrentUser("alice", projects={"lung": ProjectRole.RESEARCHER})
    require_project_role(alice, "lung", ProjectRole.VIEWER)
    require_project_role(alice, "lung", ProjectRole.RESEARCHER)
    with pytest.raises(Forbidden):
        require_project_role(alice, "lung", ProjectRole.OWNER)
    with pytest.raises(NotFound):
        require_project_role(alice, "brain", ProjectRole.VIEWER)
    require_project_role(CurrentUser("root", is_admin=True), "brain", ProjectRole.OWNER)


def test_disabled_auth_makes_every_caller_an_admin() -> None:
    authenticator = Authenticator(enabled=False, verifier=mock.Mock())
    assert authenticator.authenticate(None) is ANONYMOUS_ADMIN


def test_enabled_auth_needs_a_token() -> None:
    authenticator = Authenticator(enabled=True, verifier=mock.Mock())
    with pytest.raises(Unauthorized, match="missing bearer token"):
        authenticator.authenticate(None)


# -- the cluster shape: an external issuer's JWKS ------------------------------------------
@pytest.fixture(scope="module")
def keycloak_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    keys = SigningKeys(tmp_path_factory.mktemp("keycloak"))
    keys.private_key  # noqa: B018
    return keys


def keycloak_token(keys: SigningKeys, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": KEYCLOAK,
        "aud": ["jip", "account"],
        "sub": "7c1e-uuid",
        "typ": "Bearer",
        "iat": now,
        "exp": now + 300,
        "preferred_username": "alice",
        "realm_access": {"roles": ["researcher"]},
        "groups": ["/projects/lung/researcher"],
        **overrides,
    }
    return jwt.encode(claims, keys.private_key, algorithm="RS256", headers={"kid": keys.kid})


def jwks_verifier(keys: SigningKeys) -> tuple[JwksVerifier, mock.MagicMock]:
    verifier = JwksVerifier(issuer=KEYCLOAK, audience="jip", jwks_url=f"{KEYCLOAK}/certs")
    fetch = mock.MagicMock(return_value=keys.jwks())
    verifier.client().fetch_data = fetch  # type: ignore[method-assign]
    return verifier, fetch


def test_jwks_verifier_accepts_the_issuers_tokens(keycloak_key: SigningKeys) -> None:
    verifier, fetch = jwks_verifier(keycloak_key)
    claims = verifier.verify(keycloak_token(keycloak_key))
    assert user_from_claims(claims) == CurrentUser(
        "alice", projects={"lung": ProjectRole.RESEARCHER}
    )
    verifier.verify(keycloak_token(keycloak_key))
    assert fetch.call_count == 1  # keys are cached


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "https://keycloak.example/realms/other"},
        {"aud": "account"},
        {"exp": int(time.time()) - 3600},
        {"typ": "Refresh"},
    ],
    ids=["issuer", "audience", "expired", "not-an-access-token"],
)
def test_jwks_verifier_refuses_bad_claims(
    keycloak_key: SigningKeys, overrides: dict[str, Any]
) -> None:
    verifier, _fetch = jwks_verifier(keycloak_key)
    with pytest.raises(Unauthorized):
        verifier.verify(keycloak_token(keycloak_key, **overrides))


def test_jwks_verifier_refuses_an_unknown_key(keycloak_key: SigningKeys, tmp_path: Path) -> None:
    verifier, _fetch = jwks_verifier(keycloak_key)
    stranger = SigningKeys(tmp_path / "stranger")
    with pytest.raises(Unauthorized):
        verifier.verify(keycloak_token(stranger))


def test_unreachable_jwks_is_unavailable() -> None:
    verifier = JwksVerifier(issuer=KEYCLOAK, audience="jip", jwks_url="http://127.0.0.1:9/certs")
    token = jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": "k"})
    with pytest.raises(Unavailable):
        verifier.verify(token)


def test_jwks_url_comes_from_the_issuers_discovery(keycloak_key: SigningKeys) -> None:
    verifier = JwksVerifier(issuer=KEYCLOAK, audience="jip")
    discovery = mock.Mock(status_code=200)
    discovery.json.return_value = {"jwks_uri": f"{KEYCLOAK}/protocol/openid-connect/certs"}
    with mock.patch("jip.base.auth.httpx.get", return_value=discovery) as get:
        client = verifier.client()
    get.assert_called_once_with(f"{KEYCLOAK}/.well-known/openid-configuration", timeout=10)
    assert client.uri == f"{KEYCLOAK}/protocol/openid-connect/certs"


def test_settings_pick_the_verifier(tmp_path: Path) -> None:
    keys = SigningKeys(tmp_path)
    cluster = Settings(data_dir=tmp_path, auth={"issuer_url": KEYCLOAK})
    assert isinstance(authenticator_for(cluster, keys, "x").verifier, JwksVerifier)
    embedded = Settings(data_dir=tmp_path)
    assert not isinstance(authenticator_for(embedded, keys, "x").verifier, JwksVerifier)
