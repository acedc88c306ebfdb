"""The cluster shape's browser login, end to end: JIP's UI sends the browser to
Keycloak's own login page (authorization code + PKCE), and back as that user.

A real Keycloak (deploy/keycloak-test.sh) with a realm from `bootstrap_realm`, a real
JIP site on loopback with ``auth.issuer_url`` set, Debian's Chromium through Playwright.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from keycloak import KeycloakAdmin
from tests.base.keycloak_server import (
    PASSWORD,
    KeycloakServer,
    add_user,
    cluster_settings,
    keycloak_server,
    new_realm,
    set_enabled,
)
from tests.support.network import free_port
from tests.support.servers import serve_in_thread

from jip.app import build_app
from jip.runtime import build_runtime
from jip.ui.session import REFRESH_COOKIE, SESSION_COOKIE


@dataclass
class KeycloakSite:
    origin: str
    server: KeycloakServer
    realm: str
    admin: KeycloakAdmin

    @property
    def login_page(self) -> re.Pattern[str]:
        issuer = re.escape(self.server.issuer(self.realm))
        return re.compile(rf"^{issuer}/(protocol/openid-connect/auth|login-actions/)")


@pytest.fixture(scope="module")
def kc_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeycloakSite]:
    server = keycloak_server()
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    realm = new_realm("browser")
    settings = cluster_settings(server, realm, tmp_path_factory.mktemp("kc-ui") / "data", origin)
    admin = server.bootstrap(settings, ["lung", "brain", "heart"])
    add_user(admin, "rita", groups=["/projects/lung/researcher", "/projects/brain/viewer"])
    runtime = build_runtime(settings)
    for project in ("lung", "brain", "heart"):
        runtime.identity.projects.create(project)
    try:
        with serve_in_thread(build_app(runtime), port=port):
            yield KeycloakSite(origin, server, realm, admin)
    finally:
        runtime.close()


def log_in(page: Any, site: KeycloakSite, username: str) -> None:
    """From JIP's start page through Keycloak's own login form."""
    from playwright.sync_api import expect

    page.goto(f"{site.origin}/")
    expect(page).to_have_url(site.login_page)
    assert "code_challenge_method=S256" in page.url
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#kc-login")


def expire_session(context: Any, site: KeycloakSite) -> None:
    """Make the session's access token look expired, as after access_token_ttl_s: the
    next page renews it with the refresh cookie (the token's signature is not JIP's,
    so only a renewal can bring the page back)."""
    stale = jwt.encode(
        {"sub": "x", "exp": int(time.time()) - 60}, "not-this-sites-key-" * 2, "HS256"
    )
    context.add_cookies([{"name": SESSION_COOKIE, "value": stale, "url": site.origin}])


def test_login_goes_through_keycloak_and_lands_with_the_users_projects(
    kc_site: KeycloakSite, browser: Any, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    log_in(page, kc_site, "rita")
    expect(page).to_have_url(f"{kc_site.origin}/ui/explore")
    expect(page.locator(".who")).to_have_text("rita")
    page.goto(f"{kc_site.origin}/ui/cohorts")
    options = page.locator("select[name=project] option").all_inner_texts()
    assert options == ["brain", "lung"]  # not heart: rita is in no group of it
    page.screenshot(path=str(screenshots / "keycloak-login.png"), full_page=True)

    expire_session(context, kc_site)  # an expired session of an enabled user is renewed
    page.goto(f"{kc_site.origin}/ui/explore")
    expect(page).to_have_url(f"{kc_site.origin}/ui/explore")
    expect(page.locator(".who")).to_have_text("rita")

    page.click("form.logout button")  # ends Keycloak's session too: its form comes again
    expect(page).to_have_url(kc_site.login_page)
    expect(page.locator("#kc-login")).to_be_visible()
    assert SESSION_COOKIE not in {c["name"] for c in context.cookies(kc_site.origin)}
    context.close()


def test_a_user_disabled_in_keycloak_cannot_log_in(kc_site: KeycloakSite, browser: Any) -> None:
    from playwright.sync_api import expect

    user_id = add_user(kc_site.admin, "dora", groups=["/projects/lung/viewer"])
    set_enabled(kc_site.admin, user_id, False)
    context = browser.new_context()
    page = context.new_page()
    log_in(page, kc_site, "dora")
    expect(page).to_have_url(kc_site.login_page)
    expect(page.locator("#input-error, .alert-error, .kc-feedback-text").first).to_contain_text(
        re.compile("disabled", re.IGNORECASE)
    )
    assert SESSION_COOKIE not in {c["name"] for c in context.cookies(kc_site.origin)}
    context.close()


def test_a_session_is_not_renewed_after_the_user_is_disabled(
    kc_site: KeycloakSite, browser: Any
) -> None:
    from playwright.sync_api import expect

    user_id = add_user(kc_site.admin, "elly", groups=["/projects/lung/viewer"])
    context = browser.new_context()
    page = context.new_page()
    log_in(page, kc_site, "elly")
    expect(page.locator(".who")).to_have_text("elly")
    assert REFRESH_COOKIE in {c["name"] for c in context.cookies(kc_site.origin)}

    set_enabled(kc_site.admin, user_id, False)
    expire_session(context, kc_site)
    page.goto(f"{kc_site.origin}/ui/explore")
    expect(page).to_have_url(kc_site.login_page)  # Keycloak refused the refresh
    assert SESSION_COOKIE not in {c["name"] for c in context.cookies(kc_site.origin)}
    context.close()
