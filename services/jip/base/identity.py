"""The identity services of one site, built once into the Runtime, and the site's URL.

``jip.backends.identity_for`` builds an :class:`Identity` from settings (embedded issuer
or Keycloak); routes read it from ``app.state.runtime.identity`` (:mod:`jip.base.deps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jip.base.audit import AuditLog
from jip.base.auth import Authenticator
from jip.base.issuer import Issuer
from jip.base.projects import Projects
from jip.base.run_tokens import RunTokens
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
    # Workflow runs' tokens, signed with the site's key in both shapes.
    run_tokens: RunTokens | None = None

    def issue_run_token(
        self, *, run_id: str, projects: Sequence[str], ttl_s: int, started_by: str
    ) -> str:
        """A token for the run ``run_id``: researcher in exactly ``projects``, never admin,
        valid ``ttl_s`` seconds or until :meth:`revoke_run_token`."""
        return self._run_tokens().issue(
            run_id=run_id, projects=projects, ttl_s=ttl_s, started_by=started_by
        )

    def revoke_run_token(self, run_id: str) -> None:
        """Refuse every token of ``run_id`` from now on (the run finished or was cancelled)."""
        self._run_tokens().revoke(run_id)

    def _run_tokens(self) -> RunTokens:
        if self.run_tokens is None:
            raise RuntimeError("this Identity was built without run tokens (jip.backends)")
        return self.run_tokens


def site_url(settings: Settings) -> str:
    """The site's public URL: ``auth.public_url``, else http://<http_host>:<http_port>."""
    if settings.auth.public_url:
        return settings.auth.public_url.rstrip("/")
    return f"http://{reachable_host(settings.http_host)}:{settings.http_port}"
