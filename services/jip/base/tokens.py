"""The tokens of the embedded issuer: RS256 JWTs with the claims Keycloak issues.

Access tokens carry ``typ: Bearer`` (header ``typ: at+jwt``, RFC 9068), the audience
``auth.audience``, ``preferred_username``, ``realm_access.roles`` (``admin`` for site
admins) and ``groups`` (``/projects/<project>/<role>``), which :mod:`jip.base.auth`
reads back. ID tokens (``typ: ID``) are for the browser client and are refused as
access tokens.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from jip.base.auth import ADMIN_ROLE, project_groups
from jip.base.keys import SigningKeys
from jip.base.ledger import VERSION_CLAIM
from jip.base.users import UserInfo
from jip.config import AuthSettings


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    scope: str
    id_token: str | None = None

    def as_response(self) -> dict[str, Any]:
        """The token endpoint's JSON body (RFC 6749 §5.1)."""
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "refresh_expires_in": self.refresh_expires_in,
            "scope": self.scope,
        }
        if self.id_token is not None:
            body["id_token"] = self.id_token
        return body


class TokenSigner:
    def __init__(self, *, issuer: str, settings: AuthSettings, keys: SigningKeys) -> None:
        self.issuer = issuer
        self.settings = settings
        self.keys = keys

    def access_token(
        self,
        user: UserInfo,
        *,
        now: datetime,
        client_id: str,
        scope: str = "",
        session_id: str = "",
    ) -> str:
        """An RS256 access token for ``user``, valid ``auth.access_token_ttl_s`` from ``now``."""
        roles = sorted({role.value for role in user.projects.values()})
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.username,
            "aud": self.settings.audience,
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + self.settings.access_token_ttl_s,
            "jti": uuid.uuid4().hex,
            "typ": "Bearer",
            "azp": client_id,
            "scope": scope,
            "sid": session_id,
            "preferred_username": user.username,
            "realm_access": {"roles": [ADMIN_ROLE, *roles] if user.is_admin else roles},
            "groups": project_groups(user.projects),
            VERSION_CLAIM: user.token_version,
        }
        return self._sign(claims, typ="at+jwt")

    def id_token(
        self,
        user: UserInfo,
        *,
        now: datetime,
        client_id: str,
        session_id: str,
        nonce: str | None,
    ) -> str:
        """An OpenID Connect ID token (Core §2) for the browser client."""
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.username,
            "aud": client_id,
            "azp": client_id,
            "iat": issued,
            "auth_time": issued,
            "exp": issued + self.settings.access_token_ttl_s,
            "typ": "ID",
            "sid": session_id,
            "preferred_username": user.username,
        }
        if nonce:
            claims["nonce"] = nonce
        return self._sign(claims, typ="JWT")

    def machine_token(
        self, subject: str, extra: dict[str, Any], *, now: datetime, ttl_s: int
    ) -> tuple[str, str]:
        """A token for the site's own machinery (a run, a service) and its ``jti``."""
        jti = uuid.uuid4().hex
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.settings.audience,
            "iat": issued,
            "exp": issued + ttl_s,
            "jti": jti,
            "typ": "Bearer",
            "preferred_username": subject,
            **extra,
        }
        return self._sign(claims, typ="at+jwt"), jti

    def _sign(self, claims: dict[str, Any], *, typ: str) -> str:
        return jwt.encode(
            claims,
            self.keys.private_key,
            algorithm="RS256",
            headers={"kid": self.keys.kid, "typ": typ},
        )
