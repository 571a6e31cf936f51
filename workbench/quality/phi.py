"""Check DICOM headers against the Basic Application Level Confidentiality Profile.

Implements a check (not a de-identifier) following DICOM PS3.15 Annex E,
Table E.1-1: attributes the profile removes (action X), empties or replaces by
a dummy (Z, D) must be absent, empty or pseudonymous, at any depth of
nested sequences; retention options declared in the De-identification Method
Code Sequence (0012,0064) (PS3.15 E.3, CID 7050) allow the attributes they
retain. Also checked: Patient Identity Removed (0012,0062), private
attributes (PS3.15 E.3.10), dates (E.3.6) and free text that looks like a
person name. Messages never repeat the value found.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from workbench.quality.findings import Finding, Severity

__all__ = [
    "PROFILE",
    "ProfileEntry",
    "check_phi",
    "declared_options",
    "looks_like_person_name",
]

CHECK = "phi"

# Retention options of PS3.15 E.3 (DCM codes of CID 7050).
RETAIN_LONGITUDINAL_FULL = "113106"
RETAIN_LONGITUDINAL_MODIFIED = "113107"
RETAIN_PATIENT_CHARACTERISTICS = "113108"
RETAIN_DEVICE_IDENTITY = "113109"
RETAIN_INSTITUTION_IDENTITY = "113112"
CLEAN_DESCRIPTORS = "113105"
RETAIN_SAFE_PRIVATE = "113111"


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """One row of PS3.15 Table E.1-1 as this check uses it.

    Parameters
    ----------
    keyword : str
        DICOM keyword.
    action : str
        Basic profile action: ``X`` remove, ``Z`` zero length or dummy, ``D``
        dummy, ``X/Z``... as in the table (the strictest letter is checked).
    direct : bool
        A direct identifier (name, ID, address, phone, birth date, person
        identification): a value is a critical finding. Otherwise major.
    retained_by : str or None
        Code of the retention option that keeps the attribute, if any.
    """

    keyword: str
    action: str
    direct: bool
    retained_by: str | None = None


def _e(keyword: str, action: str, direct: bool, retained_by: str | None = None) -> ProfileEntry:
    return ProfileEntry(keyword, action, direct, retained_by)


_ENTRIES = (
    # Patient identification and demographics
    _e("PatientName", "Z", True),
    _e("PatientID", "Z", True),
    _e("IssuerOfPatientID", "X", True),
    _e("PatientBirthDate", "Z", True),
    _e("PatientBirthTime", "X", True),
    _e("PatientSex", "Z", False, RETAIN_PATIENT_CHARACTERISTICS),
    _e("PatientAge", "X", False, RETAIN_PATIENT_CHARACTERISTICS),
    _e("PatientSize", "X", False, RETAIN_PATIENT_CHARACTERISTICS),
    _e("PatientWeight", "X", False, RETAIN_PATIENT_CHARACTERISTICS),
    _e("EthnicGroup", "X", False, RETAIN_PATIENT_CHARACTERISTICS),
    _e("OtherPatientIDs", "X", True),
    _e("OtherPatientNames", "X", True),
    _e("OtherPatientIDsSequence", "X", True),
    _e("PatientBirthName", "X", True),
    _e("PatientMotherBirthName", "X", True),
    _e("PatientAddress", "X", True),
    _e("PatientTelephoneNumbers", "X", True),
    _e("CountryOfResidence", "X", False),
    _e("RegionOfResidence", "X", False),
    _e("Occupation", "X", False),
    _e("MedicalRecordLocator", "X", True),
    _e("PatientInsurancePlanCodeSequence", "X", True),
    _e("MilitaryRank", "X", False),
    _e("BranchOfService", "X", False),
    _e("ResponsiblePerson", "X", True),
    _e("ResponsibleOrganization", "X", False),
    _e("AdditionalPatientHistory", "X", False, CLEAN_DESCRIPTORS),
    _e("PatientComments", "X", False, CLEAN_DESCRIPTORS),
    _e("AdmissionID", "X", True),
    _e("CurrentPatientLocation", "X", False),
    _e("PatientInstitutionResidence", "X", False),
    # Persons involved in the study
    _e("ReferringPhysicianName", "Z", True),
    _e("ReferringPhysicianAddress", "X", True),
    _e("ReferringPhysicianTelephoneNumbers", "X", True),
    _e("ReferringPhysicianIdentificationSequence", "X", True),
    _e("ConsultingPhysicianName", "X", True),
    _e("PhysiciansOfRecord", "X", True),
    _e("PhysiciansOfRecordIdentificationSequence", "X", True),
    _e("PerformingPhysicianName", "X", True),
    _e("PerformingPhysicianIdentificationSequence", "X", True),
    _e("NameOfPhysiciansReadingStudy", "X", True),
    _e("PhysiciansReadingStudyIdentificationSequence", "X", True),
    _e("OperatorsName", "X", True),
    _e("OperatorIdentificationSequence", "X", True),
    _e("RequestingPhysician", "X", True),
    _e("ScheduledPerformingPhysicianName", "X", True),
    _e("PhysicianApprovingInterpretation", "X", True),
    _e("PersonName", "D", True),
    _e("PersonIdentificationCodeSequence", "D", True),
    _e("PersonAddress", "X", True),
    _e("PersonTelephoneNumbers", "X", True),
    _e("VerifyingObserverName", "D", True),
    _e("ContentCreatorName", "Z", True),
    # Institution and device
    _e("InstitutionName", "X", False, RETAIN_INSTITUTION_IDENTITY),
    _e("InstitutionAddress", "X", True, RETAIN_INSTITUTION_IDENTITY),
    _e("InstitutionalDepartmentName", "X", False, RETAIN_INSTITUTION_IDENTITY),
    _e("StationName", "X", False, RETAIN_DEVICE_IDENTITY),
    _e("DeviceSerialNumber", "X", False, RETAIN_DEVICE_IDENTITY),
    # Request / procedure identifiers
    _e("AccessionNumber", "Z", True),
    _e("StudyID", "Z", False),
    _e("RequestAttributesSequence", "X", False),
    _e("RequestedProcedureID", "X", True),
    _e("ScheduledProcedureStepID", "X", True),
    _e("PerformedProcedureStepID", "X", True),
    _e("RequestingService", "X", False),
    _e("StudyComments", "X", False, CLEAN_DESCRIPTORS),
    _e("ImageComments", "X", False, CLEAN_DESCRIPTORS),
    _e("RequestedProcedureDescription", "X", False, CLEAN_DESCRIPTORS),
    _e("PerformedProcedureStepDescription", "X", False, CLEAN_DESCRIPTORS),
    _e("AdmittingDiagnosesDescription", "X", False, CLEAN_DESCRIPTORS),
    _e("StudyDescription", "X", False, CLEAN_DESCRIPTORS),
    _e("SeriesDescription", "X", False, CLEAN_DESCRIPTORS),
    _e("ProtocolName", "X", False, CLEAN_DESCRIPTORS),
    # Dates and times (E.3.6)
    _e("StudyDate", "Z", False, RETAIN_LONGITUDINAL_MODIFIED),
    _e("SeriesDate", "X", False, RETAIN_LONGITUDINAL_MODIFIED),
    _e("AcquisitionDate", "X", False, RETAIN_LONGITUDINAL_MODIFIED),
    _e("ContentDate", "Z", False, RETAIN_LONGITUDINAL_MODIFIED),
    _e("InstanceCreationDate", "X", False, RETAIN_LONGITUDINAL_MODIFIED),
    _e("AcquisitionDateTime", "X", False, RETAIN_LONGITUDINAL_MODIFIED),
    _e("PerformedProcedureStepStartDate", "X", False, RETAIN_LONGITUDINAL_MODIFIED),
)

PROFILE: dict[BaseTag, ProfileEntry] = {Tag(e.keyword): e for e in _ENTRIES}
"""Attributes of PS3.15 Table E.1-1 checked here, by tag."""

_PLACEHOLDERS = {
    "",
    "ANON",
    "ANONYMOUS",
    "ANONYMIZED",
    "DEIDENTIFIED",
    "DE-IDENTIFIED",
    "REMOVED",
    "SYNTHETIC",
    "PHANTOM",
    "UNKNOWN",
    "PATIENT",
    "TEST",
    "NONE",
}
_TITLE_NAME = re.compile(r"\b(?:Dr|Prof|Mr|Mrs|Ms|Mx)\.?\s+[A-Z][a-z]+")
_CARET_NAME = re.compile(r"\b[A-Za-z][A-Za-z'\-]+\^[A-Za-z][A-Za-z'\-]+")
# Action Z with a pseudonymous dummy value is allowed and cannot be told apart per file.
_DUMMY_ALLOWED = {"PatientID", "AccessionNumber", "StudyID", "ContentCreatorName"}
_TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT"}


def _declared_options(ds: Dataset) -> set[str]:
    options: set[str] = set()
    for item in ds.get("DeidentificationMethodCodeSequence", []) or []:
        code = str(item.get("CodeValue", "") or "")
        if code:
            options.add(code)
    if RETAIN_LONGITUDINAL_FULL in options:
        options.add(RETAIN_LONGITUDINAL_MODIFIED)
    return options


def looks_like_person_name(value: str, *, pseudonyms: Collection[str] = ()) -> bool:
    """Heuristic: does a PN value look like a real person's name?

    Pseudonyms are accepted: empty values, placeholders (``ANONYMOUS``,
    ``SYNTHETIC``...), values containing a digit (generated codes such as
    ``WB0001``) or containing a known pseudonymous ID.
    """
    text = value.strip()
    if not text:
        return False
    if any(ch.isdigit() for ch in text):
        return False
    if any(p and p in text for p in pseudonyms):
        return False
    parts = [p.strip().upper() for p in re.split(r"[\^=\s]+", text) if p.strip()]
    if all(p in _PLACEHOLDERS for p in parts):
        return False
    return any(re.fullmatch(r"[A-Z][A-Z'\-\.]+", p) for p in parts)


def _free_text_has_name(value: str) -> bool:
    return bool(_TITLE_NAME.search(value) or _CARET_NAME.search(value))


def _walk(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, DataElement]]:
    """Yield (attribute path, element) for every element, recursing into sequences."""
    for elem in ds:
        name = f"{elem.keyword or 'Private'} ({elem.tag.group:04X},{elem.tag.element:04X})"
        path = f"{prefix}.{name}" if prefix else name
        yield path, elem
        if elem.VR == "SQ":
            label = (
                f"{prefix}.{elem.keyword or elem.tag}" if prefix else str(elem.keyword or elem.tag)
            )
            for i, item in enumerate(elem.value or []):
                yield from _walk(item, f"{label}[{i}]")


def _has_value(elem: DataElement) -> bool:
    value = elem.value
    if value is None:
        return False
    if elem.VR == "SQ":
        return len(value) > 0
    if isinstance(value, bytes | str):
        return len(value.strip() if isinstance(value, str) else value) > 0
    try:
        return len(value) > 0
    except TypeError:
        return True


def _strings(elem: DataElement) -> list[str]:
    value = elem.value
    if value is None:
        return []
    items = list(value) if elem.VM > 1 else [value]
    return [str(v) for v in items if v is not None]


def declared_options(ds: Dataset) -> set[str]:
    """Codes of the PS3.15 retention options declared in DeidentificationMethodCodeSequence."""
    return _declared_options(ds)


def check_phi(ds: Dataset, path: str, *, inherited_options: Iterable[str] = ()) -> list[Finding]:
    """Check one dataset against the confidentiality profile.

    Parameters
    ----------
    ds : pydicom.Dataset
        The file's dataset (pixel data not needed).
    path : str
        Relative path for the findings.
    inherited_options : iterable of str
        Retention options declared elsewhere in the same study (e.g. by the CT
        images a SEG derives from); the de-identification of a study applies to
        every object of it.

    Returns
    -------
    list of Finding
        One finding per file and attribute.
    """
    findings: list[Finding] = []
    options = _declared_options(ds) | set(inherited_options)
    pseudonyms = {str(ds.get("PatientID", "") or "").strip()} - {""}

    def add(
        severity: Severity,
        attribute: str,
        message: str,
        expected: str = "absent or empty",
        found: str = "a value",
    ) -> None:
        findings.append(Finding(CHECK, severity, path, attribute, message, expected, found))

    removed = str(ds.get("PatientIdentityRemoved", "") or "").upper()
    if removed != "YES":
        add(
            Severity.MAJOR,
            "PatientIdentityRemoved (0012,0062)",
            f"expected YES for a de-identified test set, found {removed or 'no value'}",
            "YES",
            removed or "no value",
        )
    reported: set[str] = set()
    private_groups: dict[int, int] = {}
    for attr, elem in _walk(ds):
        if elem.tag.is_private:
            if elem.VR != "SQ" and elem.tag.element > 0x00FF and _has_value(elem):
                if RETAIN_SAFE_PRIVATE not in options:
                    private_groups[elem.tag.group] = private_groups.get(elem.tag.group, 0) + 1
            continue
        entry = PROFILE.get(elem.tag)
        if entry is not None and _has_value(elem):
            retained = entry.retained_by is not None and entry.retained_by in options
            if elem.VR == "PN":
                if any(looks_like_person_name(v, pseudonyms=pseudonyms) for v in _strings(elem)):
                    add(
                        Severity.CRITICAL,
                        attr,
                        "contains a value that looks like a person name",
                        "empty or a pseudonym",
                        "a value that looks like a person name",
                    )
                reported.add(attr)
                continue
            if entry.keyword == "PatientBirthDate":
                add(
                    Severity.CRITICAL,
                    attr,
                    "contains a date of birth; the Basic Profile requires it empty",
                    "empty",
                    "a date",
                )
                reported.add(attr)
                continue
            if entry.keyword in _DUMMY_ALLOWED or retained:
                continue
            if elem.VR in ("DA", "DT"):
                add(
                    Severity.MAJOR,
                    attr,
                    "contains a date although no Retain Longitudinal Temporal Information "
                    "option is declared in DeidentificationMethodCodeSequence (PS3.15 E.3.6)",
                    "absent or empty",
                    "a date",
                )
                reported.add(attr)
                continue
            what = "a sequence with items" if elem.VR == "SQ" else "a value"
            option = f" unless option {entry.retained_by} is declared" if entry.retained_by else ""
            add(
                Severity.CRITICAL if entry.direct else Severity.MAJOR,
                attr,
                f"identifying attribute (PS3.15 Table E.1-1, action {entry.action}) contains "
                f"{what}; expected absent or empty{option}",
                "absent or empty",
                what,
            )
            reported.add(attr)
        if attr in reported or elem.VR not in _TEXT_VRS or not _has_value(elem):
            continue
        if elem.VR == "PN":
            if any(looks_like_person_name(v, pseudonyms=pseudonyms) for v in _strings(elem)):
                add(
                    Severity.CRITICAL,
                    attr,
                    "contains a value that looks like a person name",
                    "empty or a pseudonym",
                    "a value that looks like a person name",
                )
        elif any(_free_text_has_name(v) for v in _strings(elem)):
            add(
                Severity.CRITICAL,
                attr,
                "free text contains a value that looks like a person name",
                "no person names",
                "a value that looks like a person name",
            )
    # one finding per private group, not one per private attribute
    for group, count in sorted(private_groups.items()):
        add(
            Severity.MAJOR,
            f"private attributes ({group:04X},xxxx)",
            f"{count} private attribute(s) with values in group {group:04X}; the Basic Profile "
            "removes private attributes unless the Retain Safe Private Option is declared",
            "absent (or Retain Safe Private Option declared)",
            f"{count} with values",
        )
    return findings
