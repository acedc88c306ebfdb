"""A workflow run's own token: issued when the run starts, kept out of its conf, closed
when it ends.

A run never acts with the token of the person who started it: that one lives minutes and
carries the person's other rights. When a run starts, the site issues a token naming the
run and its projects (researcher there, never admin; :meth:`jip.base.Identity.
issue_run_token`), valid for ``flow.operator_timeout_s`` per operator step plus
``flow.review_window_s``. The workflow engine keeps it where the run's tasks and triggers
look it up (an Airflow Connection ``jip_run_<run_id>``), never in the run's conf, which
Airflow shows to everyone who can read the run and stores in its trigger table. When JIP
sees the run end (cancel, a look at the run, the periodic sweep of the rule component),
the token is revoked and the connection removed; a finished run's token is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jip.config import Settings
from jip.flow.workflows import operators_of


class RunTokenIssuer(Protocol):
    """What the flow needs of the site's identity (:class:`jip.base.Identity`)."""

    def issue_run_token(
        self, *, run_id: str, projects: Sequence[str], ttl_s: int, started_by: str
    ) -> str: ...

    def revoke_run_token(self, run_id: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class RunTokenPolicy:
    """Who issues run tokens and how long they live."""

    issuer: RunTokenIssuer
    operator_timeout_s: float
    review_window_s: float

    @classmethod
    def from_settings(cls, settings: Settings, issuer: RunTokenIssuer) -> RunTokenPolicy | None:
        """None where authentication is off: runs then reach the API without a token."""
        if not settings.auth.enabled:
            return None
        return cls(
            issuer=issuer,
            operator_timeout_s=settings.flow.operator_timeout_s,
            review_window_s=settings.flow.review_window_s,
        )

    def ttl_s(self, params_schema: Mapping[str, Any]) -> int:
        """The operator timeout for each operator step of the workflow, plus the review
        window (a human step may wait that long)."""
        steps = max(1, len(operators_of(params_schema)))
        return int(steps * self.operator_timeout_s + self.review_window_s)
