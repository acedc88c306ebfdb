"""Service tokens: the site-admin token `jip up` hands its own workers, one live per purpose.

Minting a token for a purpose (``jip-up:all``, ``jip-up:indexer``, ...) revokes the one
minted before for it, so each start of `jip up` leaves exactly one valid token behind
(claim ``jip_svc``; checked per request by :mod:`jip.base.ledger`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jip.base.auth import ADMIN_ROLE
from jip.base.issuer import Issuer
from jip.base.ledger import SERVICE, SERVICE_CLAIM

SERVICE_USERNAME = "jip-service"
SERVICE_CLIENT = "jip-service"


def service_token(
    issuer: Issuer, *, ttl_s: int, purpose: str = "jip-up", now: datetime | None = None
) -> str:
    """A site-admin access token for the site's own workers (Airflow tasks, auto-rules).

    It is not tied to a login, so a workflow that waits for a human longer than a
    user's token lives still reaches the API; the token minted before for ``purpose``
    is refused from now on. No account with this name can log in.
    """
    now = now or datetime.now(UTC)
    token, jti = issuer.signer.machine_token(
        SERVICE_USERNAME,
        {
            SERVICE_CLAIM: purpose,
            "azp": SERVICE_CLIENT,
            "realm_access": {"roles": [ADMIN_ROLE]},
            "groups": [],
        },
        now=now,
        ttl_s=ttl_s,
    )
    issuer.ledger.record(SERVICE, purpose, jti, now=now, expires_at=now + timedelta(seconds=ttl_s))
    return token
