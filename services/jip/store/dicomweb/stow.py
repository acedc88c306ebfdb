"""STOW-RS (PS3.18 §10.5): store instances sent as multipart/related application/dicom.

The body is spooled part by part to disk (never held in memory) and checked against
``store.max_upload_bytes`` as it arrives; only a complete body within the limit is
stored, so a cut or oversized request changes nothing. Each part then takes the one
ingest path (:mod:`jip.store.ingest`) and gets its own entry in the response:
ReferencedSOPSequence on success, FailedSOPSequence with a FailureReason and an
ErrorComment naming the problem otherwise. Instances are stored as received; nothing is
coerced, so no OriginalAttributesSequence is written.

A caller limited to projects stores only into what is theirs
(:meth:`jip.store.catalog.projects.SeriesProjects.may_add_instance`): a part that would join a
series outside their writable projects, reuse a SOP Instance UID of such a series, or add
a series to a study of which they see no series, fails alone with one failure reason and
one comment, whichever UID it was and whether it exists, and nothing of it is stored. The
check runs just before the part's ingest; a series another project starts in between
may still take the part.
"""

from __future__ import annotations

import enum
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pydicom
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from jip.base import (
    CurrentUser,
    CurrentUserDep,
    ProjectRole,
    Projects,
    ProjectsDep,
    check_project_name,
    project_scope,
    require_project_role,
)
from jip.config import Settings
from jip.errors import Forbidden, Invalid, OutOfResources, TooLarge, UnsupportedMediaType
from jip.store.catalog.catalog import AddOutcome
from jip.store.catalog.projects import SeriesProjects
from jip.store.deps import IngestorDep, SettingsDep
from jip.store.dicom_file import check_uid, read_header
from jip.store.dicomweb.deps import BaseUrlDep
from jip.store.dicomweb.media_types import DICOM, DICOM_JSON, DICOM_XML, JSON, choose
from jip.store.dicomweb.multipart import ReceivedPart, boundary_of, read_parts
from jip.store.dicomweb.targets import accepted, dataset_response
from jip.store.ingest import Ingestor, IngestResult

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb: STOW-RS"])


class FailureReason(enum.IntEnum):
    """Failure Reason (0008,1197) values, PS3.18 §10.5.3 with PS3.4 Annex B statuses."""

    PROCESSING_FAILURE = 0x0110
    # PS3.7 Annex C general status "Refused: Not Authorized".
    NOT_AUTHORISED = 0x0124
    OUT_OF_RESOURCES = 0xA700
    CANNOT_UNDERSTAND = 0xC000
    # Not in the SOP Class' status table; dcm4chee-arc uses the same code.
    STUDY_INSTANCE_UID_MISMATCH = 0xC409


# One comment for every refusal by project, so it tells nothing of which UID was taken;
# short enough for the 64 characters of an ErrorComment with its "part N: " prefix.
NOT_YOURS = "no right to store into its study, series or instance"
MAX_WARNINGS = 20


@dataclass(frozen=True)
class StoreAccess:
    """The projects whose series a caller sees, and those they may store into."""

    visible: frozenset[str]
    writable: frozenset[str]


def store_access(user: CurrentUser) -> StoreAccess | None:
    """None where nothing limits what the caller stores into (site admins, auth off)."""
    visible = project_scope(user)
    if visible is None:
        return None
    writable = (p for p, role in user.projects.items() if role.at_least(ProjectRole.RESEARCHER))
    return StoreAccess(frozenset(visible), frozenset(writable))


def _may_store(ingestor: Ingestor, path: Path, access: StoreAccess) -> bool:
    header = read_header(path)  # Invalid, as the ingest would raise it
    return SeriesProjects(ingestor.catalog.engine).may_add_instance(
        header, visible=access.visible, writable=access.writable
    )


@dataclass(frozen=True)
class PartOutcome:
    index: int
    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    stored: IngestResult | None = None
    failure: FailureReason | None = None
    message: str = ""


def _loose_uids(path: Path) -> tuple[str | None, str | None, str | None]:
    """SOP Class, SOP Instance and Study Instance UIDs if readable and valid, for the
    response entry of a part that may well be broken."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return None, None, None

    def valid(keyword: str) -> str | None:
        try:
            return check_uid(ds.get(keyword), keyword)
        except Exception:
            return None

    return valid("SOPClassUID"), valid("SOPInstanceUID"), valid("StudyInstanceUID")


def store_part(
    ingestor: Ingestor,
    part: ReceivedPart,
    expected_study: str | None,
    project: str | None = None,
    access: StoreAccess | None = None,
) -> PartOutcome:
    """Check and ingest one spooled part; every problem becomes a failure entry.

    With ``access``, a part outside what the caller may store into fails with
    :data:`NOT_YOURS` before anything of it is stored.
    """
    if part.size == 0:
        failure = FailureReason.CANNOT_UNDERSTAND
        return PartOutcome(part.index, None, None, None, failure=failure, message="part is empty")
    sop_class, sop_instance, study = _loose_uids(part.path)

    def failed(reason: FailureReason, message: str) -> PartOutcome:
        return PartOutcome(
            part.index, sop_class, sop_instance, study, failure=reason, message=message
        )

    media_type = part.content_type.split(";")[0].strip().lower()
    if media_type not in ("", DICOM):
        return failed(
            FailureReason.CANNOT_UNDERSTAND,
            f"part is {media_type}; only {DICOM} parts are accepted",
        )
    if expected_study is not None and study is not None and study != expected_study:
        return failed(
            FailureReason.STUDY_INSTANCE_UID_MISMATCH,
            f"StudyInstanceUID {study} differs from {expected_study} in the request URL",
        )
    try:
        if access is not None and not _may_store(ingestor, part.path, access):
            return failed(FailureReason.NOT_AUTHORISED, NOT_YOURS)
        result = ingestor.ingest_file(part.path, project=project)
    except OutOfResources as exc:
        return failed(FailureReason.OUT_OF_RESOURCES, str(exc))
    except Invalid as exc:
        return failed(FailureReason.CANNOT_UNDERSTAND, str(exc))
    except Exception as exc:
        log.exception("STOW-RS part failed", extra={"sop_instance_uid": sop_instance})
        return failed(FailureReason.PROCESSING_FAILURE, f"processing failure: {type(exc).__name__}")
    return PartOutcome(
        part.index,
        result.sop_class_uid,
        result.sop_instance_uid,
        result.study_instance_uid,
        stored=result,
    )


def _element(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]}


def _instance_url(base_url: str, result: IngestResult) -> str:
    return (
        f"{base_url}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
        f"/instances/{result.sop_instance_uid}"
    )


def response_dataset(
    outcomes: list[PartOutcome], base_url: str, expected_study: str | None
) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Table 10.5.3-1) as DICOM JSON."""
    referenced, failed = [], []
    for outcome in outcomes:
        item: dict[str, Any] = {}
        if outcome.sop_class_uid:
            item["00081150"] = _element("UI", outcome.sop_class_uid)
        if outcome.sop_instance_uid:
            item["00081155"] = _element("UI", outcome.sop_instance_uid)
        if outcome.stored is not None:
            item["00081190"] = _element("UR", _instance_url(base_url, outcome.stored))
            referenced.append(item)
        else:
            assert outcome.failure is not None
            item["00081197"] = _element("US", int(outcome.failure))
            item["00000902"] = _element("LO", f"part {outcome.index}: {outcome.message}"[:64])
            failed.append(item)
    studies = {o.stored.study_instance_uid for o in outcomes if o.stored is not None}
    study = expected_study or (studies.pop() if len(studies) == 1 else None)
    # Type 2 (PS3.18 Table I.1-1): the study's URL, empty when the request stored into
    # several studies or none.
    result: dict[str, Any] = {"00081190": {"vr": "UR"}}
    if study:
        result["00081190"] = _element("UR", f"{base_url}/studies/{study}")
    if failed:
        result["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        result["00081199"] = {"vr": "SQ", "Value": referenced}
    return result


def _warnings(outcomes: list[PartOutcome]) -> list[str]:
    """Warning header values (PS3.18 §8.1.2.2: ``299 <service>: <text>``).

    At most :data:`MAX_WARNINGS` headers, the last one counting the rest: the response
    body names every failed part.
    """
    texts: list[str] = []
    for outcome in outcomes:
        if outcome.failure is not None:
            texts.append(f"part {outcome.index} not stored: {outcome.message}")
        elif outcome.stored is not None and outcome.stored.outcome is AddOutcome.CONFLICT:
            texts.append(
                f"part {outcome.index}: instance {outcome.sop_instance_uid} is already stored "
                "with different content; the stored instance was kept"
            )
    if len(texts) > MAX_WARNINGS:
        rest = len(texts) - (MAX_WARNINGS - 1)
        texts = [*texts[: MAX_WARNINGS - 1], f"{rest} more parts with warnings or failures"]
    clean = (t.replace('"', "'").encode("latin-1", "replace").decode("latin-1") for t in texts)
    return [f'299 jip "{" ".join(t.split())}"' for t in clean]


def _status(outcomes: list[PartOutcome], warnings: list[str]) -> int:
    stored = sum(o.stored is not None for o in outcomes)
    if stored == 0:
        return 409
    return 202 if warnings else 200


def _check_request(request: Request, max_bytes: int) -> str:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/related":
        raise UnsupportedMediaType(
            f'STOW-RS takes multipart/related; type="{DICOM}", not {content_type or "no type"}'
        )
    boundary, params = boundary_of(content_type)
    part_type = params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise UnsupportedMediaType(
            f"STOW-RS here takes {DICOM} parts; {part_type} (metadata and bulk data) is not supported"
        )
    length = request.headers.get("content-length")
    if length and length.isdecimal() and int(length) > max_bytes:
        raise TooLarge(f"request body of {length} bytes exceeds the limit of {max_bytes} bytes")
    choose(accepted(request), [DICOM_JSON, JSON, DICOM_XML])  # fail before storing anything
    return boundary


# Who stores: the caller, the project they asked for (if any), the site's projects.
StowCaller = tuple[CurrentUser, str | None, Projects]


async def _store(
    request: Request,
    ingestor: Ingestor,
    settings: Settings,
    base_url: str,
    expected_study: str | None,
    caller: StowCaller,
) -> Response:
    """Both STOW-RS routes: spool, check and store each part, answer per PS3.18 §10.5."""
    user, asked_project, projects = caller
    project = target_project(user, asked_project, projects)
    access = store_access(user)
    spool_root = settings.data_dir / "tmp"
    max_bytes = settings.store.max_upload_bytes
    max_parts = settings.store.dicomweb.max_stow_parts
    boundary = _check_request(request, max_bytes)
    spool_root.mkdir(parents=True, exist_ok=True)
    spool = Path(tempfile.mkdtemp(dir=spool_root, prefix="stow-"))
    try:
        parts = await read_parts(request.stream(), boundary, spool, max_bytes, max_parts)
        if not parts:
            raise Invalid("STOW-RS request holds no parts")
        outcomes = [
            store_part(ingestor, part, expected_study, project, access)  # empty: no I/O
            if part.size == 0
            else await run_in_threadpool(
                store_part, ingestor, part, expected_study, project, access
            )
            for part in parts
        ]
    finally:
        await run_in_threadpool(shutil.rmtree, spool, True)
    warnings = _warnings(outcomes)
    body = response_dataset(outcomes, base_url, expected_study)
    response = dataset_response(request, body, status_code=_status(outcomes, warnings))
    for warning in warnings:
        response.headers.append("Warning", warning)
    return response


def target_project(user: CurrentUser, requested: str | None, projects: Projects) -> str | None:
    """The project new series of a STOW-RS request go to; None lets the rules decide.

    A named project needs the researcher role (site admins may name any project of the
    site, member or not); without one, a caller with exactly one project where they are
    researcher or owner stores there.
    """
    if requested is not None:
        check_project_name(requested)
        require_project_role(user, requested, ProjectRole.RESEARCHER)
        projects.get(requested)  # NotFound: a series must not land in no project
        return requested
    if user.is_admin:
        return None
    writable = sorted(p for p, r in user.projects.items() if r.at_least(ProjectRole.RESEARCHER))
    if len(writable) == 1:
        return writable[0]
    if not writable:
        raise Forbidden("storing needs the researcher role in a project")
    raise Invalid(f"name the project to store into with ?project= (one of {', '.join(writable)})")


ProjectQuery = Annotated[
    str | None, Query(description="The project new series go to (researcher role needed).")
]


@router.post("/studies", summary="Store Instances")
async def store_instances(
    request: Request,
    ingestor: IngestorDep,
    settings: SettingsDep,
    base_url: BaseUrlDep,
    user: CurrentUserDep,
    projects: ProjectsDep,
    project: ProjectQuery = None,
) -> Response:
    return await _store(request, ingestor, settings, base_url, None, (user, project, projects))


@router.post("/studies/{study}", summary="Store Instances of a Study")
async def store_study_instances(
    study: str,
    request: Request,
    ingestor: IngestorDep,
    settings: SettingsDep,
    base_url: BaseUrlDep,
    user: CurrentUserDep,
    projects: ProjectsDep,
    project: ProjectQuery = None,
) -> Response:
    return await _store(
        request,
        ingestor,
        settings,
        base_url,
        check_uid(study, "StudyInstanceUID"),
        (user, project, projects),
    )
