"""A workflow run's own token: scoped to the run and its projects, revoked when it ends.

A run never acts with the token of the user who started it (that one lives minutes and
carries the user's other rights). The site mints one token per run with its own key, in
both shapes (beside Keycloak too): claims ``jip_run`` (the run id), ``jip_projects`` and
``jip_started_by``. :func:`jip.base.auth.user_from_claims` makes it a researcher in
exactly those projects, never an admin; the ``issued_tokens`` row makes it revocable
(:meth:`RunTokens.revoke`, when the run finishes or is cancelled).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from jip.base.auth import RUN_PROJECTS_CLAIM, RUN_STARTED_BY_CLAIM
from jip.base.ledger import RUN, RUN_CLAIM, TokenLedger
from jip.base.projects import check_project_name
from jip.base.schema import now_utc
from jip.base.tokens import TokenSigner
from jip.errors import Invalid

MAX_RUN_ID = 200


class RunTokens:
    """Mints and revokes run tokens with the site's signer."""

    def __init__(self, *, signer: TokenSigner, ledger: TokenLedger) -> None:
        self.signer = signer
        self.ledger = ledger

    def issue(
        self,
        *,
        run_id: str,
        projects: Sequence[str],
        ttl_s: int,
        started_by: str,
        now: datetime | None = None,
    ) -> str:
        if not run_id or len(run_id) > MAX_RUN_ID:
            raise Invalid(f"run_id must be 1-{MAX_RUN_ID} characters")
        if ttl_s < 1:
            raise Invalid("ttl_s must be at least 1 second")
        names = sorted({check_project_name(p) for p in projects})
        now = now or now_utc()
        token, jti = self.signer.machine_token(
            f"run:{run_id}",
            {
                RUN_CLAIM: run_id,
                RUN_PROJECTS_CLAIM: names,
                RUN_STARTED_BY_CLAIM: started_by,
            },
            now=now,
            ttl_s=ttl_s,
        )
        self.ledger.record(RUN, run_id, jti, now=now, expires_at=now + timedelta(seconds=ttl_s))
        return token

    def revoke(self, run_id: str) -> None:
        """Every token of the run is refused from the next request on."""
        self.ledger.revoke(RUN, run_id)
