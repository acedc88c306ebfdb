"""PS3.15 Annex E Basic Application Level Confidentiality Profile, for common attributes.

The action codes are the standard's (Table E.1-1): X remove, Z empty (or dummy), D dummy,
K keep, U replace UID. Where the table offers a choice, this module picks X when the
attribute is optional in the IODs JIP handles, Z when it is Type 2, and D when some of
them require a value (Content Date and Time are Type 1 in multi-frame objects such as
SEG, Device Serial Number in Enhanced General Equipment). Patient's Name and ID get a
salted pseudonym, which Z allows ("or a non-zero length value that may be a dummy"), so
instances of one patient stay together within a run.

Beyond the table's listed attributes: every private element is removed, overlay (60xx)
and curve (50xx) groups are removed (overlays can hold annotations), and every UID that
is not a DICOM-defined one (root 1.2.840.10008) is replaced, wherever it occurs, by a
hash of a secret salt and the original UID, so references between objects survive.
Pixel data is copied untouched: burned-in text is not detected or cleaned.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid


class Action(StrEnum):
    """What happens to an attribute (PS3.15 Table E.1-1 codes, plus a pseudonym)."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    KEEP = "K"
    UID = "U"
    PSEUDONYM = "P"


X, Z, D, P = Action.REMOVE, Action.EMPTY, Action.DUMMY, Action.PSEUDONYM

# Basic profile actions for the attributes common in CT, MR, SEG and their studies.
BASIC_PROFILE: Mapping[str, Action] = {
    # Patient
    "PatientName": P,
    "PatientID": P,
    "IssuerOfPatientID": X,
    "IssuerOfPatientIDQualifiersSequence": X,
    "PatientBirthDate": Z,
    "PatientBirthTime": X,
    "PatientBirthName": X,
    "PatientMotherBirthName": X,
    "PatientAddress": X,
    "PatientTelephoneNumbers": X,
    "OtherPatientIDs": X,
    "OtherPatientIDsSequence": X,
    "OtherPatientNames": X,
    "PatientAge": X,
    "PatientSex": Z,
    "PatientSize": X,
    "PatientWeight": X,
    "EthnicGroup": X,
    "PatientSexNeutered": X,
    "SmokingStatus": X,
    "PregnancyStatus": X,
    "MedicalAlerts": X,
    "Allergies": X,
    "AdditionalPatientHistory": X,
    "PatientComments": X,
    "PatientReligiousPreference": X,
    "Occupation": X,
    "MilitaryRank": X,
    "BranchOfService": X,
    "CountryOfResidence": X,
    "RegionOfResidence": X,
    "MedicalRecordLocator": X,
    "PatientInsurancePlanCodeSequence": X,
    "PatientPrimaryLanguageCodeSequence": X,
    "PatientState": X,
    "ResponsiblePerson": X,
    "ResponsibleOrganization": X,
    "PatientBreedDescription": X,
    "ReferencedPatientSequence": X,
    "ReferencedPatientPhotoSequence": X,
    # Study, visit, request
    "StudyDate": Z,
    "StudyTime": Z,
    "StudyID": Z,
    "AccessionNumber": Z,
    "IssuerOfAccessionNumberSequence": X,
    "StudyDescription": X,
    "StudyComments": X,
    "ReferringPhysicianName": Z,
    "ReferringPhysicianAddress": X,
    "ReferringPhysicianTelephoneNumbers": X,
    "ReferringPhysicianIdentificationSequence": X,
    "ConsultingPhysicianName": X,
    "ConsultingPhysicianIdentificationSequence": X,
    "PhysiciansOfRecord": X,
    "PhysiciansOfRecordIdentificationSequence": X,
    "NameOfPhysiciansReadingStudy": X,
    "PhysiciansReadingStudyIdentificationSequence": X,
    "RequestingPhysician": X,
    "RequestingService": X,
    "AdmittingDiagnosesDescription": X,
    "AdmittingDiagnosesCodeSequence": X,
    "AdmissionID": X,
    "IssuerOfAdmissionIDSequence": X,
    "ServiceEpisodeID": X,
    "ServiceEpisodeDescription": X,
    "ReasonForStudy": X,
    "RequestAttributesSequence": X,
    "RequestedProcedureDescription": X,
    "RequestedProcedureID": X,
    "PlacerOrderNumberImagingServiceRequest": X,
    "FillerOrderNumberImagingServiceRequest": X,
    "ReferencedStudySequence": X,
    "ProcedureCodeSequence": X,
    "ReferencedPerformedProcedureStepSequence": X,
    "PerformedProcedureStepDescription": X,
    "PerformedProcedureStepID": X,
    "PerformedProcedureStepStartDate": X,
    "PerformedProcedureStepStartTime": X,
    "PerformedProcedureStepEndDate": X,
    "PerformedProcedureStepEndTime": X,
    "ScheduledPerformingPhysicianName": X,
    "InterpretationAuthor": X,
    # Series, equipment, staff
    "SeriesDate": X,
    "SeriesTime": X,
    "SeriesDescription": X,
    "ProtocolName": X,
    "OperatorsName": X,
    "OperatorIdentificationSequence": X,
    "PerformingPhysicianName": X,
    "PerformingPhysicianIdentificationSequence": X,
    "InstitutionName": X,
    "InstitutionAddress": X,
    "InstitutionalDepartmentName": X,
    "InstitutionCodeSequence": X,
    "StationName": X,
    "DeviceSerialNumber": D,
    "DetectorID": X,
    "GantryID": X,
    "PlateID": X,
    "CassetteID": X,
    "TimezoneOffsetFromUTC": X,
    "DateOfLastCalibration": X,
    "TimeOfLastCalibration": X,
    "AcquisitionDeviceProcessingDescription": X,
    # Image and instance
    "AcquisitionDate": X,
    "AcquisitionTime": X,
    "AcquisitionDateTime": X,
    "ContentDate": Z,
    "ContentTime": Z,
    "InstanceCreationDate": X,
    "InstanceCreationTime": X,
    "DateOfSecondaryCapture": X,
    "TimeOfSecondaryCapture": X,
    "ImageComments": X,
    "FrameComments": X,
    "DerivationDescription": X,
    "AcquisitionComments": X,
    "ContentCreatorName": Z,
    "ContentCreatorIdentificationCodeSequence": X,
    "TextString": X,
    "PersonName": X,
    "PersonAddress": X,
    "PersonTelephoneNumbers": X,
    "VerifyingObserverName": D,
    "VerifyingOrganization": X,
    # Integrity and provenance that would carry the original values
    "DigitalSignaturesSequence": X,
    "MACParametersSequence": X,
    "EncryptedAttributesSequence": X,
    "OriginalAttributesSequence": X,
    "ModifiedAttributesSequence": X,
    "DataSetTrailingPadding": X,
    "StorageMediaFileSetID": X,
}

# Type 1 in the Multi-frame Functional Groups module (PS3.3 C.7.6.16): a dummy keeps a
# SEG or enhanced image valid where an empty value would not.
_REQUIRED_IN_MULTIFRAME = frozenset({"ContentDate", "ContentTime", "AcquisitionDateTime"})

# Retain Patient Characteristics Option (PS3.15 E.3.6): kept as they are.
PATIENT_CHARACTERISTICS = frozenset(
    {
        "PatientAge",
        "PatientSex",
        "PatientSize",
        "PatientWeight",
        "EthnicGroup",
        "PatientSexNeutered",
        "SmokingStatus",
        "PregnancyStatus",
    }
)

# UID attributes naming a class, syntax or scheme rather than an instance: never mapped,
# even where they hold a vendor's private UID.
_TYPE_UIDS = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "ReferencedSOPClassUIDInFile",
        "ReferencedTransferSyntaxUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "PrivateRecordUID",
        "ContextGroupExtensionCreatorUID",
        "CodingSchemeRegistry",
    }
)
_DICOM_ROOT = "1.2.840.10008."
_DUMMY = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "PN": "ANONYMIZED",
    "CS": "ANONYMIZED",
}


@dataclass(frozen=True)
class Policy:
    """The run's secret and the options in force."""

    salt: str
    retain_modified_dates: bool = False
    retain_patient_characteristics: bool = False
    date_shift_max_days: int = 3650
    uid_prefix: str = PYDICOM_ROOT_UID

    def method_codes(self) -> list[Code]:
        """CID 7050 codes of the profile and the options used."""
        used = [codes.cid7050.BasicApplicationConfidentialityProfile]
        if self.retain_modified_dates:
            used.append(codes.cid7050.RetainLongitudinalTemporalInformationModifiedDatesOption)
        if self.retain_patient_characteristics:
            used.append(codes.cid7050.RetainPatientCharacteristicsOption)
        return used


def map_uid(uid: str, policy: Policy) -> str:
    """The replacement UID: the same for the same original and salt, unguessable without it."""
    return str(generate_uid(prefix=policy.uid_prefix, entropy_srcs=[policy.salt, "|", uid]))


def pseudonym(patient_id: str, policy: Policy) -> str:
    """A stable, salted code standing in for the patient's name and ID."""
    digest = hmac.new(policy.salt.encode(), f"patient|{patient_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:16].upper()


def date_offset_days(patient_id: str, policy: Policy) -> int:
    """How many days this patient's dates move back (1..max), the same for every study."""
    digest = hmac.new(policy.salt.encode(), f"dates|{patient_id}".encode(), hashlib.sha256)
    return -(1 + int(digest.hexdigest(), 16) % policy.date_shift_max_days)


def shift_date(value: str, days: int) -> str:
    """Shift a DA (YYYYMMDD) or the date part of a DT; other forms are left empty."""
    try:
        moved = dt.datetime.strptime(value[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    except ValueError:
        return ""
    return moved.strftime("%Y%m%d") + value[8:]


def deidentify(source: Dataset, policy: Policy) -> Dataset:
    """A de-identified copy of one instance (the input is not modified)."""
    ds = copy.deepcopy(source)
    patient_id = str(source.get("PatientID", ""))
    days = date_offset_days(patient_id, policy) if policy.retain_modified_dates else 0
    multiframe = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
    ds.remove_private_tags()
    # Curves (50xx) and overlays (60xx), PS3.15 E.1-1: overlays can carry annotations.
    for tag in [
        e.tag
        for e in ds
        if 0x5000 <= e.tag.group <= 0x60FF
        and e.tag.group % 2 == 0
        and (e.tag.group < 0x5100 or e.tag.group >= 0x6000)
    ]:
        del ds[tag]
    _clean(ds, policy, patient_id, days, multiframe)
    _mark(ds, policy)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = source.file_meta.TransferSyntaxUID
    ds.file_meta = meta
    return ds


def _clean(ds: Dataset, policy: Policy, patient_id: str, days: int, multiframe: bool) -> None:
    for element in list(ds):
        keyword = element.keyword
        action = _action(keyword, policy)
        if (
            element.VR in ("DA", "DT")
            and policy.retain_modified_dates
            and keyword != "PatientBirthDate"
        ):
            # Modified Dates Option (PS3.15 E.3.6): every date moves by the patient's offset.
            if element.value:
                values = element.value if element.VM > 1 else [element.value]
                shifted = [shift_date(str(v), days) for v in values]
                element.value = shifted if element.VM > 1 else shifted[0]
            continue
        if element.VR == "TM" and policy.retain_modified_dates and keyword != "PatientBirthTime":
            continue  # times of day stay; only the day moves
        if action is Action.REMOVE:
            del ds[element.tag]
        elif action is Action.EMPTY and keyword in _REQUIRED_IN_MULTIFRAME and multiframe:
            element.value = _DUMMY.get(element.VR, "ANONYMIZED")
        elif action is Action.EMPTY:
            element.value = None
        elif action is Action.DUMMY:
            if element.value not in (None, ""):
                element.value = _DUMMY.get(element.VR, "ANONYMIZED")
        elif action is Action.PSEUDONYM:
            code = pseudonym(patient_id, policy)
            # A PN with a component delimiter: "JIP^<code>" (family^given), PS3.5 6.2.1.
            element.value = f"JIP^{code}" if element.VR == "PN" else f"JIP-{code}"
        elif element.VR == "SQ":
            for item in element.value:
                _clean(item, policy, patient_id, days, multiframe)
        elif element.VR == "UI" and keyword not in _TYPE_UIDS and element.value:
            element.value = _map_values(element.value, element.VM, policy)


def _action(keyword: str, policy: Policy) -> Action:
    if policy.retain_patient_characteristics and keyword in PATIENT_CHARACTERISTICS:
        return Action.KEEP
    return BASIC_PROFILE.get(keyword, Action.KEEP)


def _map_values(value: object, vm: int, policy: Policy) -> object:
    values = list(value) if vm > 1 else [value]  # type: ignore[call-overload]
    mapped = [v if str(v).startswith(_DICOM_ROOT) else map_uid(str(v), policy) for v in values]
    return mapped if vm > 1 else mapped[0]


def _mark(ds: Dataset, policy: Policy) -> None:
    """PS3.3 C.7.1.1: say that and how the instance was de-identified."""
    ds.PatientIdentityRemoved = "YES"
    used = policy.method_codes()
    ds.DeidentificationMethod = ["JIP deidentify: PS3.15 Annex E"] + [c.meaning[:64] for c in used]
    items = []
    for code in used:
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if policy.retain_modified_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
