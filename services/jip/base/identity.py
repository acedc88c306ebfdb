"""The identity services of one site, built once into the Runtime, and the site's URL.

``jip.backends.identity_for`` builds an :class:`Identity` from settings (embedded issuer
or Keycloak); routes read it from ``app.state.runtime.identity`` (:mod:`jip.base.deps`).
"""

from __future__ import annotations

from dataclasses import dataclass

from jip.base.audit import AuditLog
from jip.base.auth import Authenticator
from jip.base.issuer import Issuer
from jip.base.projects import Projects
from jip.base.users import Users
from jip.config import Settings, reachable_host


@dataclass
class Identity:
    users: Users
    projects: Projects
    audit: AuditLog
    authenticator: Authenticator
    # The embedded issuer; None where an external issuer (Keycloak) logs people in.
    issuer: Issuer | None


def site_url(settings: Settings) -> str:
    """The site's public URL: ``auth.public_url``, else http://<http_host>:<http_port>."""
    if settings.auth.public_url:
        return settings.auth.public_url.rstrip("/")
    return f"http://{reachable_host(settings.http_host)}:{settings.http_port}"
