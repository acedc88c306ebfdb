"""The identity services of one site, built once from settings into the Runtime."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from jip.base.audit import AuditLog
from jip.base.auth import Authenticator, authenticator_for
from jip.base.issuer import Issuer
from jip.base.keys import SigningKeys
from jip.base.projects import Projects
from jip.base.users import Users
from jip.config import Settings

# What a browser or the CLI can reach when the site listens on every address.
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}


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
    host = _WILDCARD_HOSTS.get(settings.http_host, settings.http_host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}"


def build_identity(settings: Settings, engine: Engine) -> Identity:
    """Users, projects, audit log and token checks over the catalog ``engine``.

    The signing key is read (or created) only when a token is first issued or checked.
    """
    users = Users(engine)
    audit = AuditLog(engine)
    keys = SigningKeys(settings.data_dir / "keys")
    issuer_id = site_url(settings)
    issuer = None
    if not settings.auth.issuer_url:
        issuer = Issuer(
            issuer=issuer_id,
            settings=settings.auth,
            engine=engine,
            users=users,
            audit=audit,
            keys=keys,
        )
    return Identity(
        users=users,
        projects=Projects(engine),
        audit=audit,
        authenticator=authenticator_for(settings, keys, issuer_id),
        issuer=issuer,
    )
