"""What the page tests share: the browser's login path and the CSRF field of a form."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from fastapi.testclient import TestClient
from tests.base.support import PASSWORD


def browser_login(client: TestClient, username: str, password: str = PASSWORD) -> None:
    """The browser's path: /ui/login → login form → /ui/callback → session cookie."""
    start = client.get("/ui/login", follow_redirects=False)
    assert start.status_code == 303
    authorize = urlsplit(start.headers["location"])
    assert authorize.path == "/auth/authorize"
    form = dict(parse_qsl(authorize.query))
    assert form["code_challenge_method"] == "S256"
    submitted = client.post(
        "/auth/authorize",
        data={**form, "username": username, "password": password},
        follow_redirects=False,
    )
    assert submitted.status_code == 303, submitted.text
    done = client.get(submitted.headers["location"], follow_redirects=False)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/ui/explore"


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "page has no CSRF field"
    return match.group(1)


def flash_of(page: str) -> str:
    match = re.search(r'class="(?:error|meta) flash"[^>]*>([^<]*)<', page)
    assert match, "page shows no message"
    return match.group(1)


def post_form(client: TestClient, url: str, **fields: str) -> str:
    """Post a form as the browser does (CSRF token of the page) and return the page after
    the redirect."""
    csrf = csrf_of(client.get("/ui/admin/projects").text)
    response = client.post(url, data={**fields, "csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client.get(response.headers["location"]).text
