"""The wire models the hub and the sites share (pydantic, JSON on the wire).

- :class:`JobSpec`: what a researcher asks of the network: a signed workflow, a cohort
  (the document ``jip cohort export`` writes), parameters, the declared outputs, the
  minimum number of sites and a deadline. Sites decide on exactly this; nothing a site
  releases may go beyond ``outputs``.
- :class:`RoundRequest`: a later round of the same job (Levene's deviations from the
  pooled centres, the count queries of a median search).
- :class:`SiteResult`: one site's sealed answer for one round, as the hub relays it:
  base64 ciphertext with its size and SHA-256 (which the site's audit log records too).
  The job, site and round are repeated inside the sealed plaintext, so a hub that swaps
  envelopes between jobs is caught when the researcher opens them (:func:`open_result`).
- :class:`SiteJobStatus`: where a job stands at one site (:class:`SiteJobState`).

Every model is frozen and forbids unknown keys: a field a peer adds is an error, not a
silently ignored surprise.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from jip.errors import Forbidden, Invalid
from jip.federation.crypto import (
    canonical_json,
    decode_bytes,
    key_id,
    seal,
    unseal,
    verify_workflow,
)
from jip.federation.disclosure import Released

Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}$")]
"""A name the job declares (output, field, group, project): no spaces, no ':'."""
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Base64Key = Annotated[str, Field(min_length=44, max_length=44)]
MAX_RESULT_BYTES = 16 * 1024 * 1024
COHORT_FORMAT = "jip.cohort"  # as jip.meta's cohort export writes it


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class OutputKind(StrEnum):
    """What a declared output computes at each site (schemas in :mod:`.outputs`)."""

    COUNT = "count"
    HISTOGRAM = "histogram"
    SUFFICIENT_STATS = "sufficient_stats"
    LEVENE_ROUND1 = "levene_round1"
    LEVENE_ROUND2 = "levene_round2"
    COUNT_AT_MOST = "count_at_most"


class DeclaredOutput(_Wire):
    """One aggregate a job may receive from each site: its name, kind, the measured
    ``field`` the workflow reports (say ``adc``), the group labels it is split by, and
    what the kind needs: ``edges`` (histogram), ``centres`` (Levene round 2, from round
    1), ``thresholds`` (count_at_most, from a median search)."""

    name: Label
    kind: OutputKind
    field: Label
    groups: tuple[Label, ...] = ()
    edges: tuple[float, ...] | None = None
    centres: dict[Label, tuple[float, float]] | None = None  # (value, rounding error)
    thresholds: dict[Label, tuple[float, ...]] | None = None

    @property
    def group_labels(self) -> tuple[str, ...]:
        """The groups, or the single group ``all`` of an output split by nothing."""
        return self.groups or ("all",)

    @model_validator(mode="after")
    def _kind_needs(self) -> DeclaredOutput:
        if len(set(self.groups)) != len(self.groups):
            raise ValueError(f"{self.name}: group labels must be unique")
        needs = {
            OutputKind.HISTOGRAM: "edges",
            OutputKind.LEVENE_ROUND2: "centres",
            OutputKind.COUNT_AT_MOST: "thresholds",
        }.get(self.kind)
        for extra in ("edges", "centres", "thresholds"):
            given = getattr(self, extra) is not None
            if given != (extra == needs):
                verb = "needs" if extra == needs else "takes no"
                raise ValueError(f"{self.name}: a {self.kind.value} output {verb} {extra}")
        if self.edges is not None:
            edges = self.edges
            if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)):
                raise ValueError(f"{self.name}: edges must be two or more, increasing")
        for per_group in (self.centres, self.thresholds):
            if per_group is not None and set(per_group) != set(self.group_labels):
                raise ValueError(f"{self.name}: needs exactly one entry per group")
        return self


class WorkflowRef(_Wire):
    """The workflow a job runs: its name, its image's digest, and a publisher's Ed25519
    signature over both (sites run only digests signed by keys they trust)."""

    name: Identifier
    image_digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    signature: Annotated[str, Field(min_length=88, max_length=88)]
    signer: Base64Key

    @property
    def signer_id(self) -> str:
        return key_id(decode_bytes(self.signer, "workflow.signer", 32))

    def verify(self, trusted: Mapping[str, bytes]) -> None:
        """Forbidden unless the signer is among ``trusted`` (key id → public key) and its
        signature covers this name and digest."""
        key = trusted.get(self.signer_id)
        if key is None or key != decode_bytes(self.signer, "workflow.signer", 32):
            raise Forbidden(f"workflow {self.name}: signed by {self.signer_id}, not a trusted key")
        signature = decode_bytes(self.signature, "workflow.signature", 64)
        verify_workflow(self.name, self.image_digest, signature, key)


class CohortDocument(_Wire):
    """A cohort as ``jip cohort export`` writes it (jip.meta's cohort export). The shape is
    checked here; the site checks the query itself with META's rules before running it."""

    format: Literal["jip.cohort"]
    format_version: Annotated[int, Field(ge=1)]
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: Annotated[str, Field(max_length=10_000)] = ""
    query: dict[str, JsonValue] = Field(default_factory=dict)
    created_at: str | None = None
    source_site: str = ""
    exported_at: str | None = None
    series: list[str] | None = None


class JobSpec(_Wire):
    """A federated job as submitted to the hub and shown to every site's approver."""

    id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    project: Label
    researcher_key: Base64Key  # X25519: results are sealed to it
    workflow: WorkflowRef
    cohort: CohortDocument
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    outputs: Annotated[tuple[DeclaredOutput, ...], Field(min_length=1)]
    min_sites: Annotated[int, Field(ge=1)]
    deadline: AwareDatetime

    @model_validator(mode="after")
    def _unique_outputs(self) -> JobSpec:
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError("outputs: names must be unique")
        decode_bytes(self.researcher_key, "researcher_key", 32)
        return self


class RoundRequest(_Wire):
    """A later round of a job: the outputs it declares carry what round 1 found."""

    job_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    round: Annotated[int, Field(ge=2)]
    outputs: Annotated[tuple[DeclaredOutput, ...], Field(min_length=1)]


class SiteResult(_Wire):
    """One site's sealed answer to one round, as the hub stores and relays it."""

    job_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    site_id: Identifier
    round: Annotated[int, Field(ge=1)]
    ciphertext: Annotated[str, Field(max_length=(MAX_RESULT_BYTES + 2) // 3 * 4)]
    size: Annotated[int, Field(ge=0, le=MAX_RESULT_BYTES)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    @model_validator(mode="after")
    def _size_and_hash(self) -> SiteResult:
        raw = decode_bytes(self.ciphertext, "ciphertext")
        if len(raw) != self.size:
            raise ValueError(f"size: says {self.size} bytes, the ciphertext has {len(raw)}")
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            raise ValueError("sha256: does not match the ciphertext")
        return self


def seal_result(
    job_id: str,
    site_id: str,
    round: int,
    outputs: Mapping[str, Released],
    researcher_key: str,
) -> SiteResult:
    """Seal a site's released outputs (only outputs that passed the disclosure checks) to
    the researcher's key; the envelope carries size and hash for the audit log."""
    plaintext = canonical_json(
        {"job_id": job_id, "site_id": site_id, "round": round, "outputs": dict(outputs)}
    )
    sealed = seal(plaintext, decode_bytes(researcher_key, "researcher_key", 32))
    return SiteResult(
        job_id=job_id,
        site_id=site_id,
        round=round,
        ciphertext=base64.b64encode(sealed).decode("ascii"),
        size=len(sealed),
        sha256=hashlib.sha256(sealed).hexdigest(),
    )


def open_result(result: SiteResult, private_key: bytes) -> dict[str, Any]:
    """The researcher's side: the outputs of one sealed result, once the plaintext says it
    belongs to this envelope's job, site and round (Forbidden otherwise)."""
    plaintext = unseal(decode_bytes(result.ciphertext, "ciphertext"), private_key)
    try:
        document = json.loads(plaintext)
    except ValueError as exc:
        raise Invalid("sealed result: the plaintext is not JSON") from exc
    claimed = (document.get("job_id"), document.get("site_id"), document.get("round"))
    if claimed != (result.job_id, result.site_id, result.round):
        raise Forbidden("sealed result: the plaintext names another job, site or round")
    outputs = document.get("outputs")
    if not isinstance(outputs, dict):
        raise Invalid("sealed result: no outputs")
    return outputs


class SiteJobState(StrEnum):
    """Where a job stands at one site."""

    QUEUED = "queued"  # delivered, waiting for the site's decision
    APPROVED = "approved"
    REFUSED = "refused"  # by policy or by an approver; reason says which
    RUNNING = "running"
    DONE = "done"  # a result was sent
    FAILED = "failed"  # the workflow failed or an output was refused at release
    MISSED_DEADLINE = "missed_deadline"  # named in the job's result, never waited for

    @property
    def final(self) -> bool:
        return self in {
            SiteJobState.REFUSED,
            SiteJobState.DONE,
            SiteJobState.FAILED,
            SiteJobState.MISSED_DEADLINE,
        }


class SiteJobStatus(_Wire):
    """One site's state for one job; refused and failed always say why."""

    job_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    site_id: Identifier
    state: SiteJobState
    reason: Annotated[str, Field(max_length=2000)] | None = None
    updated_at: AwareDatetime

    @model_validator(mode="after")
    def _reason_when_refused(self) -> SiteJobStatus:
        if self.state in {SiteJobState.REFUSED, SiteJobState.FAILED} and not self.reason:
            raise ValueError(f"reason: a {self.state.value} job must say why")
        return self
