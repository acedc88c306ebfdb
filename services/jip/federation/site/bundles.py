"""Jobs and results carried by hand, for sites without a permanent link to a hub.

A bundle is one plain JSON file (never an archive: nothing is extracted, no path in it
is ever used)::

    {"bundle": {"format": ..., "format_version": 1, "site_id": ..., ...},
     "signer": "<base64 Ed25519 public key>", "signature": "<base64>"}

The signature covers the canonical JSON of ``bundle`` (:func:`jip.federation.sign_bundle`).

- A **job bundle** (``jip.fed.job-bundle``, :func:`make_job_bundle`, the researcher's
  side) holds the :class:`JobSpec` and the site it is for, signed by the researcher's
  publisher key. `jip fed import-job` (:func:`import_job`) refuses it unless that key
  is one the site trusts, the signature holds, it names this site and its job id is new
  here; then the job is booked and goes through the same policy, approval and audit as
  a job from the hub (the agent's own intake, :func:`settle_carried`).
- A **result bundle** (``jip.fed.result-bundle``, :func:`export_result`) holds the
  sealed :class:`SiteResult` (encrypted to the researcher, as the hub would relay it),
  signed with the site's identity key; the researcher checks it with
  :func:`read_result_bundle` and opens it with :func:`jip.federation.open_result`.

Every import (accepted or refused) and export is in the site's audit log with the
file's size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from jip.base import AuditLog
from jip.errors import Conflict, Forbidden, Invalid, JipError, NotFound
from jip.federation.crypto import (
    SigningKeyPair,
    decode_bytes,
    encode_key,
    key_id,
    sign_bundle,
    verify_bundle,
)
from jip.federation.protocol import (
    JobSpec,
    RoundRequest,
    SiteJobState,
    SiteJobStatus,
    SiteResult,
)
from jip.federation.site.agent import SiteAgent
from jip.federation.site.carried import CarriedJobs, add_carried, carried
from jip.federation.site.files import SiteFiles
from jip.federation.site.identity import SiteIdentity, site_identity
from jip.federation.site.images import ImageSource
from jip.federation.site.jobs import JobBook, JobRecord
from jip.federation.site.policy import Policies
from jip.federation.site.transport import HubClient
from jip.meta import MetaIndex

JOB_FORMAT = "jip.fed.job-bundle"
RESULT_FORMAT = "jip.fed.result-bundle"
FORMAT_VERSION = 1
# A sealed result is at most 16 MiB (protocol.MAX_RESULT_BYTES), 4/3 of that in base64.
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
ENVELOPE_KEYS = {"bundle", "signer", "signature"}


# -- the file format ----------------------------------------------------------------------
def _envelope(document: Mapping[str, Any], keys: SigningKeyPair) -> bytes:
    signature = sign_bundle(document, keys.private)
    envelope = {
        "bundle": dict(document),
        "signer": encode_key(keys.public),
        "signature": encode_key(signature),
    }
    return (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _open(data: bytes, expected: str) -> tuple[dict[str, Any], bytes, bytes]:
    """The bundle document, its signer's key and the signature, read from ``data``
    (checked for shape only: the caller decides whom it trusts)."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise Invalid(f"bundle: {len(data)} bytes, more than the {MAX_BUNDLE_BYTES} a bundle has")
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"bundle: not a JSON file ({exc})") from None
    if not isinstance(envelope, dict) or set(envelope) != ENVELOPE_KEYS:
        raise Invalid(
            f"bundle: expected an object with exactly {sorted(ENVELOPE_KEYS)}; an unsigned "
            "file is not a bundle (the researcher makes one with make_job_bundle)"
        )
    document = envelope["bundle"]
    if not isinstance(document, dict) or document.get("format") != expected:
        found = document.get("format") if isinstance(document, dict) else None
        raise Invalid(f"bundle: format {found!r}, expected {expected!r}")
    if document.get("format_version") != FORMAT_VERSION:
        raise Invalid(
            f"bundle: format_version {document.get('format_version')!r}; this site reads "
            f"{FORMAT_VERSION} (update JIP, or ask for a bundle of version {FORMAT_VERSION})"
        )
    signer = decode_bytes(str(envelope["signer"]), "bundle signer", 32)
    signature = decode_bytes(str(envelope["signature"]), "bundle signature", 64)
    return document, signer, signature


def make_job_bundle(spec: JobSpec, signing_keys: SigningKeyPair, *, site_id: str) -> bytes:
    """The researcher's side: ``spec`` for the site ``site_id``, signed with the
    publisher key that site trusts (the bytes of one JSON file)."""
    document = {
        "format": JOB_FORMAT,
        "format_version": FORMAT_VERSION,
        "site_id": site_id,
        "job": spec.model_dump(mode="json"),
    }
    return _envelope(document, signing_keys)


def read_result_bundle(data: bytes, site_identity_key: bytes | str) -> SiteResult:
    """The researcher's side: the sealed result in a result bundle, once it is shown to
    be signed by the site's identity key (``jip fed identity`` at the site prints it);
    Forbidden when it is not. Open it with :func:`jip.federation.open_result`."""
    key = (
        decode_bytes(site_identity_key, "site identity key", 32)
        if isinstance(site_identity_key, str)
        else site_identity_key
    )
    document, signer, signature = _open(data, RESULT_FORMAT)
    if signer != key:
        raise Forbidden(
            f"result bundle: signed by key {key_id(signer)}, not by the site's {key_id(key)}"
        )
    verify_bundle(document, signature, key)
    try:
        result = SiteResult.model_validate(document.get("result"))
    except ValidationError as exc:
        raise Invalid(f"result bundle: result: {exc.errors()[0]['msg']}") from None
    if (result.site_id, result.job_id) != (document.get("site_id"), document.get("job_id")):
        raise Forbidden("result bundle: the result names another site or job than the bundle")
    return result


# -- the site's side ------------------------------------------------------------------------
class _ByHand(HubClient):
    """What the agent would tell the hub about a carried job goes nowhere: the result
    leaves as a bundle (`jip fed export-result`), and the researcher reads its state
    there; refusals are in the site's audit log and `jip fed queue --all`."""

    def __init__(self, site_id: str) -> None:  # no hub: nothing to connect to
        self.base_url, self.site_id = "bundle:", site_id

    def poll(self, wait_s: float) -> tuple[list[JobSpec], list[RoundRequest]]:
        return [], []

    def ack(self, job_id: str, round: int = 1) -> None:
        pass

    def state(self, status: SiteJobStatus) -> None:
        pass

    def result(self, result: SiteResult) -> None:
        pass

    def close(self) -> None:
        pass


def settle_carried(
    engine: Engine, index: MetaIndex, files: SiteFiles, images: ImageSource | None = None
) -> None:
    """Take the jobs carried by hand through the agent's own intake: the policy's
    refusals, manual or automatic approval, the run, disclosure checks and the sealed
    result, each step audited as for a hub job."""
    identity = site_identity(files)
    agent = SiteAgent(engine, index, files, hub=_ByHand(identity.site_id), images=images)
    agent.book = CarriedJobs(engine)
    agent.settle()


def _audit(engine: Engine, action: str, by: str, target: str, detail: dict[str, Any]) -> None:
    AuditLog(engine).record(action, username=by, target=target, detail=detail)


def _checked_job(engine: Engine, identity: SiteIdentity, data: bytes) -> tuple[JobSpec, bytes]:
    document, signer, signature = _open(data, JOB_FORMAT)
    kid = key_id(signer)
    if Policies(engine).trusted().get(kid) != signer:
        raise Forbidden(
            f"job bundle: signed by key {kid}, which this site does not trust "
            "(`jip fed trust add NAME KEY` if it should)"
        )
    verify_bundle(document, signature, signer)  # Forbidden when altered since signing
    if document.get("site_id") != identity.site_id:
        raise Forbidden(
            f"job bundle: for site {document.get('site_id')!r}, and this is site "
            f"{identity.site_id!r}"
        )
    try:
        return JobSpec.model_validate(document.get("job")), signer
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise Invalid(f"job bundle: job.{where}: {error['msg']}") from None


def import_job(
    engine: Engine,
    index: MetaIndex,
    files: SiteFiles,
    data: bytes,
    *,
    by: str,
    images: ImageSource | None = None,
) -> JobRecord:
    """Book the job in a job bundle and take it through the intake (a job under
    automatic approval runs at once); refused bundles are audited, then raised."""
    identity = site_identity(files)
    size, sha256 = len(data), hashlib.sha256(data).hexdigest()
    try:
        job, signer = _checked_job(engine, identity, data)
        add_carried(engine, job, signer=key_id(signer), data=data, by=by)
    except JipError as exc:
        detail = {"size": size, "sha256": sha256, "reason": str(exc)}
        _audit(engine, "fed.bundle.refused", by, "bundle", detail)
        raise
    target = f"job:{job.id}"
    detail = {"size": size, "sha256": sha256, "signer": key_id(signer)}
    _audit(engine, "fed.bundle.imported", by, target, detail)
    _audit(
        engine,
        "fed.job.received",
        by,
        target,
        {"round": 1, "project": job.project, "via": "bundle"},
    )
    settle_carried(engine, index, files, images)
    return JobBook(engine).get(job.id)


def export_result(
    engine: Engine,
    index: MetaIndex,
    files: SiteFiles,
    job_id: str,
    *,
    by: str,
    images: ImageSource | None = None,
) -> bytes:
    """The result bundle of a carried job (settled first, should it be approved and not
    yet run); Conflict while it has no result, saying where it stands."""
    if carried(engine, job_id) is None:
        raise NotFound(
            f"job {job_id}: no job bundle brought it here (`jip fed queue --all`); a hub's "
            "job sends its result through the hub"
        )
    identity = site_identity(files)
    settle_carried(engine, index, files, images)
    record = JobBook(engine).get(job_id)
    if record.result is None:
        waiting = " (approve it: `jip fed approve JOB`)" * (record.state is SiteJobState.QUEUED)
        why = f": {record.reason}" if record.reason else ""
        raise Conflict(f"job {job_id}: {record.state.value}{why}; no result to export{waiting}")
    document = {
        "format": RESULT_FORMAT,
        "format_version": FORMAT_VERSION,
        "site_id": identity.site_id,
        "job_id": job_id,
        "result": record.result.model_dump(mode="json"),
    }
    data = _envelope(document, identity.keys)
    detail = {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "result_size": record.result.size,
        "result_sha256": record.result.sha256,
    }
    _audit(engine, "fed.bundle.exported", by, f"job:{job_id}", detail)
    return data
