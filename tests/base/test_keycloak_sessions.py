"""A user disabled in Keycloak, or taken out of a group, counts at once-ish, not at expiry.

Against the real Keycloak (deploy/keycloak-test.sh): the site checks each token's session
at Keycloak's userinfo endpoint at most every ``keycloak.recheck_s`` seconds (small here),
so the same, unexpired token is refused after the user is disabled, and a group removed
in Keycloak takes its project role away, once the window has passed. When Keycloak cannot
be reached, tokens hold for ``keycloak.unreachable_grace_s``, then are refused.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from tests.base.keycloak_server import (
    add_user,
    password_grant,
    set_enabled,
)
from tests.base.keycloak_site import Realm, site_on_new_realm

from jip.base.keycloak_sessions import KeycloakSessions, sessions_for, userinfo_url
from jip.config import Settings
from jip.errors import Unauthorized, Unavailable

RECHECK_S = 1.5


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realm]:
    data_dir = tmp_path_factory.mktemp("kc") / "data"
    with site_on_new_realm(data_dir, "sessions", recheck_s=RECHECK_S) as site:
        yield site


def wait_for_the_window() -> None:
    """Long enough for any session answer cached before now to be asked again."""
    time.sleep(RECHECK_S + 0.2)


def test_a_disabled_users_token_is_refused_after_the_window(realm: Realm) -> None:
    user_id = add_user(realm.admin, "dana", groups=["/projects/lung/researcher"])
    token = realm.token("dana")
    assert realm.me(token).status_code == 200

    set_enabled(realm.admin, user_id, False)
    wait_for_the_window()

    refused = realm.me(token)
    assert refused.status_code == 401
    assert "log in again" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert (
        realm.client.get(
            "/api/meta/cohorts", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 401
    )
    assert password_grant(realm.server, realm.name, "dana").status_code in (400, 401)


def test_an_enabled_user_is_unaffected(realm: Realm) -> None:
    add_user(realm.admin, "eve", groups=["/projects/brain/viewer"])
    token = realm.token("eve")
    assert realm.me(token).status_code == 200
    wait_for_the_window()
    for _ in range(3):  # asked again, and then from the cache
        answer = realm.me(token)
        assert answer.status_code == 200
        assert answer.json()["projects"] == {"brain": "viewer"}


def test_a_site_admin_stays_admin_after_the_recheck(realm: Realm) -> None:
    add_user(realm.admin, "ada", realm_roles=["admin"])
    token = realm.token("ada")
    wait_for_the_window()
    assert realm.me(token).json()["is_admin"] is True
    user = realm.runtime.identity.authenticator.authenticate(token)  # from the cache
    assert user.is_admin


def test_a_lost_admin_role_counts_after_the_window(realm: Realm) -> None:
    user_id = add_user(realm.admin, "ann", realm_roles=["admin"])
    token = realm.token("ann")
    assert realm.me(token).json()["is_admin"] is True
    realm.admin.delete_realm_roles_of_user(user_id, [realm.admin.get_realm_role("admin")])
    wait_for_the_window()
    assert realm.me(token).json()["is_admin"] is False


def test_a_session_ended_in_keycloak_is_refused_after_the_window(realm: Realm) -> None:
    user_id = add_user(realm.admin, "sol", groups=["/projects/lung/viewer"])
    token = realm.token("sol")
    assert realm.me(token).status_code == 200
    realm.admin.user_logout(user_id)  # admin console: Sessions -> Sign out
    wait_for_the_window()
    assert realm.me(token).status_code == 401


def test_a_removed_group_takes_its_project_away_on_the_next_request(realm: Realm) -> None:
    user_id = add_user(
        realm.admin, "gus", groups=["/projects/lung/researcher", "/projects/brain/viewer"]
    )
    token = realm.token("gus")
    assert realm.me(token).json()["projects"] == {"lung": "researcher", "brain": "viewer"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert "/projects/lung/researcher" in claims["groups"]  # the token keeps saying so

    lung = realm.admin.get_group_by_path("/projects/lung/researcher")["id"]
    realm.admin.group_user_remove(user_id, lung)
    wait_for_the_window()

    assert realm.me(token).json()["projects"] == {"brain": "viewer"}
    realm.admin.group_user_remove(
        user_id, realm.admin.get_group_by_path("/projects/brain/viewer")["id"]
    )
    wait_for_the_window()
    assert realm.me(token).json()["projects"] == {}


def test_recheck_zero_asks_keycloak_on_every_request(realm: Realm) -> None:
    user_id = add_user(realm.admin, "hal", groups=["/projects/lung/viewer"])
    token = realm.token("hal")
    sessions = KeycloakSessions(sessions_for(realm.settings).url, recheck_s=0)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert sessions.check(token, claims)["groups"] == ["/projects/lung/viewer"]
    set_enabled(realm.admin, user_id, False)
    with pytest.raises(Unauthorized, match="log in again"):
        sessions.check(token, claims)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/realms/x/protocol/openid-connect/userinfo"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_unreachable_keycloak_is_tolerated_for_the_grace_period_then_refused(
    realm: Realm,
) -> None:
    add_user(realm.admin, "ida", groups=["/projects/brain/owner"])
    token = realm.token("ida")
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    clock = Clock()
    reachable = sessions_for(realm.settings).url
    sessions = KeycloakSessions(reachable, recheck_s=0, unreachable_grace_s=30, clock=clock)
    assert sessions.check(token, claims)["groups"] == ["/projects/brain/owner"]

    sessions.url = closed_port_url()  # Keycloak goes away
    clock.now += 10
    assert sessions.check(token, claims)["groups"] == ["/projects/brain/owner"]  # last known
    clock.now += 25  # 25 s since the first failure: within the grace
    assert sessions.check(token, claims)["groups"] == ["/projects/brain/owner"]
    clock.now += 10  # 35 s: beyond it, fail closed
    with pytest.raises(Unavailable, match="unreachable_grace_s"):
        sessions.check(token, claims)

    sessions.url = reachable  # back: answered again at once
    assert sessions.check(token, claims)["groups"] == ["/projects/brain/owner"]


def test_a_never_checked_session_during_an_outage_has_only_its_tokens_claims() -> None:
    clock = Clock()
    sessions = KeycloakSessions(closed_port_url(), unreachable_grace_s=5, clock=clock)
    claims = {"sub": "u1", "sid": "s1", "groups": ["/projects/lung/viewer"]}
    assert sessions.check("t", claims) == claims
    clock.now += 6
    with pytest.raises(Unavailable, match="refusing until it answers"):
        sessions.check("t", {**claims, "sid": "s2"})


def test_userinfo_is_asked_where_the_keys_come_from() -> None:
    public = "https://jip.example/keycloak/realms/jip"
    inside = "http://jip-keycloak:8080/keycloak/realms/jip"
    assert userinfo_url(public) == f"{public}/protocol/openid-connect/userinfo"
    assert (
        userinfo_url(public, f"{inside}/protocol/openid-connect/certs")
        == f"{inside}/protocol/openid-connect/userinfo"
    )
    assert (
        userinfo_url(public, "https://keys.example/jwks.json")
        == f"{public}/protocol/openid-connect/userinfo"
    )


def test_the_session_check_follows_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        auth={
            "issuer_url": "https://jip.example/keycloak/realms/jip",
            "jwks_url": "http://kc:8080/keycloak/realms/jip/protocol/openid-connect/certs",
        },
        keycloak={"recheck_s": 0, "unreachable_grace_s": 15},
    )
    sessions = sessions_for(settings)
    assert (sessions.recheck_s, sessions.grace_s) == (0, 15)
    assert sessions.url == "http://kc:8080/keycloak/realms/jip/protocol/openid-connect/userinfo"
    settings.keycloak.userinfo_url = "https://jip.example/keycloak/realms/jip/userinfo"
    assert sessions_for(settings).url == settings.keycloak.userinfo_url
    with pytest.raises(ValueError, match="embedded issuer"):
        sessions_for(Settings(data_dir=tmp_path))
