"""Whether a Keycloak token's session still holds: disabled users and lost groups, at once.

A Keycloak access token stays valid by signature until it expires (the realm's token
lifespan), whatever happens to its user. So the cluster shape asks Keycloak about the
token's session at most every ``keycloak.recheck_s`` seconds (0: on every request),
cached per (subject, session): Keycloak's userinfo endpoint (OpenID Connect Core 1.0
§5.3) answers 401 for a disabled or deleted user and for an ended session, and returns
the user's groups and realm roles as they are *now* (the mappers that
:func:`jip.base.keycloak.bootstrap_realm` sets up put both there). So a user disabled in
Keycloak is refused, and one removed from ``/projects/<p>/<role>`` loses that role, on
their first request after the window, not when the token expires.

Userinfo was chosen over token introspection (it needs a confidential client and its
secret on every pod) and over the admin API's ``enabled`` (admin credentials on every
pod, and no session or group answer). python-keycloak's ``KeycloakOpenID.userinfo`` is
not used: it puts the caller's token on a connection shared by all threads, so two
requests at once could be answered for each other's token.

When Keycloak cannot be reached, tokens are still accepted (with what was last learnt)
for ``keycloak.unreachable_grace_s`` seconds from the first failure, then refused
(fail closed, 503) until Keycloak answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from jip.config import Settings
from jip.errors import Unauthorized, Unavailable

log = logging.getLogger(__name__)

DEFAULT_RECHECK_S = 30.0
DEFAULT_GRACE_S = 60.0
TIMEOUT_S = 5.0
MAX_SESSIONS = 10_000  # cached sessions before the stale ones are dropped
CERTS_SUFFIX = "/protocol/openid-connect/certs"
USERINFO_SUFFIX = "/protocol/openid-connect/userinfo"


def userinfo_url(issuer: str, jwks_url: str | None = None) -> str:
    """The realm's userinfo endpoint, reached where the keys are fetched from.

    In the cluster the issuer is the public URL (through the Ingress) while pods fetch
    keys from Keycloak's Service (``auth.jwks_url``): the same realm, reachable from
    the pod, so userinfo is asked there when ``jwks_url`` is Keycloak's certs URL.
    Keycloak accepts a token there only if it computes the same issuer for that URL
    (a fixed ``KC_HOSTNAME``, as the chart sets); otherwise ``keycloak.userinfo_url``.
    """
    if jwks_url and jwks_url.rstrip("/").endswith(CERTS_SUFFIX):
        return jwks_url.rstrip("/")[: -len(CERTS_SUFFIX)] + USERINFO_SUFFIX
    return issuer.rstrip("/") + USERINFO_SUFFIX


@dataclass
class _Checked:
    at: float
    fresh: dict[str, Any] | None  # None: Keycloak refused the session
    reason: str = ""


Clock = Callable[[], float]


class KeycloakSessions:
    """Asks Keycloak's userinfo whether a token's session holds; cached per session."""

    def __init__(
        self,
        url: str,
        *,
        recheck_s: float = DEFAULT_RECHECK_S,
        unreachable_grace_s: float = DEFAULT_GRACE_S,
        clock: Clock = time.monotonic,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url
        self.recheck_s = recheck_s
        self.grace_s = unreachable_grace_s
        self.clock = clock
        self.client = client or httpx.Client(timeout=TIMEOUT_S)
        self._cache: dict[tuple[str, str], _Checked] = {}
        self._unreachable_since: float | None = None
        self._lock = threading.Lock()

    def check(self, token: str, claims: Mapping[str, Any]) -> dict[str, Any]:
        """``claims`` with groups and realm roles as Keycloak says now; Unauthorized when
        the session no longer holds, Unavailable when Keycloak has been away too long."""
        key = (str(claims.get("sub", "")), _session_of(claims))
        now = self.clock()
        with self._lock:
            known = self._cache.get(key)
        if known is None or now - known.at >= self.recheck_s:
            known = self._ask(token, claims, key, now, known)
        if known.fresh is None:
            raise Unauthorized(f"Keycloak refused this session ({known.reason}): log in again")
        return {**claims, **known.fresh}

    def _ask(
        self,
        token: str,
        claims: Mapping[str, Any],
        key: tuple[str, str],
        now: float,
        known: _Checked | None,
    ) -> _Checked:
        try:
            response = self.client.get(self.url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            return self._unreachable(str(exc) or type(exc).__name__, now, known)
        if response.status_code >= 500:
            return self._unreachable(f"HTTP {response.status_code}", now, known)
        if response.status_code in (401, 403):
            checked = _Checked(now, None, _error_of(response))
        elif response.status_code != 200:
            return self._unreachable(f"HTTP {response.status_code}", now, known)
        else:
            checked = _answer(response, claims, now)
        with self._lock:
            self._unreachable_since = None
            if len(self._cache) >= MAX_SESSIONS:
                self._drop_stale(now)
            self._cache[key] = checked
        if checked.fresh is None:
            log.info("keycloak refused a session", extra={"reason": checked.reason})
        return checked

    def _unreachable(self, why: str, now: float, known: _Checked | None) -> _Checked:
        with self._lock:
            if self._unreachable_since is None:
                self._unreachable_since = now
                log.warning("cannot reach keycloak to check sessions: %s", why)
            away = now - self._unreachable_since
        if away > self.grace_s:
            raise Unavailable(
                f"cannot reach Keycloak at {self.url} to check the session for {away:.0f} s "
                f"({why}); refusing until it answers (keycloak.unreachable_grace_s)"
            )
        # Within the grace period: what was last learnt, else the token's own claims.
        return known if known is not None else _Checked(now, {})

    def _drop_stale(self, now: float) -> None:
        horizon = max(self.recheck_s, 1.0)
        for key in [k for k, v in self._cache.items() if now - v.at >= horizon]:
            del self._cache[key]
        if len(self._cache) >= MAX_SESSIONS:
            self._cache.clear()


def _session_of(claims: Mapping[str, Any]) -> str:
    """Keycloak's session id (``sid``; ``session_state`` before 26), else the token."""
    for name in ("sid", "session_state", "jti"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _answer(response: httpx.Response, claims: Mapping[str, Any], now: float) -> _Checked:
    try:
        info = response.json()
    except ValueError:
        info = None
    if not isinstance(info, dict):
        return _Checked(now, None, "userinfo answered no JSON object")
    if info.get("sub") != claims.get("sub"):
        return _Checked(now, None, "userinfo names another user")
    # Only these two come fresh; the rest stays as the signed token says. A claim
    # userinfo leaves out means none (a user in no group gets no groups claim).
    roles = info.get("realm_access")
    return _Checked(
        now,
        {
            "groups": info.get("groups") if isinstance(info.get("groups"), list) else [],
            "realm_access": roles if isinstance(roles, dict) else {"roles": []},
        },
    )


def _error_of(response: httpx.Response) -> str:
    challenge = response.headers.get("www-authenticate", "")
    if "error_description=" in challenge:
        return challenge.split("error_description=", 1)[1].split(",")[0].strip('" ')
    return f"HTTP {response.status_code}"


def sessions_for(settings: Settings) -> KeycloakSessions:
    """The session check of the realm ``auth.issuer_url`` names, as settings say."""
    issuer = settings.auth.issuer_url
    if not issuer:
        raise ValueError("auth.issuer_url is unset: the embedded issuer needs no session check")
    return KeycloakSessions(
        settings.keycloak.userinfo_url or userinfo_url(issuer, settings.auth.jwks_url),
        recheck_s=settings.keycloak.recheck_s,
        unreachable_grace_s=settings.keycloak.unreachable_grace_s,
    )
