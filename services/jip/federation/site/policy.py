"""The site's policy: what it takes part in and what may leave (`jip fed policy`).

Safe defaults: no project takes part until the site admin names it, every job waits for
a person's approval, cohorts of fewer than 10 series and cells under 5 are refused, and
only counts and histograms may leave. A workflow runs only when its image digest is
signed by a key the site trusts (`jip fed trust add`); an unsigned or tampered one is
refused with the reason, which the hub and the site's audit log both get.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from jip.base import now_utc
from jip.errors import Conflict, Invalid, JipError, NotFound
from jip.federation.crypto import decode_bytes, encode_key, key_id
from jip.federation.disclosure import DisclosurePolicy
from jip.federation.protocol import DeclaredOutput, JobSpec, OutputKind
from jip.federation.site.schema import FedPolicy, FedTrustedKey

WORKFLOWS = ("fed-stats",)  # the workflows this site can run in-process


class Approval(StrEnum):
    MANUAL = "manual"  # a person approves each job (`jip fed approve`)
    AUTOMATIC = "automatic"  # jobs that pass the policy run at once


class SitePolicy(BaseModel):
    """The site's federation policy (one JSON document in ``fed_policy``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    projects: tuple[str, ...] = ()
    approval: Approval = Approval.MANUAL
    min_cohort_size: Annotated[int, Field(ge=1)] = 10
    min_cell_count: Annotated[int, Field(ge=1)] = 5
    allowed_outputs: tuple[OutputKind, ...] = (OutputKind.COUNT, OutputKind.HISTOGRAM)

    def disclosure(self) -> DisclosurePolicy:
        """The disclosure checks' settings under this policy."""
        return DisclosurePolicy(
            min_cell_count=self.min_cell_count, min_cohort_size=self.min_cohort_size
        )

    def outputs_refusal(self, outputs: tuple[DeclaredOutput, ...]) -> str | None:
        """Why these declared outputs may not leave this site, or None."""
        for output in outputs:
            if output.kind not in self.allowed_outputs:
                allowed = ", ".join(k.value for k in self.allowed_outputs) or "none"
                return (
                    f"output {output.name}: kind {output.kind.value} may not leave this site "
                    f"(allowed: {allowed}; `jip fed policy set allowed_outputs=...`)"
                )
        return None

    def job_refusal(self, job: JobSpec, trusted: Mapping[str, bytes]) -> str | None:
        """Why this site refuses ``job`` before anyone looks at it, or None."""
        if job.workflow.name not in WORKFLOWS:
            return f"workflow {job.workflow.name}: not a workflow this site runs"
        try:
            job.workflow.verify(trusted)
        except JipError as exc:
            return f"workflow {job.workflow.name}: {exc}"
        if job.project not in self.projects:
            return f"project {job.project}: does not take part at this site"
        return self.outputs_refusal(job.outputs)


def _coerce(key: str, text: str) -> Any:
    if key in {"projects", "allowed_outputs"}:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


class Policies:
    """The policy and the trusted keys in the catalog database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self) -> SitePolicy:
        with Session(self.engine) as session:
            row = session.get(FedPolicy, "site")
            return SitePolicy() if row is None else SitePolicy.model_validate(row.document)

    def set(self, changes: Mapping[str, str]) -> SitePolicy:
        """The policy with ``changes`` (``key=value`` text, lists comma-separated)."""
        current = self.get().model_dump(mode="json")
        for key, text in changes.items():
            if key not in SitePolicy.model_fields:
                known = ", ".join(SitePolicy.model_fields)
                raise Invalid(f"{key}: not a policy setting (known: {known})")
            current[key] = _coerce(key, text)
        try:
            policy = SitePolicy.model_validate(current)
        except ValidationError as exc:
            raise Invalid(f"policy: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
        with Session(self.engine) as session, session.begin():
            row = session.get(FedPolicy, "site")
            document = policy.model_dump(mode="json")
            if row is None:
                session.add(FedPolicy(name="site", document=document, updated_at=now_utc()))
            else:
                row.document, row.updated_at = document, now_utc()
        return policy

    def trust(self, name: str, public_key: str) -> str:
        """Trust workflows signed by ``public_key`` (base64 Ed25519); returns its key id."""
        raw = decode_bytes(public_key.strip(), "public key", 32)
        kid = key_id(raw)
        with Session(self.engine) as session, session.begin():
            if session.get(FedTrustedKey, kid) is not None:
                raise Conflict(f"key {kid}: already trusted")
            if session.scalar(select(FedTrustedKey).where(FedTrustedKey.name == name)):
                raise Conflict(f"{name}: a trusted key has this name already")
            session.add(
                FedTrustedKey(key_id=kid, name=name, public_key=encode_key(raw), added_at=now_utc())
            )
        return kid

    def distrust(self, name: str) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(FedTrustedKey).where(FedTrustedKey.name == name))
            if row is None:
                raise NotFound(f"{name}: no trusted key has this name")
            session.delete(row)

    def trusted(self) -> dict[str, bytes]:
        """Key id -> public key, as :meth:`WorkflowRef.verify` takes them."""
        with Session(self.engine) as session:
            rows = session.scalars(select(FedTrustedKey)).all()
            return {r.key_id: decode_bytes(r.public_key, "trusted key", 32) for r in rows}

    def trusted_list(self) -> list[dict[str, str]]:
        with Session(self.engine) as session:
            rows = session.scalars(select(FedTrustedKey).order_by(FedTrustedKey.name)).all()
            return [{"name": r.name, "key_id": r.key_id, "public_key": r.public_key} for r in rows]
