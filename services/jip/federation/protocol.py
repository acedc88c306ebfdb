"""The wire models the hub and the sites share (pydantic, JSON on the wire).

- :class:`JobSpec`: what a researcher asks of the network: a signed workflow, a cohort
  (the document ``jip cohort export`` writes), parameters, the declared outputs, the
  minimum number of sites and a deadline. Sites decide on exactly this; nothing a site
  releases may go beyond ``outputs``.
- :class:`RoundPlan`: a later round of the same job in clear (Levene's deviations from
  the pooled centres, the count queries of a median search): what the researcher asks.
- :class:`RoundRequest`: that round as the hub stores and relays it: the plan sealed to
  each participating site's X25519 box key (:func:`seal_round`), one entry per site.
  The centres and thresholds are pooled from the sites' answers, so a group only one
  site holds would show that site's own values to the hub in clear; sealed, the hub
  relays what it cannot read, and each site opens only its own entry
  (:func:`open_round`).
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
MAX_ROUND_BYTES = 1024 * 1024  # one site's sealed round (thresholds and centres are small)
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


LATER_ROUND_KINDS = frozenset({OutputKind.LEVENE_ROUND2, OutputKind.COUNT_AT_MOST})


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


class RoundPlan(_Wire):
    """A later round of a job in clear: the outputs it declares carry what round 1 found
    (the researcher keeps it; each site opens its own copy from a :class:`RoundRequest`)."""

    job_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    round: Annotated[int, Field(ge=2)]
    outputs: Annotated[tuple[DeclaredOutput, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _later_kinds(self) -> RoundPlan:
        for output in self.outputs:
            if output.kind not in LATER_ROUND_KINDS:
                raise ValueError(
                    f"{output.name}: a later round asks only "
                    f"{' or '.join(sorted(k.value for k in LATER_ROUND_KINDS))}, not {output.kind.value}"
                )
        return self


SealedRound = Annotated[str, Field(min_length=1, max_length=(MAX_ROUND_BYTES + 2) // 3 * 4)]


class RoundRequest(_Wire):
    """A later round as the hub stores and relays it: per site id, base64 of a sealed box
    (to that site's box key) of the round's canonical JSON; no output in clear."""

    job_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    round: Annotated[int, Field(ge=2)]
    sealed: Annotated[dict[Identifier, SealedRound], Field(min_length=1)]


def _round_plaintext(plan: RoundPlan, site_id: str) -> bytes:
    outputs = [o.model_dump(mode="json") for o in plan.outputs]
    document = {"job_id": plan.job_id, "round": plan.round, "site_id": site_id}
    return canonical_json({**document, "outputs": outputs})


def seal_round(
    job_id: str,
    round: int,
    outputs: tuple[DeclaredOutput, ...],
    site_box_keys: Mapping[str, str],
) -> RoundRequest:
    """Seal a later round's ``outputs`` to each site of ``site_box_keys`` (site id →
    base64 X25519 key, as the hub lists them); the job, round and site are repeated
    inside each plaintext, so an entry moved to another site, job or round is refused."""
    plan = RoundPlan(job_id=job_id, round=round, outputs=outputs)
    if not site_box_keys:
        raise Invalid(f"round {round} of job {job_id}: no site to send it to")
    sealed = {}
    for site_id, box_key in sorted(site_box_keys.items()):
        plaintext = _round_plaintext(plan, site_id)
        if len(plaintext) > MAX_ROUND_BYTES - 64:
            raise Invalid(
                f"round {round}: {len(plaintext)} bytes of outputs, over {MAX_ROUND_BYTES}; "
                "ask fewer thresholds (--fanout) or fewer comparisons at once"
            )
        box = seal(plaintext, decode_bytes(box_key, f"box key of site {site_id}", 32))
        sealed[site_id] = base64.b64encode(box).decode("ascii")
    return RoundRequest(job_id=job_id, round=round, sealed=sealed)


def open_round(
    request: RoundRequest, site_id: str, box_private_key: bytes
) -> tuple[DeclaredOutput, ...]:
    """A site's side: its own entry of a sealed round, opened and checked (Forbidden when
    the round has no entry for it or the box does not open or names another job, round
    or site; Invalid when the outputs are not later-round outputs)."""
    what = f"round {request.round} of job {request.job_id}"
    entry = request.sealed.get(site_id)
    if entry is None:
        raise Forbidden(f"{what}: not sealed to site {site_id}; the researcher did not ask it")
    try:
        plaintext = unseal(decode_bytes(entry, "sealed round"), box_private_key)
    except Forbidden as exc:
        raise Forbidden(
            f"{what}: the sealed entry does not open with this site's box key (altered, or "
            "sealed to another key: compare `jip fed identity` with the hub's site list)"
        ) from exc
    try:
        document = json.loads(plaintext)
        claimed = (document.get("job_id"), document.get("round"), document.get("site_id"))
    except (ValueError, AttributeError) as exc:
        raise Invalid(f"{what}: the opened entry is not a JSON object") from exc
    if claimed != (request.job_id, request.round, site_id):
        raise Forbidden(f"{what}: the opened entry names another job, round or site")
    try:
        plan = RoundPlan.model_validate(
            {"job_id": request.job_id, "round": request.round, "outputs": document.get("outputs")}
        )
    except ValueError as exc:
        raise Invalid(f"{what}: the opened outputs are not valid: {exc}") from exc
    return plan.outputs


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
