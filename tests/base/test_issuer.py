"""The embedded issuer over HTTP: token grants, rotation, logout, rate limit, PKCE flow."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from fastapi.testclient import TestClient
from tests.base.support import (
    PASSWORD,
    SITE,
    add_user,
    auth_for,
    bearer,
    password_login,
    tokens_for,
)

from jip.base.issuer import Issuer, s256
from jip.base.keys import SigningKeys
from jip.base.schema import ProjectRole, now_utc
from jip.runtime import Runtime


@pytest.fixture
def issuer(runtime: Runtime) -> Issuer:
    assert runtime.identity.issuer is not None
    return runtime.identity.issuer


@pytest.fixture
def alice(runtime: Runtime) -> str:
    add_user(runtime, "alice", projects={"lung": ProjectRole.RESEARCHER})
    return "alice"


def refresh(client: TestClient, token: str, client_id: str = "jip-cli") -> Any:
    return client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
    )


def decode(runtime: Runtime, token: str) -> dict[str, Any]:
    return runtime.identity.authenticator.verifier.verify(token)


def shift_clock(issuer: Issuer, delta: timedelta) -> None:
    start = now_utc()
    issuer.clock = lambda: start + delta


# -- password grant and token validation -------------------------------------------------
def test_password_grant_issues_a_valid_access_token(
    client: TestClient, runtime: Runtime, alice: str
) -> None:
    response = password_login(client, alice)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == runtime.settings.auth.access_token_ttl_s
    claims = decode(runtime, body["access_token"])
    assert claims["iss"] == SITE
    assert claims["aud"] == "jip"
    assert claims["sub"] == "alice"
    assert claims["groups"] == ["/projects/lung/researcher"]
    assert claims["exp"] - claims["iat"] == runtime.settings.auth.access_token_ttl_s
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256"
    assert header["kid"] == runtime.identity.issuer.keys.kid  # type: ignore[union-attr]
    me = client.get("/api/me", headers=bearer(body["access_token"]))
    assert me.json() == {"username": "alice", "is_admin": False, "projects": {"lung": "researcher"}}


def test_wrong_password_is_refused_as_invalid_grant(client: TestClient, alice: str) -> None:
    response = password_login(client, alice, "not the password")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "access_token" not in response.json()


def test_unknown_client_and_grant_type_are_refused(client: TestClient, alice: str) -> None:
    response = client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "client_id": "evil",
            "username": alice,
            "password": PASSWORD,
        },
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    response = client.post("/auth/token", data={"grant_type": "implicit", "client_id": "jip"})
    assert response.json()["error"] == "unsupported_grant_type"


def test_expired_access_token_is_refused_with_401(
    client: TestClient, issuer: Issuer, alice: str
) -> None:
    shift_clock(issuer, -timedelta(hours=2))
    old = tokens_for(client, alice)["access_token"]
    response = client.get("/api/me", headers=bearer(old))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "expired" in response.json()["detail"]


def test_token_signed_by_another_key_is_refused(
    client: TestClient, runtime: Runtime, tmp_path: Any, alice: str
) -> None:
    claims = decode(runtime, tokens_for(client, alice)["access_token"])
    claims["groups"] = ["/projects/everything/owner"]
    forged = jwt.encode(claims, SigningKeys(tmp_path / "other").private_key, algorithm="RS256")
    assert client.get("/api/me", headers=bearer(forged)).status_code == 401


def test_token_for_another_audience_or_issuer_is_refused(
    client: TestClient, runtime: Runtime, issuer: Issuer, alice: str
) -> None:
    claims = decode(runtime, tokens_for(client, alice)["access_token"])
    for change in ({"aud": "other-service"}, {"iss": "https://elsewhere"}):
        token = jwt.encode({**claims, **change}, issuer.keys.private_key, algorithm="RS256")
        assert client.get("/api/me", headers=bearer(token)).status_code == 401


def test_id_token_is_not_an_access_token(
    client: TestClient, runtime: Runtime, issuer: Issuer, alice: str
) -> None:
    info = runtime.identity.users.get(alice)
    id_token = issuer.signer.id_token(
        info, now=now_utc(), client_id="jip", session_id="s", nonce=None
    )
    assert client.get("/api/me", headers=bearer(id_token)).status_code == 401


def test_garbage_bearer_is_401(client: TestClient) -> None:
    response = client.get("/api/me", headers=bearer("not-a-jwt"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- refresh rotation and logout ------------------------------------------------------------
def test_refresh_rotates_and_revokes_the_used_token(client: TestClient, alice: str) -> None:
    first = tokens_for(client, alice)
    response = refresh(client, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/api/me", headers=bearer(second["access_token"])).status_code == 200
    assert refresh(client, second["refresh_token"]).status_code == 200


def test_reused_refresh_token_revokes_the_whole_session(
    client: TestClient, runtime: Runtime, alice: str
) -> None:
    first = tokens_for(client, alice)
    second = refresh(client, first["refresh_token"]).json()
    replay = refresh(client, first["refresh_token"])  # a stolen copy comes back
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert refresh(client, second["refresh_token"]).status_code == 400  # family revoked
    actions = [r.action for r in runtime.identity.audit.list()]
    assert "token.reuse" in actions


def test_refresh_token_is_bound_to_its_client(client: TestClient, alice: str) -> None:
    tokens = tokens_for(client, alice)
    assert refresh(client, tokens["refresh_token"], client_id="jip").status_code == 400


def test_refresh_token_expires(
    client: TestClient, runtime: Runtime, issuer: Issuer, alice: str
) -> None:
    tokens = tokens_for(client, alice)
    shift_clock(issuer, timedelta(seconds=runtime.settings.auth.refresh_token_ttl_s + 1))
    response = refresh(client, tokens["refresh_token"])
    assert response.status_code == 400
    assert "expired" in response.json()["error_description"]


def test_refresh_of_a_disabled_user_fails(client: TestClient, runtime: Runtime, alice: str) -> None:
    add_user(runtime, "root", admin=True)
    tokens = tokens_for(client, alice)
    runtime.identity.users.update(alice, disabled=True)
    assert refresh(client, tokens["refresh_token"]).status_code == 400


def test_logout_revokes_the_refresh_token(client: TestClient, alice: str) -> None:
    tokens = tokens_for(client, alice)
    response = client.post("/auth/logout", data={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 204
    assert refresh(client, tokens["refresh_token"]).status_code == 400


def test_logout_with_only_a_bearer_token_ends_every_session(client: TestClient, alice: str) -> None:
    laptop = tokens_for(client, alice)
    desktop = tokens_for(client, alice)
    response = client.post("/auth/logout", headers=bearer(laptop["access_token"]))
    assert response.status_code == 204
    assert refresh(client, laptop["refresh_token"]).status_code == 400
    assert refresh(client, desktop["refresh_token"]).status_code == 400


def test_logout_without_any_token_is_a_bad_request(client: TestClient) -> None:
    assert client.post("/auth/logout").status_code == 400


def test_password_change_ends_sessions(client: TestClient, runtime: Runtime, alice: str) -> None:
    tokens = tokens_for(client, alice)
    runtime.identity.users.set_password(alice, "another-password")
    assert refresh(client, tokens["refresh_token"]).status_code == 400


# -- rate limit -----------------------------------------------------------------------------
def test_sixth_attempt_after_five_failures_is_429_with_retry_after(
    client: TestClient, alice: str
) -> None:
    for _ in range(5):
        assert password_login(client, alice, "wrong-password").status_code == 400
    response = password_login(client, alice)  # even the right password now waits
    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= 300


def test_rate_limit_is_per_username_and_client_ip(
    issuer: Issuer, runtime: Runtime, alice: str
) -> None:
    add_user(runtime, "bob")
    for _ in range(5):
        with pytest.raises(Exception, match="invalid username or password"):
            issuer.password_grant(
                alice, "wrong-password", client_id="jip-cli", scope="", client_ip="10.0.0.1"
            )
    with pytest.raises(Exception, match="too many failed logins"):
        issuer.password_grant(alice, PASSWORD, client_id="jip-cli", scope="", client_ip="10.0.0.1")
    assert issuer.password_grant(
        alice, PASSWORD, client_id="jip-cli", scope="", client_ip="10.0.0.2"
    )
    assert issuer.password_grant(
        "bob", PASSWORD, client_id="jip-cli", scope="", client_ip="10.0.0.1"
    )


def test_logins_reopen_when_the_window_has_passed(
    issuer: Issuer, runtime: Runtime, alice: str
) -> None:
    start = now_utc()
    issuer.clock = lambda: start
    for _ in range(5):
        with pytest.raises(Exception, match="invalid"):
            issuer.password_grant(alice, "wrong", client_id="jip-cli", scope="", client_ip="ip")
    with pytest.raises(Exception, match="too many") as refused:
        issuer.password_grant(alice, PASSWORD, client_id="jip-cli", scope="", client_ip="ip")
    assert refused.value.retry_after_s == 300  # type: ignore[attr-defined]
    issuer.clock = lambda: start + timedelta(seconds=299)
    with pytest.raises(Exception, match="too many"):
        issuer.password_grant(alice, PASSWORD, client_id="jip-cli", scope="", client_ip="ip")
    issuer.clock = lambda: start + timedelta(seconds=301)
    assert issuer.password_grant(alice, PASSWORD, client_id="jip-cli", scope="", client_ip="ip")


def test_a_successful_login_resets_the_failure_count(issuer: Issuer, alice: str) -> None:
    def attempt(password: str) -> Any:
        return issuer.password_grant(alice, password, client_id="jip-cli", scope="", client_ip="ip")

    for _ in range(4):
        with pytest.raises(Exception, match="invalid"):
            attempt("wrong")
    assert attempt(PASSWORD)
    for _ in range(4):
        with pytest.raises(Exception, match="invalid"):
            attempt("wrong")
    assert attempt(PASSWORD)


# -- browser flow: authorization code with PKCE ----------------------------------------------
REDIRECT = f"{SITE}/callback"


def authorize_params(verifier: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "jip",
        "redirect_uri": REDIRECT,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "state": "xyz-state",
        "scope": "openid profile",
        "nonce": "n-0S6_WzA2Mj",
        **extra,
    }


def log_in_in_browser(client: TestClient, verifier: str, **extra: str) -> dict[str, list[str]]:
    params = authorize_params(verifier, **extra)
    page = client.get("/auth/authorize", params=params)
    assert page.status_code == 200
    assert 'name="password"' in page.text
    assert page.headers["x-frame-options"] == "DENY"
    response = client.post(
        "/auth/authorize",
        data={**params, "username": "alice", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == params["redirect_uri"]
    return parse_qs(location.query)


def exchange(client: TestClient, code: str, verifier: str, redirect_uri: str = REDIRECT) -> Any:
    return client.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "jip",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )


def test_pkce_flow_end_to_end(client: TestClient, runtime: Runtime, alice: str) -> None:
    verifier = secrets.token_urlsafe(48)
    query = log_in_in_browser(client, verifier)
    assert query["state"] == ["xyz-state"]
    assert query["iss"] == [SITE]
    response = exchange(client, query["code"][0], verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    assert client.get("/api/me", headers=bearer(body["access_token"])).json()["username"] == "alice"
    id_claims = jwt.decode(
        body["id_token"],
        runtime.identity.issuer.keys.public_key,  # type: ignore[union-attr]
        algorithms=["RS256"],
        audience="jip",
        issuer=SITE,
    )
    assert id_claims["nonce"] == "n-0S6_WzA2Mj"
    assert refresh(client, body["refresh_token"], client_id="jip").status_code == 200


def test_code_is_single_use_and_replay_revokes_its_tokens(client: TestClient, alice: str) -> None:
    verifier = secrets.token_urlsafe(48)
    code = log_in_in_browser(client, verifier)["code"][0]
    first = exchange(client, code, verifier)
    assert first.status_code == 200
    second = exchange(client, code, verifier)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert refresh(client, first.json()["refresh_token"], client_id="jip").status_code == 400


def test_code_expires_after_60_seconds(client: TestClient, issuer: Issuer, alice: str) -> None:
    verifier = secrets.token_urlsafe(48)
    code = log_in_in_browser(client, verifier)["code"][0]
    shift_clock(issuer, timedelta(seconds=61))
    response = exchange(client, code, verifier)
    assert response.status_code == 400
    assert "expired" in response.json()["error_description"]


def test_wrong_code_verifier_is_refused(client: TestClient, alice: str) -> None:
    verifier = secrets.token_urlsafe(48)
    code = log_in_in_browser(client, verifier)["code"][0]
    response = exchange(client, code, secrets.token_urlsafe(48))
    assert response.status_code == 400
    assert "code_verifier" in response.json()["error_description"]
    assert exchange(client, code, verifier, redirect_uri=f"{SITE}/elsewhere").status_code == 400
    assert exchange(client, code, verifier).status_code == 200  # the real client still can


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(client: TestClient) -> None:
    params = authorize_params(secrets.token_urlsafe(48), redirect_uri="https://evil.example/cb")
    response = client.get("/auth/authorize", params=params, follow_redirects=False)
    assert response.status_code == 400
    assert "not registered" in response.text


def test_authorize_without_pkce_redirects_back_with_an_error(client: TestClient) -> None:
    params = authorize_params(secrets.token_urlsafe(48), code_challenge_method="plain")
    response = client.get("/auth/authorize", params=params, follow_redirects=False)
    assert response.status_code == 303
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert query["state"] == ["xyz-state"]


def test_wrong_password_in_the_form_shows_the_form_again(client: TestClient, alice: str) -> None:
    params = authorize_params(secrets.token_urlsafe(48), state="<script>alert(1)</script>")
    response = client.post(
        "/auth/authorize",
        data={**params, "username": "alice", "password": "wrong"},
        follow_redirects=False,
    )
    assert response.status_code == 401
    assert "invalid username or password" in response.text
    assert "<script>alert(1)</script>" not in response.text  # escaped


def test_cli_client_may_redirect_to_any_loopback_port(client: TestClient, alice: str) -> None:
    verifier = secrets.token_urlsafe(48)
    query = log_in_in_browser(
        client, verifier, client_id="jip-cli", redirect_uri="http://127.0.0.1:53117/cb"
    )
    response = client.post(
        "/auth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "jip-cli",
            "code": query["code"][0],
            "redirect_uri": "http://127.0.0.1:53117/cb",
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 200
    web = authorize_params(verifier, redirect_uri="http://127.0.0.1:53117/cb")
    assert client.get("/auth/authorize", params=web).status_code == 400  # not for the web client


# -- discovery and keys ----------------------------------------------------------------------
def test_discovery_names_this_sites_endpoints(client: TestClient) -> None:
    config = client.get("/.well-known/openid-configuration").json()
    assert config["issuer"] == SITE
    assert config["token_endpoint"] == f"{SITE}/auth/token"
    assert config["authorization_endpoint"] == f"{SITE}/auth/authorize"
    assert config["jwks_uri"] == f"{SITE}/auth/jwks"
    assert config["code_challenge_methods_supported"] == ["S256"]


def test_jwks_verifies_issued_tokens(client: TestClient, alice: str) -> None:
    jwks = client.get("/auth/jwks").json()
    token = tokens_for(client, alice)["access_token"]
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="jip", issuer=SITE)
    assert claims["preferred_username"] == "alice"
    assert "d" not in jwks["keys"][0]  # public parts only


def test_signing_key_is_created_once_readable_by_its_owner_only(tmp_path: Any) -> None:
    keys = SigningKeys(tmp_path / "keys")
    kid = keys.kid
    assert keys.path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert SigningKeys(tmp_path / "keys").kid == kid  # reloaded, not regenerated


def test_signing_key_readable_by_others_is_refused(tmp_path: Any) -> None:
    keys = SigningKeys(tmp_path / "keys")
    keys.private_key  # noqa: B018
    keys.path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        SigningKeys(tmp_path / "keys").private_key  # noqa: B018


def test_access_token_times_follow_the_given_clock(
    issuer: Issuer, runtime: Runtime, alice: str
) -> None:
    fixed = datetime(2030, 1, 1, tzinfo=now_utc().tzinfo)
    token = issuer.signer.access_token(
        runtime.identity.users.get(alice), now=fixed, client_id="jip-cli"
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iat"] == int(fixed.timestamp())


def test_admin_tokens_carry_the_admin_role(client: TestClient, runtime: Runtime) -> None:
    add_user(runtime, "root", admin=True)
    me = client.get("/api/me", headers=auth_for(client, "root")).json()
    assert me["is_admin"] is True


def test_logout_with_an_expired_bearer_still_revokes_the_refresh_token(
    client: TestClient, issuer: Issuer, alice: str
) -> None:
    shift_clock(issuer, -timedelta(hours=2))
    tokens = tokens_for(client, alice)
    issuer.clock = now_utc
    response = client.post(
        "/auth/logout",
        data={"refresh_token": tokens["refresh_token"]},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
    assert refresh(client, tokens["refresh_token"]).status_code == 400


def test_browser_logout_returns_to_registered_uris_only(client: TestClient) -> None:
    back = client.get(
        "/auth/logout",
        params={"post_logout_redirect_uri": f"{SITE}/", "state": "s1"},
        follow_redirects=False,
    )
    assert back.status_code == 303
    assert back.headers["location"] == f"{SITE}/?state=s1"
    elsewhere = client.get(
        "/auth/logout",
        params={"post_logout_redirect_uri": "https://evil.example/"},
        follow_redirects=False,
    )
    assert elsewhere.status_code == 200
    assert "signed out" in elsewhere.text
