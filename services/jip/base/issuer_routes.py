"""HTTP face of the embedded issuer: discovery, JWKS, token, authorize (login form), logout.

These routes are public (they are how a caller gets a token). Token endpoint errors use
the OAuth 2.0 shape ``{"error": ..., "error_description": ...}`` (RFC 6749 §5.2); a login
refused by the rate limit is a 429 with ``Retry-After``.
"""

from __future__ import annotations

from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel

from jip.base.deps import ClientIpDep, IssuerDep, OptionalUserDep
from jip.base.issuer import AuthorizeRequest, Issuer, OAuthError
from jip.base.throttle import LoginBusy, TooManyAttempts

router = APIRouter(tags=["auth"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The login page may not be framed (clickjacking) and loads nothing from elsewhere.
PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
FormField = Annotated[str, Form()]


@router.get("/.well-known/openid-configuration")
def openid_configuration(issuer: IssuerDep) -> dict[str, Any]:
    """OpenID Provider metadata of this site's issuer."""
    return issuer.discovery()


@router.get("/auth/jwks")
def jwks(issuer: IssuerDep) -> dict[str, Any]:
    """The public keys that sign this site's tokens (RFC 7517)."""
    return issuer.jwks()


@router.post("/auth/token")
def token(
    issuer: IssuerDep,
    ip: ClientIpDep,
    grant_type: FormField = "",
    client_id: FormField = "",
    username: FormField = "",
    password: FormField = "",
    scope: FormField = "",
    refresh_token: FormField = "",
    code: FormField = "",
    redirect_uri: FormField = "",
    code_verifier: FormField = "",
) -> Response:
    """Issue tokens (form-encoded): grant_type password, refresh_token or authorization_code."""
    try:
        if grant_type == "password":
            _need(username=username, password=password)
            tokens = issuer.password_grant(
                username, password, client_id=client_id, scope=scope, client_ip=ip
            )
        elif grant_type == "refresh_token":
            _need(refresh_token=refresh_token)
            tokens = issuer.refresh_grant(refresh_token, client_id=client_id, client_ip=ip)
        elif grant_type == "authorization_code":
            _need(code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)
            tokens = issuer.code_grant(
                code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier,
                client_id=client_id,
                client_ip=ip,
            )
        else:
            raise OAuthError("unsupported_grant_type", f"unsupported grant_type {grant_type!r}")
    except (TooManyAttempts, LoginBusy) as exc:
        return JSONResponse(
            {"error": "temporarily_unavailable", "error_description": str(exc)},
            status_code=429 if isinstance(exc, TooManyAttempts) else 503,
            headers={**NO_STORE, "Retry-After": str(exc.retry_after_s)},
        )
    except OAuthError as exc:
        return JSONResponse(
            {"error": exc.error, "error_description": str(exc)},
            status_code=401 if exc.error == "invalid_client" else 400,
            headers=NO_STORE,
        )
    return JSONResponse(tokens.as_response(), headers=NO_STORE)


def _need(**fields: str) -> None:
    missing = [name for name, value in fields.items() if not value]
    if missing:
        raise OAuthError("invalid_request", f"missing form field(s): {', '.join(missing)}")


class AuthorizeParams(BaseModel):
    """An authorization request as the browser sends it: query on GET, form on POST.

    Missing parameters are empty, so that :meth:`Issuer.check_authorize` names them.
    """

    client_id: str = ""
    redirect_uri: str = ""
    response_type: str = ""
    code_challenge: str = ""
    code_challenge_method: str = ""
    state: str = ""
    scope: str = ""
    nonce: str = ""

    def request(self) -> AuthorizeRequest:
        return AuthorizeRequest(**self.model_dump(include=set(AuthorizeParams.model_fields)))


class LoginForm(AuthorizeParams):
    """The login page's form: the request it was shown for, and the credentials."""

    username: str = ""
    password: str = ""


@router.get("/auth/authorize", response_class=HTMLResponse)
def authorize_form(issuer: IssuerDep, params: Annotated[AuthorizeParams, Query()]) -> Response:
    """The login page of the browser flow (authorization code with PKCE)."""
    request = params.request()
    try:
        issuer.check_authorize(request)
    except OAuthError as exc:
        return _refuse(issuer, request, exc)
    return _page(request)


@router.post("/auth/authorize", response_class=HTMLResponse)
def authorize_submit(
    issuer: IssuerDep, ip: ClientIpDep, form: Annotated[LoginForm, Form()]
) -> Response:
    """Check the login form; redirect to ``redirect_uri`` with a code, or show the error."""
    request, username = form.request(), form.username
    try:
        issuer.check_authorize(request)
    except OAuthError as exc:
        return _refuse(issuer, request, exc)
    try:
        location = issuer.authorize(request, username, form.password, client_ip=ip)
    except (TooManyAttempts, LoginBusy) as exc:
        status = 429 if isinstance(exc, TooManyAttempts) else 503
        page = _page(request, username=username, error=str(exc), status=status)
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    except OAuthError as exc:
        return _page(request, username=username, error=str(exc), status=401)
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


@router.post("/auth/logout", status_code=204)
def logout(
    issuer: IssuerDep,
    ip: ClientIpDep,
    user: OptionalUserDep,
    refresh_token: FormField = "",
    token: FormField = "",
) -> Response:
    """End the session of ``refresh_token`` (``token`` as in RFC 7009); with only a bearer
    token, end every session of its user."""
    try:
        issuer.logout(refresh_token=refresh_token or token or None, user=user, client_ip=ip)
    except OAuthError as exc:
        return JSONResponse(
            {"error": exc.error, "error_description": str(exc)}, status_code=400, headers=NO_STORE
        )
    return Response(status_code=204, headers=NO_STORE)


@router.get("/auth/logout", response_class=HTMLResponse)
def logout_page(
    issuer: IssuerDep,
    client_id: Annotated[str, Query()] = "jip",
    post_logout_redirect_uri: Annotated[str, Query()] = "",
    state: Annotated[str, Query()] = "",
) -> Response:
    """Browser logout (OpenID RP-Initiated Logout): back to the app if its URI is registered.

    The issuer keeps no browser session, so nothing else ends here; the app revokes its
    refresh token with a POST to this endpoint.
    """
    location = issuer.post_logout_redirect(client_id, post_logout_redirect_uri, state)
    if location:
        return RedirectResponse(location, status_code=303, headers=NO_STORE)
    return HTMLResponse(
        _html("Signed out", "<p>You are signed out of JIP.</p>"), headers=PAGE_HEADERS
    )


def _refuse(issuer: Issuer, request: AuthorizeRequest, error: OAuthError) -> Response:
    """Errors go back to a trusted redirect URI (RFC 6749 §4.1.2.1), else onto the page."""
    if error.redirectable:
        return RedirectResponse(issuer.error_redirect(request, error), status_code=303)
    body = _html("Sign-in request refused", f'<p class="error">{escape(str(error))}</p>')
    return HTMLResponse(body, status_code=400, headers=PAGE_HEADERS)


def _page(
    request: AuthorizeRequest, *, username: str = "", error: str = "", status: int = 200
) -> HTMLResponse:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{escape(value)}">'
        for name, value in (
            ("client_id", request.client_id),
            ("redirect_uri", request.redirect_uri),
            ("response_type", request.response_type),
            ("code_challenge", request.code_challenge),
            ("code_challenge_method", request.code_challenge_method),
            ("state", request.state),
            ("scope", request.scope),
            ("nonce", request.nonce),
        )
    )
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    form = (
        f'{message}<form method="post" action="authorize">{hidden}'
        '<label>Username<input name="username" autocomplete="username" required autofocus'
        f' value="{escape(username)}"></label>'
        '<label>Password<input name="password" type="password"'
        ' autocomplete="current-password" required></label>'
        '<button type="submit">Sign in</button></form>'
    )
    return HTMLResponse(_html("Sign in to JIP", form), status_code=status, headers=PAGE_HEADERS)


def _html(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;background:#f4f5f7;display:flex;"
        "justify-content:center;padding-top:10vh;margin:0}"
        "main{background:#fff;padding:2rem;border-radius:8px;min-width:18rem;"
        "box-shadow:0 1px 4px rgba(0,0,0,.15)}"
        "label{display:block;margin:.8rem 0}input{display:block;width:100%;padding:.4rem;"
        "margin-top:.2rem;box-sizing:border-box}button{width:100%;padding:.5rem;margin-top:.5rem}"
        ".error{color:#b00020}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
