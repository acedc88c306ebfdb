"""A study-level query of a DICOM peer as a person asks it, and what it found.

The PACS page and saved queries ask by patient name or ID, a study date range, a
modality and an accession number; :meth:`StudyQuery.keys` turns that into a Study Root
C-FIND identifier (PS3.4 C.6.2.1.2) that also asks for what the results table shows.
Each match says how much of it this site already stores, so a saved query retrieves
only what is new.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, Field, computed_field, field_validator
from sqlalchemy import Engine, func, select

from jip.config import DicomPeer, Settings
from jip.store.catalog.queries import QueryLevel
from jip.store.catalog.tables import Instance, Series
from jip.store.dimse import scu

_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
# PS3.5 6.2: no backslash (value separator) and no control characters in a match string.
_PLAIN = r"^[^\\\x00-\x1f]*$"
# What every match is asked to return (universal matching, PS3.4 C.2.2.2.3).
_RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)


class StudyQuery(BaseModel):
    """What to look for; empty fields match anything."""

    patient_name: str = Field(default="", max_length=64, pattern=_PLAIN)
    patient_id: str = Field(default="", max_length=64, pattern=_PLAIN)
    study_date_from: str = Field(default="", max_length=10)
    study_date_to: str = Field(default="", max_length=10)
    modality: str = Field(default="", max_length=16, pattern=r"^[A-Za-z0-9]*$")
    accession_number: str = Field(default="", max_length=16, pattern=_PLAIN)

    @field_validator("study_date_from", "study_date_to")
    @classmethod
    def _date(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        match = _DATE.match(value)
        if match is None:
            raise ValueError(f"date {value!r}: use YYYY-MM-DD or YYYYMMDD")
        return "".join(match.groups())

    def keys(self) -> dict[str, str]:
        """The C-FIND identifier's keys: match strings and the keys to return."""
        keys = dict.fromkeys(_RETURN_KEYS, "")
        name = self.patient_name.strip()
        if name:
            # A name is matched as typed if it has wildcards, else as a prefix (as most
            # PACS front ends do): "Doe" finds "Doe^John".
            keys["PatientName"] = name if any(c in name for c in "*?") else f"{name}*"
        keys["PatientID"] = self.patient_id.strip()
        if self.study_date_from or self.study_date_to:
            # A range (PS3.4 C.2.2.2.5): "from-", "-to" or "from-to".
            keys["StudyDate"] = f"{self.study_date_from}-{self.study_date_to}"
        keys["ModalitiesInStudy"] = self.modality.strip().upper()
        keys["AccessionNumber"] = self.accession_number.strip()
        return keys

    def used(self) -> list[str]:
        """The fields given (for the audit log, which records no patient data)."""
        return [name for name, value in self.model_dump().items() if value]


class StudyMatch(BaseModel, frozen=True):
    """One study the peer found, and how many of its instances are stored here."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    study_date: str
    study_time: str
    accession_number: str
    modalities: str
    study_description: str
    series: int | None
    instances: int | None
    stored_instances: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stored(self) -> bool:
        """Whether this site holds the whole study (as far as the peer says how big)."""
        if self.stored_instances == 0:
            return False
        return self.instances is None or self.stored_instances >= self.instances


def find_studies(
    settings: Settings, engine: Engine, peer: DicomPeer, query: StudyQuery
) -> tuple[list[StudyMatch], bool]:
    """The studies ``peer`` matches (at most ``store.pacs.max_query_results``), and
    whether more were dropped."""
    limit = settings.store.pacs.max_query_results
    found = scu.find(settings, peer, QueryLevel.STUDY, query.keys())
    uids = [str(ds.get("StudyInstanceUID", "") or "") for ds in found[:limit]]
    stored = stored_instance_counts(engine, [uid for uid in uids if uid])
    matches = [
        _match(ds, stored.get(uid, 0)) for ds, uid in zip(found[:limit], uids, strict=True) if uid
    ]
    matches.sort(key=lambda m: (m.study_date, m.study_time), reverse=True)
    return matches, len(found) > limit


def stored_instance_counts(engine: Engine, study_uids: Sequence[str]) -> dict[str, int]:
    """Instances stored here per study (studies with none are left out)."""
    if not study_uids:
        return {}
    query = (
        select(Series.study_instance_uid, func.count(Instance.sop_instance_uid))
        .join(Instance, Instance.series_instance_uid == Series.series_instance_uid)
        .where(Series.study_instance_uid.in_(sorted(set(study_uids))))
        .group_by(Series.study_instance_uid)
    )
    with engine.connect() as conn:
        return {uid: int(count) for uid, count in conn.execute(query)}


def _match(ds: object, stored: int) -> StudyMatch:
    def text(keyword: str) -> str:
        value = getattr(ds, keyword, "") or ""
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return "\\".join(str(v) for v in value)
        return str(value)

    def number(keyword: str) -> int | None:
        value = text(keyword)
        return int(value) if value.strip().isdigit() else None

    return StudyMatch(
        study_instance_uid=text("StudyInstanceUID"),
        patient_name=text("PatientName").replace("^", " ").strip(),
        patient_id=text("PatientID"),
        patient_birth_date=text("PatientBirthDate"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        accession_number=text("AccessionNumber"),
        modalities=text("ModalitiesInStudy").replace("\\", ", "),
        study_description=text("StudyDescription"),
        series=number("NumberOfStudyRelatedSeries"),
        instances=number("NumberOfStudyRelatedInstances"),
        stored_instances=stored,
    )
