"""Upload: DICOM files, folders and zips from a browser or `jip dicom upload`.

The body is multipart/form-data (what a browser's ``FormData`` sends), spooled part by
part to disk by the STOW-RS reader (:func:`jip.store.dicomweb.multipart.read_parts`),
never held in memory. A part is a DICOM file or a zip; a zip is opened from its spool
file and its members are extracted one at a time, so a 2 GB archive needs no more
memory than a small one. Every file then takes STOW-RS's per-part path
(:func:`jip.store.dicomweb.stow.store_part`): the same project checks, the one ingest
path (:mod:`jip.store.ingest`), the same durability. What is refused is named with
its reason, and nothing of it is stored.
"""

from __future__ import annotations

import enum
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from jip.errors import Invalid
from jip.store.catalog.catalog import AddOutcome
from jip.store.dicomweb.multipart import ReceivedPart
from jip.store.dicomweb.stow import PartOutcome, StoreAccess, store_part
from jip.store.ingest import Ingestor

log = logging.getLogger(__name__)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_CHUNK = 1024 * 1024
# Files a CD export or an archiver adds that are no instances: said, not refused.
_SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


class FileStatus(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the same instance, byte for byte, was already stored
    REFUSED = "refused"  # nothing of it stored; ``reason`` says why
    SKIPPED = "skipped"  # no instance (DICOMDIR, a system file): nothing to store


@dataclass(frozen=True)
class FileResult:
    """What became of one uploaded file (or zip member)."""

    name: str
    status: FileStatus
    reason: str = ""
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None


@dataclass
class UploadReport:
    project: str | None
    results: list[FileResult]

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in FileStatus}
        for result in self.results:
            counts[result.status.value] += 1
        return counts

    def as_json(self) -> dict[str, object]:
        return {
            "project": self.project,
            "files": len(self.results),
            **self.counts(),
            "results": [asdict(r) for r in self.results],
        }


def file_name(part: ReceivedPart) -> str:
    """The file name a form-data part carries (a browser sends a folder's relative
    path when asked to), else ``part-<n>``."""
    disposition = part.headers.get("content-disposition", "")
    for item in disposition.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.lower() == "filename*" and "''" in value:
            return unquote(value.split("''", 1)[1])
        if key.lower() == "filename":
            return value.strip().strip('"').replace("%22", '"') or f"part-{part.index}"
    return f"part-{part.index}"


def _skip_reason(name: str) -> str | None:
    path = PurePosixPath(name)
    if path.name.upper() == "DICOMDIR":
        return "DICOMDIR is the media's index, not an instance"
    if "__MACOSX" in path.parts or path.name.startswith("._") or path.name.lower() in _SYSTEM_NAMES:
        return "a file the operating system adds, not an instance"
    return None


def is_zip(path: Path) -> bool:
    """A zip by its first bytes, unless it is a DICOM file whose preamble happens to
    look like one (``DICM`` at offset 128 decides, PS3.10 §7.1)."""
    with path.open("rb") as handle:
        head = handle.read(132)
    return head[:4] in _ZIP_MAGIC and head[128:132] != b"DICM"


def _result(name: str, outcome: PartOutcome) -> FileResult:
    if outcome.stored is None:
        status, reason = FileStatus.REFUSED, outcome.message
    else:
        status, reason = _STORED_AS[outcome.stored.outcome]
    return FileResult(
        name,
        status,
        reason,
        sop_instance_uid=outcome.sop_instance_uid,
        series_instance_uid=outcome.stored.series_instance_uid if outcome.stored else None,
        study_instance_uid=outcome.study_instance_uid,
    )


# What the catalog's answer means for the person who uploaded the file.
_STORED_AS: dict[AddOutcome, tuple[FileStatus, str]] = {
    AddOutcome.STORED: (FileStatus.STORED, ""),
    AddOutcome.DUPLICATE: (FileStatus.DUPLICATE, "already stored"),
    AddOutcome.CONFLICT: (
        FileStatus.REFUSED,
        "an instance with this SOP Instance UID is already stored with other content; "
        "the stored one was kept (site admins see it under conflicts)",
    ),
    AddOutcome.OVERWRITTEN: (FileStatus.STORED, "replaced the stored instance"),
}


class Uploader:
    """Stores the spooled parts of one upload into ``project`` for one caller."""

    def __init__(
        self,
        ingestor: Ingestor,
        *,
        project: str | None,
        access: StoreAccess | None,
        spool: Path,
        max_member_bytes: int,
    ) -> None:
        self.ingestor = ingestor
        self.project = project
        self.access = access  # None: nothing limits where the caller stores
        self.spool = spool
        self.max_member_bytes = max_member_bytes  # store.max_upload_bytes, unpacked

    def store_all(self, parts: list[ReceivedPart]) -> UploadReport:
        results: list[FileResult] = []
        for part in parts:
            results.extend(self._part(part))
        return UploadReport(self.project, results)

    def _part(self, part: ReceivedPart) -> Iterator[FileResult]:
        name = file_name(part)
        if (reason := _skip_reason(name)) is not None:
            part.path.unlink(missing_ok=True)
            yield FileResult(name, FileStatus.SKIPPED, reason)
        elif part.size and is_zip(part.path):
            try:
                yield from self._zip(name, part.path)
            finally:
                part.path.unlink(missing_ok=True)
        else:
            yield self._file(name, part)

    def _file(self, name: str, part: ReceivedPart) -> FileResult:
        # The form-data part's own type (often application/octet-stream, or a guess from
        # the file name) says nothing about DICOM: the content decides.
        plain = ReceivedPart(part.index, {}, part.path, part.size)
        return _result(name, store_part(self.ingestor, plain, None, self.project, self.access))

    def _zip(self, name: str, path: Path) -> Iterator[FileResult]:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            yield FileResult(name, FileStatus.REFUSED, f"not a readable zip: {exc}")
            return
        with archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            for index, info in enumerate(members, start=1):
                yield self._member(archive, info, f"{name}/{info.filename}", index)

    def _member(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, index: int
    ) -> FileResult:
        if (reason := _skip_reason(info.filename)) is not None:
            return FileResult(name, FileStatus.SKIPPED, reason)
        if info.file_size > self.max_member_bytes:
            return FileResult(
                name,
                FileStatus.REFUSED,
                f"{info.file_size} bytes unpacked, over store.max_upload_bytes "
                f"({self.max_member_bytes})",
            )
        fd, spooled = tempfile.mkstemp(dir=self.spool, suffix=".member")
        target = Path(spooled)
        try:
            with open(fd, "wb") as out, archive.open(info) as source:
                shutil.copyfileobj(source, out, _CHUNK)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            target.unlink(missing_ok=True)
            return FileResult(name, FileStatus.REFUSED, f"cannot unpack from the zip: {exc}")
        if zipfile.is_zipfile(target) and is_zip(target):
            target.unlink(missing_ok=True)
            return FileResult(name, FileStatus.REFUSED, "a zip inside the zip: upload it alone")
        member = ReceivedPart(index, {}, target, info.file_size)
        return _result(name, store_part(self.ingestor, member, None, self.project, self.access))


def check_form(content_type: str) -> str:
    """The boundary of a multipart/form-data body; :class:`Invalid` for anything else."""
    media_type, *params = content_type.split(";")
    if media_type.strip().lower() != "multipart/form-data":
        raise Invalid(
            "upload takes multipart/form-data (files and zips as form fields), not "
            f"{media_type.strip() or 'no type'}; `jip dicom upload` and the Upload page send it"
        )
    for item in params:
        key, _, value = item.strip().partition("=")
        if key.lower() == "boundary" and value.strip('"'):
            boundary = value.strip('"')
            if len(boundary) > 70:
                raise Invalid("multipart boundary is longer than 70 characters (RFC 2046)")
            return boundary
    raise Invalid("multipart/form-data body without a boundary parameter")
