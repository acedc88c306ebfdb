"""The embedded OIDC issuer: logs local users in and issues their tokens.

Grants (RFC 6749), all for public clients (``jip`` the web UI, ``jip-cli`` the CLI):

- ``password``: username and password, for ``jip login``;
- ``authorization_code`` with PKCE S256 (RFC 7636), for the browser: ``/auth/authorize``
  shows a login form and redirects back with a code, single-use and valid 60 s;
- ``refresh_token`` with rotation: every use revokes the presented token and issues the
  next one of its family; a revoked token coming back revokes the whole family.

Every password check (logins and password changes) goes through the login throttle
(:mod:`jip.base.throttle`) and is recorded in the audit log. Tokens are minted by :mod:`jip.base.tokens`; the refresh
tokens and their families are kept by :mod:`jip.base.refresh_tokens`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from jip.base.audit import AuditAction, AuditLog
from jip.base.auth import CurrentUser
from jip.base.keys import SigningKeys
from jip.base.ledger import TokenLedger
from jip.base.refresh_tokens import TokenFamilies, digest, rowcount
from jip.base.schema import AuthorizationCode, User, as_utc, now_utc
from jip.base.throttle import LoginThrottle
from jip.base.tokens import TokenSet, TokenSigner
from jip.base.users import UserInfo, Users, check_password_policy
from jip.config import AuthSettings
from jip.errors import Invalid, Unauthorized

WEB_CLIENT = "jip"
CLI_CLIENT = "jip-cli"
CLIENTS = frozenset({WEB_CLIENT, CLI_CLIENT})
CODE_TTL_S = 60
SUPPORTED_SCOPES = ("openid", "profile")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
CODE_CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
CODE_VERIFIER_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")


class OAuthError(Invalid):
    """An error of the OAuth 2.0 protocol (RFC 6749 §4.1.2.1, §5.2), named by ``error``."""

    def __init__(self, error: str, description: str, *, redirectable: bool = True) -> None:
        super().__init__(description)
        self.error = error
        # False when the redirect URI itself is untrusted: show the error, never redirect.
        self.redirectable = redirectable


@dataclass(frozen=True)
class AuthorizeRequest:
    """The parameters of an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3)."""

    client_id: str
    redirect_uri: str
    code_challenge: str = ""
    code_challenge_method: str = ""
    response_type: str = "code"
    state: str = ""
    scope: str = ""
    nonce: str = ""


def s256(verifier: str) -> str:
    """The S256 code challenge of a PKCE code verifier (RFC 7636 §4.2)."""
    hashed = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(hashed).decode().rstrip("=")


def _scope(requested: str) -> str:
    return " ".join(s for s in SUPPORTED_SCOPES if s in requested.split())


def _with_query(uri: str, **params: str) -> str:
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


class Issuer:
    """Token issuance over the identity tables; ``issuer`` is the ``iss`` of its tokens."""

    def __init__(
        self,
        *,
        issuer: str,
        settings: AuthSettings,
        engine: Engine,
        users: Users,
        audit: AuditLog,
        keys: SigningKeys,
    ) -> None:
        self.issuer = issuer
        self.settings = settings
        self.engine = engine
        self.users = users
        self.audit = audit
        self.keys = keys
        self.signer = TokenSigner(issuer=issuer, settings=settings, keys=keys)
        self.throttle = LoginThrottle(engine, audit, settings)
        self.ledger = TokenLedger(engine)
        self.families = TokenFamilies(
            engine=engine, settings=settings, signer=self.signer, audit=audit
        )
        self.clock: Callable[[], datetime] = now_utc

    # -- discovery -------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata (OpenID Connect Discovery 1.0 §3)."""
        base = self.issuer
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/auth/authorize",
            "token_endpoint": f"{base}/auth/token",
            "jwks_uri": f"{base}/auth/jwks",
            "end_session_endpoint": f"{base}/auth/logout",
            "revocation_endpoint": f"{base}/auth/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "password"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": list(SUPPORTED_SCOPES),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "preferred_username", "groups"],
            "authorization_response_iss_parameter_supported": True,
        }

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()

    # -- grants ------------------------------------------------------------------------------
    def password_grant(
        self, username: str, password: str, *, client_id: str, scope: str, client_ip: str
    ) -> TokenSet:
        self._check_client(client_id)
        info = self._login(username, password, client_ip=client_ip, client_id=client_id)
        with Session(self.engine) as session, session.begin():
            user = self._user_row(session, info.username)
            return self.families.issue(
                session,
                user,
                client_id=client_id,
                scope=_scope(scope),
                family=uuid.uuid4().hex,
                now=self.clock(),
            )

    def refresh_grant(self, refresh_token: str, *, client_id: str, client_ip: str) -> TokenSet:
        self._check_client(client_id)
        now = self.clock()
        reused: tuple[int, str] | None = None  # (user id, family) of a replayed token
        with Session(self.engine) as session, session.begin():
            row = self.families.find(session, refresh_token)
            if row is None or row.client_id != client_id:
                raise OAuthError("invalid_grant", "unknown refresh token")
            if not self.families.claim(session, row, now=now):
                self.families.revoke_family(session, row.family, now=now)
                reused = (row.user_id, row.family)
            elif as_utc(row.expires_at) <= now:
                raise OAuthError("invalid_grant", "refresh token expired: log in again")
            else:
                user = session.get(User, row.user_id)
                if user is None or user.disabled:
                    raise OAuthError("invalid_grant", "the account is disabled")
                return self.families.issue(
                    session, user, client_id=client_id, scope=row.scope, family=row.family, now=now
                )
        # Committed the family's revocation above; now tell the caller and the admins.
        assert reused is not None
        self.families.record_reuse(*reused, kind="refresh_token", client_ip=client_ip)
        raise OAuthError("invalid_grant", "refresh token was already used: log in again")

    def check_authorize(self, request: AuthorizeRequest) -> None:
        if request.client_id not in CLIENTS:
            raise OAuthError(
                "invalid_request", f"unknown client_id {request.client_id!r}", redirectable=False
            )
        if not self.redirect_allowed(request.client_id, request.redirect_uri):
            raise OAuthError(
                "invalid_request",
                f"redirect_uri {request.redirect_uri!r} is not registered for this site",
                redirectable=False,
            )
        if request.response_type != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code is supported")
        if request.code_challenge_method != "S256" or not CODE_CHALLENGE_RE.fullmatch(
            request.code_challenge
        ):
            raise OAuthError(
                "invalid_request", "PKCE is required: send code_challenge with method S256"
            )

    def authorize(
        self, request: AuthorizeRequest, username: str, password: str, *, client_ip: str
    ) -> str:
        """Log the user in and return the redirect URI carrying a fresh code."""
        self.check_authorize(request)
        info = self._login(username, password, client_ip=client_ip, client_id=request.client_id)
        code = secrets.token_urlsafe(32)
        with Session(self.engine) as session, session.begin():
            user = self._user_row(session, info.username)
            session.add(
                AuthorizationCode(
                    code_sha256=digest(code),
                    user_id=user.id,
                    client_id=request.client_id,
                    redirect_uri=request.redirect_uri,
                    code_challenge=request.code_challenge,
                    scope=_scope(request.scope),
                    nonce=request.nonce or None,
                    expires_at=self.clock() + timedelta(seconds=CODE_TTL_S),
                )
            )
        return _with_query(request.redirect_uri, code=code, state=request.state, iss=self.issuer)

    def error_redirect(self, request: AuthorizeRequest, error: OAuthError) -> str:
        return _with_query(
            request.redirect_uri,
            error=error.error,
            error_description=str(error),
            state=request.state,
            iss=self.issuer,
        )

    def code_grant(
        self,
        code: str,
        *,
        redirect_uri: str,
        code_verifier: str,
        client_id: str,
        client_ip: str,
    ) -> TokenSet:
        self._check_client(client_id)
        now = self.clock()
        reused: tuple[int, str] | None = None  # (user id, family) of a replayed code
        with Session(self.engine) as session, session.begin():
            row = session.scalar(
                select(AuthorizationCode).where(AuthorizationCode.code_sha256 == digest(code))
            )
            if row is None or row.client_id != client_id or row.redirect_uri != redirect_uri:
                raise OAuthError("invalid_grant", "unknown code, or another client or redirect_uri")
            if not CODE_VERIFIER_RE.fullmatch(code_verifier) or not hmac.compare_digest(
                s256(code_verifier), row.code_challenge
            ):
                raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
            family = uuid.uuid4().hex
            claimed = rowcount(
                session.execute(
                    update(AuthorizationCode)
                    .where(AuthorizationCode.id == row.id, AuthorizationCode.used_at.is_(None))
                    .values(used_at=now, family=family)
                )
            )
            if claimed != 1:
                # RFC 6749 §4.1.2: a code used twice revokes the tokens issued for it.
                session.refresh(row)
                if row.family:
                    self.families.revoke_family(session, row.family, now=now)
                reused = (row.user_id, row.family or "")
            elif as_utc(row.expires_at) <= now:
                raise OAuthError("invalid_grant", "code expired: log in again")
            else:
                user = session.get(User, row.user_id)
                if user is None or user.disabled:
                    raise OAuthError("invalid_grant", "the account is disabled")
                return self.families.issue(
                    session,
                    user,
                    client_id=client_id,
                    scope=row.scope,
                    family=family,
                    now=now,
                    nonce=row.nonce,
                )
        assert reused is not None
        self.families.record_reuse(*reused, kind="authorization_code", client_ip=client_ip)
        raise OAuthError("invalid_grant", "code was already used")

    def logout(
        self, *, refresh_token: str | None, user: CurrentUser | None, client_ip: str
    ) -> None:
        """End the session of ``refresh_token``; with only a bearer user, end all of theirs.

        An unknown refresh token is no error (RFC 7009 §2.2): it is ended either way.
        """
        if refresh_token:
            self.families.end(refresh_token, client_ip=client_ip, now=self.clock())
            return
        if user is None:
            raise OAuthError("invalid_request", "send refresh_token, or a bearer token to log out")
        self.families.end_all(user.username, client_ip=client_ip)

    # -- checks ------------------------------------------------------------------------------
    def redirect_allowed(self, client_id: str, redirect_uri: str) -> bool:
        """The site itself, exact URIs from ``auth.redirect_uris``, and for the CLI any
        loopback port (RFC 8252 §7.3). Fragments are never allowed (RFC 6749 §3.1.2)."""
        parts = urlsplit(redirect_uri)
        if parts.fragment or parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        if redirect_uri in self.settings.redirect_uris:
            return True
        if client_id == CLI_CLIENT and parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
            return True
        site = urlsplit(self.issuer)
        return (parts.scheme, parts.netloc) == (site.scheme, site.netloc)

    def post_logout_redirect(self, client_id: str, redirect_uri: str, state: str) -> str | None:
        """Where the browser goes after logging out, if that is a registered URI."""
        if client_id not in CLIENTS or not self.redirect_allowed(client_id, redirect_uri):
            return None
        return _with_query(redirect_uri, state=state)

    def _check_client(self, client_id: str) -> None:
        if client_id not in CLIENTS:
            raise OAuthError("invalid_client", f"unknown client_id {client_id!r}")

    def change_password(self, username: str, current: str, new: str, *, client_ip: str) -> None:
        """A user's own password change: the current password is checked under the login
        throttle (a stolen access token must not become a password oracle), and a wrong
        one is recorded; every session and access token of the user ends."""
        check_password_policy(new)
        who = username.strip().lower()[:64]
        try:
            self.throttle.attempt(
                who,
                client_ip,
                now=self.clock(),
                check=lambda: self.users.verify(username, current),
            )
        except Unauthorized:
            self.audit.record(
                AuditAction.PASSWORD_CHANGE_FAILED,
                username=who,
                target=who,
                client_ip=client_ip,
                at=self.clock(),
            )
            raise Unauthorized("the current password is wrong") from None
        self.users.set_password(username, new)

    def _login(self, username: str, password: str, *, client_ip: str, client_id: str) -> UserInfo:
        """Verify a password under the rate limit, recording the outcome."""
        who = username.strip().lower()[:64]
        detail = {"client_id": client_id}
        try:
            info = self.throttle.attempt(
                who,
                client_ip,
                now=self.clock(),
                check=lambda: self.users.verify(username, password),
            )
        except Unauthorized:
            self.audit.record(
                AuditAction.LOGIN_FAILED,
                username=who,
                detail=detail,
                client_ip=client_ip,
                at=self.clock(),
            )
            raise OAuthError("invalid_grant", "invalid username or password") from None
        self.audit.record(
            AuditAction.LOGIN, username=who, detail=detail, client_ip=client_ip, at=self.clock()
        )
        return info

    def _user_row(self, session: Session, username: str) -> User:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:  # removed between the password check and now
            raise OAuthError("invalid_grant", "invalid username or password")
        return user
