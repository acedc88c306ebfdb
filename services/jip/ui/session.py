"""The browser session of the web UI: login (authorization code + PKCE), cookies, CSRF.

The browser logs in through the embedded issuer (``/auth/authorize``) or, where
``auth.issuer_url`` names Keycloak, through Keycloak's own login page
(:class:`jip.base.keycloak.KeycloakLogin`); the callback exchanges the code (PKCE S256),
checks the access token as every request does, and keeps it in an HttpOnly,
SameSite=Strict cookie. A session is renewed with the refresh token at the same issuer,
so a user disabled in Keycloak gets no new token and lands on the login page again.
State-changing form posts carry a CSRF token that must equal the ``jip_csrf`` cookie
(double submit). Every UI response carries the security headers of :data:`HEADERS`.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from jip.base import WEB_CLIENT, Authenticator, CurrentUser, Issuer, s256
from jip.base import site_url as configured_site_url
from jip.base.keycloak import KeycloakLogin
from jip.errors import Forbidden, JipError, Unauthorized

SESSION_COOKIE = "jip_session"  # the access token
REFRESH_COOKIE = "jip_refresh"  # revoked at logout
ID_COOKIE = "jip_id"  # Keycloak's ID token: the hint that ends its session at logout
CSRF_COOKIE = "jip_csrf"
RENEWED_COOKIE = "jip_renewed"  # breaks a renewal loop when cookies do not stick
LOGIN_COOKIE = "jip_login"  # PKCE verifier and state between login and callback
CSRF_FIELD = "csrf_token"
LOGIN_PATH = "/ui/login"
CALLBACK_PATH = "/ui/callback"

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """No valid session cookie: the page answers with a redirect to the login."""


class UiRoute(APIRoute):
    """Adds the security headers and the CSRF cookie to every UI response, and turns a
    missing or expired session into a redirect to the login; errors listed in
    ``page_errors`` become :meth:`error_response`."""

    page_errors: tuple[type[Exception], ...] = ()

    def error_response(self, request: Request, exc: Exception) -> Response:
        raise exc

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            known = request.cookies.get(CSRF_COOKIE)
            request.state.csrf = known or secrets.token_urlsafe(32)
            try:
                response = await handler(request)
            except LoginRequired:
                response = renew_session(request) or RedirectResponse(LOGIN_PATH, status_code=303)
                if response.headers["location"] == LOGIN_PATH:
                    clear_session(response)
            except self.page_errors as exc:
                response = self.error_response(request, exc)
            for name, value in security_headers(request).items():
                response.headers.setdefault(name, value)
            if request.state.csrf != known and not _clears_session(response):
                set_cookie(request, response, CSRF_COOKIE, request.state.csrf)
            return response

        return guarded


def security_headers(request: Request) -> dict[str, str]:
    """:data:`HEADERS`, with Keycloak's origin allowed as a form target where it logs
    people in: Chromium applies ``form-action`` to the redirects after a form post too
    (logout posts to this site, which redirects to Keycloak's end-session endpoint)."""
    issuer = request.app.state.runtime.settings.auth.issuer_url
    if not issuer or request.app.state.runtime.identity.issuer is not None:
        return HEADERS
    parts = urlsplit(issuer)
    policy = HEADERS["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {parts.scheme}://{parts.netloc}"
    )
    return {**HEADERS, "Content-Security-Policy": policy}


def _clears_session(response: Response) -> bool:
    return any(
        value.startswith(f"{SESSION_COOKIE}=;") or value.startswith(f'{SESSION_COOKIE}="";')
        for value in response.headers.getlist("set-cookie")
    )


def secure(request: Request) -> bool:
    return urlsplit(site_url(request)).scheme == "https"


def site_url(request: Request) -> str:
    issuer: Issuer | None = request.app.state.runtime.identity.issuer
    if issuer is not None:
        return issuer.issuer.rstrip("/")
    settings = request.app.state.runtime.settings
    if settings.auth.public_url:  # behind an ingress: the address Keycloak redirects to
        return configured_site_url(settings)
    return str(request.base_url).rstrip("/")


def external_login(request: Request) -> KeycloakLogin | None:
    """The Keycloak login of a site whose ``auth.issuer_url`` names one, else None."""
    identity = request.app.state.runtime.identity
    settings = request.app.state.runtime.settings
    if identity.issuer is not None or not settings.auth.issuer_url:
        return None
    return KeycloakLogin(settings)


def set_cookie(
    request: Request, response: Response, name: str, value: str, *, path: str = "/"
) -> None:
    response.set_cookie(
        name, value, path=path, httponly=True, samesite="strict", secure=secure(request)
    )


def clear_session(response: Response) -> None:
    for name in (SESSION_COOKIE, REFRESH_COOKIE, CSRF_COOKIE, ID_COOKIE):
        response.delete_cookie(name, path="/")


def session_user(request: Request) -> CurrentUser:
    """The user of the session cookie (FastAPI dependency); LoginRequired without one."""
    authenticator: Authenticator = request.app.state.runtime.identity.authenticator
    token = request.cookies.get(SESSION_COOKIE)
    if authenticator.enabled and not token:
        raise LoginRequired
    try:
        return authenticator.authenticate(token)
    except Unauthorized:
        raise LoginRequired from None


def session_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def check_csrf(request: Request, submitted: str) -> None:
    """Reject a form post whose token is missing or differs from the CSRF cookie."""
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not submitted or not hmac.compare_digest(expected, submitted):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def renew_session(request: Request) -> Response | None:
    """For a page whose access token has expired: new tokens from the refresh cookie, and
    the same page again. None when there is nothing to renew (then: log in)."""
    issuer: Issuer | None = request.app.state.runtime.identity.issuer
    external = external_login(request)
    refresh = request.cookies.get(REFRESH_COOKIE)
    if request.method != "GET" or not (issuer or external) or not refresh:
        return None
    if not _expired(request) or request.cookies.get(RENEWED_COOKIE):
        return None  # invalid for another reason, or renewed a moment ago without effect
    try:
        if external is not None:  # Keycloak refuses a disabled user or a reused token
            body = external.refresh_grant(refresh)
        else:
            assert issuer is not None
            body = issuer.refresh_grant(
                refresh,
                client_id=WEB_CLIENT,
                client_ip=request.client.host if request.client else "",
            ).as_response()
    except JipError:
        return None
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(target, status_code=303)
    set_tokens(request, response, body)
    response.set_cookie(
        RENEWED_COOKIE, "1", max_age=10, httponly=True, samesite="strict", secure=secure(request)
    )
    return response


def _expired(request: Request) -> bool:
    """Whether the session's access token is past its ``exp`` (its signature is checked
    elsewhere: this only decides whether renewing could help)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return False
    exp = claims.get("exp")
    return isinstance(exp, int | float) and exp <= time.time()


def login_redirect(request: Request) -> Response:
    """Start the authorization-code flow: a fresh PKCE verifier and state in a cookie."""
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(24)
    redirect_uri = site_url(request) + CALLBACK_PATH
    external = external_login(request)
    if external is not None:
        location = external.authorize_url(
            redirect_uri=redirect_uri, state=state, code_challenge=s256(verifier)
        )
    else:
        params = {
            "client_id": WEB_CLIENT,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
            "state": state,
            "scope": "openid profile",
        }
        location = f"/auth/authorize?{urlencode(params)}"
    response = RedirectResponse(location, status_code=303)
    # Keycloak: Lax, as the callback is a top-level navigation back from Keycloak's host,
    # which may be another site; the cookie holds only this one login's secret.
    response.set_cookie(
        LOGIN_COOKIE,
        f"{state}.{verifier}",
        path=CALLBACK_PATH,
        httponly=True,
        samesite="strict" if external is None else "lax",
        secure=secure(request),
    )
    return response


def finish_login(request: Request, issuer: Issuer | None, code: str, state: str) -> Response:
    """Exchange the code for tokens and open the session; back to login on any mismatch.

    ``issuer`` is the embedded one, or None where Keycloak logs people in: its tokens are
    checked here as on every request (signature from the realm's JWKS, issuer, audience),
    so a token this site would refuse never opens a session.
    """
    stored_state, _, verifier = request.cookies.get(LOGIN_COOKIE, "").partition(".")
    if not stored_state or not hmac.compare_digest(stored_state, state):
        raise Unauthorized("the login state does not match: start the login again")
    redirect_uri = site_url(request) + CALLBACK_PATH
    external = external_login(request)
    if issuer is not None:
        body = issuer.code_grant(
            code,
            redirect_uri=redirect_uri,
            code_verifier=verifier,
            client_id=WEB_CLIENT,
            client_ip=request.client.host if request.client else "",
        ).as_response()
    elif external is not None:
        body = external.code_grant(code, redirect_uri=redirect_uri, code_verifier=verifier)
        authenticator: Authenticator = request.app.state.runtime.identity.authenticator
        authenticator.authenticate(str(body.get("access_token", "")))
    else:
        raise Unauthorized("this site has no issuer to log in with: set auth.issuer_url")
    response = RedirectResponse("/ui/explore", status_code=303)
    set_tokens(request, response, body)
    request.state.csrf = secrets.token_urlsafe(32)  # a new one per session
    response.delete_cookie(LOGIN_COOKIE, path=CALLBACK_PATH)
    return response


def set_tokens(request: Request, response: Response, body: dict[str, Any]) -> None:
    """The session's cookies from a token response (the ID token only from Keycloak)."""
    set_cookie(request, response, SESSION_COOKIE, str(body["access_token"]))
    if body.get("refresh_token"):
        set_cookie(request, response, REFRESH_COOKIE, str(body["refresh_token"]))
    if body.get("id_token") and external_login(request) is not None:
        set_cookie(request, response, ID_COOKIE, str(body["id_token"]))


def end_session(request: Request) -> Response:
    """Log out: end the session at its issuer (the refresh token's family, or Keycloak's
    session), clear the cookies, and show the issuer's signed-out page or the login."""
    identity = request.app.state.runtime.identity
    refresh = request.cookies.get(REFRESH_COOKIE)
    external = external_login(request)
    id_token = request.cookies.get(ID_COOKIE)
    if external is not None and id_token:  # the browser's session at Keycloak ends too
        location = external.end_session_url(
            id_token=id_token, post_logout_redirect_uri=site_url(request) + LOGIN_PATH
        )
        response = RedirectResponse(location, status_code=303)
    elif external is not None:
        if refresh:
            external.logout(refresh)
        response = RedirectResponse(LOGIN_PATH, status_code=303)
    else:
        if refresh and identity.issuer is not None:
            host = request.client.host if request.client else ""
            identity.issuer.logout(refresh_token=refresh, user=None, client_ip=host)
        response = RedirectResponse("/auth/logout", status_code=303)
    clear_session(response)
    return response
