"""De-identification on intake: the PS3.15 Basic Application Level Confidentiality Profile.

Images pulled from a clinical PACS carry protected health information. This
module applies the Basic Profile of DICOM PS3.15 Annex E (Table E.1-1) with a
declared subset of its options (PS3.15 E.3), writes the result as new files and
keeps no key that could lead back to the patient.

Choice of library
-----------------
The attribute actions come from ``dicom-anonymizer`` (Kitware,
``dicomanonymizer``): it ships Table E.1-1 of named editions of the standard as
data (``dicomfields_2026c`` is used here: 655 attributes and attribute ranges
with their action letter D, Z, X, U, Z/D, X/Z, X/D, X/Z/D, X/Z/U*) and its
element-level dummy and empty actions by VR. It was preferred to the
alternatives evaluated:

- ``dicognito`` replaces every PN, UI and date and a hand-kept list of
  attributes; it does not follow the profile's table, so attributes the profile
  removes (descriptions, comments, procedure identifiers) stay.
- ``deid`` (pydicom/deid) applies recipes; its default header recipe is its own
  list, not Table E.1-1, and the options would have to be written as recipes.

``dicom-anonymizer``'s own ``anonymize_dataset`` does three things a test set
cannot accept, so its tables are applied here by a walker of our own while its
element-level actions are reused:

1. it resolves every composite action (X/D, X/Z/D, Z/D) to D, leaving a dummy
   value where the profile prefers removal; here the least informative letter
   is taken (X, else Z) except where the IOD needs a value (Type 1 at the top
   level of enhanced multi-frame, SEG and SR objects);
2. it acts only on the top-level dataset, so identifiers nested in sequences
   would stay; here every item of every sequence is cleaned;
3. its UID replacement draws random UIDs kept in a module-level dictionary for
   the life of the process (a mapping from the original UIDs); here a UID is
   replaced by a keyed hash, so the same UID gets the same pseudonym everywhere
   in an import and nothing maps back.

What is done
------------
- Every attribute of Table E.1-1 found at any depth gets its action; private
  attributes are removed (E.3.10, the Retain Safe Private Option is not offered).
- UIDs (action U, and D on a UI) become ``2.25.<decimal>`` from
  HMAC-SHA-256(secret, UID): consistent across a study and every object that
  references it, so SEG, SR and RTSTRUCT references still resolve. Referenced
  and Source Image Sequences (X/Z/U*) are kept with their UIDs replaced.
  Content Sequence (D) is cleaned item by item so that an SR keeps its tree.
- Patient ID and Patient's Name get the same pseudonym per patient
  (``DEID`` and ten digits, from the same keyed hash).
- :class:`DeidentificationOptions` declares the retention options; each adds its
  code from PS3.16 CID 7050 to De-identification Method Code Sequence
  (0012,0064) next to 113100. The attributes an option retains are those its
  column of Table E.1-1 marks K (copied below from the 2026c edition);
  with the Modified Dates option every date the profile acts on (column C)
  is shifted by a per-patient number of days and times are kept.
- Clean Pixel Data (113101): images of modalities that commonly carry burned-in
  text, or that declare Burned In Annotation YES, are read by the OCR of
  :mod:`workbench.quality.burned_in` (first, middle and last frame); every region
  found is blacked out, with a margin, on every frame. The pixels are written
  back in their transfer syntax when it is native, RLE Lossless or JPEG 2000
  Lossless, otherwise as Explicit VR Little Endian (recorded per file: there is
  no lossless re-encoding of a lossy JPEG). Burned In Annotation is set to NO,
  and 113101 declared, only in the files actually redacted.
- Patient Identity Removed (0012,0062) YES, De-identification Method
  (0012,0063), Longitudinal Temporal Information Modified (0028,0303).

The secret is drawn per :class:`Deidentifier` (one per import) from
:mod:`secrets` and lives only in that object's memory: no file, record or log
holds it or any original-to-pseudonym mapping, so the result cannot be
re-identified from anything the workbench keeps. Storing an encrypted key for
re-identification is not offered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib.metadata
import io
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from dicomanonymizer import simpledicomanonymizer as _library
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from workbench import __version__
from workbench.errors import DicomReadError

__all__ = [
    "LIBRARY",
    "LIBRARY_VERSION",
    "PROFILE_EDITION",
    "DeidentificationOptions",
    "DeidentificationSummary",
    "DeidentifiedFile",
    "Deidentifier",
    "MethodCode",
    "deidentify_files",
]

Progress = Callable[[int, int, str], None] | None
TextFinder = Callable[[Dataset, np.ndarray, dict[str, set[str]]], list[tuple[int, int, int, int]]]

LIBRARY = "dicom-anonymizer"
LIBRARY_VERSION = importlib.metadata.version(LIBRARY)
PROFILE_EDITION = "dicomfields_2026c"
"""Edition of PS3.15 Table E.1-1 taken from the library (DICOM 2026c)."""

_FOLDER = "dicom"
# Compressed transfer syntaxes re-encoded as they were after redaction (lossless only:
# a lossy one would be compressed a second time).
_LOSSLESS_ENCODABLE = (RLELossless, JPEG2000Lossless)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class MethodCode:
    """One item of De-identification Method Code Sequence (PS3.16 CID 7050)."""

    value: str
    meaning: str
    scheme: str = "DCM"

    def to_dataset(self) -> Dataset:
        item = Dataset()
        item.CodeValue = self.value
        item.CodingSchemeDesignator = self.scheme
        item.CodeMeaning = self.meaning
        return item

    def to_dict(self) -> dict[str, str]:
        return {"code_value": self.value, "scheme": self.scheme, "meaning": self.meaning}


def _code(name: str) -> MethodCode:
    concept = getattr(codes.DCM, name)
    return MethodCode(str(concept.value), str(concept.meaning))


BASIC_PROFILE = _code("BasicApplicationConfidentialityProfile")  # 113100
CLEAN_PIXEL_DATA = _code("CleanPixelDataOption")  # 113101
RETAIN_DATES_MODIFIED = _code("RetainLongitudinalTemporalInformationModifiedDatesOption")  # 113107
RETAIN_PATIENT_CHARACTERISTICS = _code("RetainPatientCharacteristicsOption")  # 113108
RETAIN_DEVICE_IDENTITY = _code("RetainDeviceIdentityOption")  # 113109
RETAIN_INSTITUTION_IDENTITY = _code("RetainInstitutionIdentityOption")  # 113112


@dataclass(frozen=True, slots=True)
class DeidentificationOptions:
    """The PS3.15 E.3 options applied on top of the Basic Profile.

    Parameters
    ----------
    retain_dates_shifted : bool, default False
        Retain Longitudinal Temporal Information with Modified Dates (113107):
        dates are shifted into the past by a per-patient number of days
        (365 to 3650, from the import's secret), times are kept, so that
        intervals within a patient are preserved. Without it dates are
        removed or emptied.
    retain_device_identity : bool, default False
        Retain Device Identity (113109): station name, serial numbers, device
        and detector identifiers.
    retain_patient_characteristics : bool, default False
        Retain Patient Characteristics (113108): sex, age, size, weight, ethnic
        group, pregnancy and smoking status.
    retain_institution_identity : bool, default False
        Retain Institution Identity (113112): institution name, address,
        department.
    clean_pixel_data : bool, default False
        Clean Pixel Data (113101): black out burned-in text found by OCR.
    """

    retain_dates_shifted: bool = False
    retain_device_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_institution_identity: bool = False
    clean_pixel_data: bool = False

    def method_codes(self, *, pixels_cleaned: bool = False) -> tuple[MethodCode, ...]:
        """The codes declared in a file: 113100 and the options applied to it.

        Parameters
        ----------
        pixels_cleaned : bool
            The file's pixels were redacted (113101 is declared only then).
        """
        out = [BASIC_PROFILE]
        if pixels_cleaned:
            out.append(CLEAN_PIXEL_DATA)
        if self.retain_dates_shifted:
            out.append(RETAIN_DATES_MODIFIED)
        if self.retain_patient_characteristics:
            out.append(RETAIN_PATIENT_CHARACTERISTICS)
        if self.retain_device_identity:
            out.append(RETAIN_DEVICE_IDENTITY)
        if self.retain_institution_identity:
            out.append(RETAIN_INSTITUTION_IDENTITY)
        return tuple(out)

    def to_dict(self) -> dict[str, bool]:
        return {
            "retain_dates_shifted": self.retain_dates_shifted,
            "retain_device_identity": self.retain_device_identity,
            "retain_patient_characteristics": self.retain_patient_characteristics,
            "retain_institution_identity": self.retain_institution_identity,
            "clean_pixel_data": self.clean_pixel_data,
        }


# --------------------------------------------------------------------------- profile tables


def _profile_actions() -> tuple[dict[BaseTag, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Table E.1-1 from the library: ``{tag: action}`` and masked ranges (curves, overlays)."""
    tables = dicom_anonymization_database_selector(PROFILE_EDITION)
    # the library's own order of precedence (initialize_actions): later categories win
    order = (
        ("D_TAGS", "D"),
        ("Z_TAGS", "Z"),
        ("X_TAGS", "X"),
        ("U_TAGS", "U"),
        ("Z_D_TAGS", "Z/D"),
        ("X_Z_TAGS", "X/Z"),
        ("X_D_TAGS", "X/D"),
        ("X_Z_D_TAGS", "X/Z/D"),
        ("X_Z_U_STAR_TAGS", "X/Z/U*"),
    )
    single: dict[BaseTag, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, action in order:
        for entry in tables[category]:
            if len(entry) == 4:
                masked.append((entry[0], entry[1], entry[2], entry[3], action))
            else:
                single[Tag(entry[0], entry[1])] = action
    return single, tuple(masked)


_ACTIONS, _MASKED = _profile_actions()

# Columns of PS3.15 Table E.1-1 (2026c), attributes marked K (keep) by each option.
_DEVICE_IDENTITY = frozenset(
    Tag(t)
    for t in (
        0x300C0127, 0x0014407E, 0x00181203, 0x0014407C, 0x00181007, 0x00181205, 0x00181200,
        0x0018700C, 0x00181204, 0x00181202, 0x0018700A, 0x00500020, 0x3010002D, 0x00181000,
        0x00181002, 0x00181008, 0x00181005, 0x0016004F, 0x00160050, 0x00160051, 0x0016004E,
        0x0018100B, 0x30100043, 0x00203401, 0x04000563, 0x00404030, 0x00400242, 0x00404028,
        0x00181004, 0x00400011, 0x00404027, 0x00400010, 0x00404025, 0x00321020, 0x300A0216,
        0x30080105, 0x00081010, 0x00181201, 0x0018700E, 0x00185011, 0x300A00B2, 0x0018100A,
        0x00181009, 0x00189371, 0x00189373, 0x00189367,
    )
)  # fmt: skip
_PATIENT_CHARACTERISTICS = frozenset(
    Tag(t)
    for t in (
        0x00102160, 0x00101010, 0x00100040, 0x00102203, 0x00101020, 0x00101030, 0x001021C0,
        0x0072005F, 0x001021A0,
    )
)  # fmt: skip
_INSTITUTION_IDENTITY = frozenset(
    Tag(t)
    for t in (
        0x00120060, 0x00120081, 0x00120030, 0x00120031, 0x00080081, 0x00081040, 0x00081041,
        0x00080082, 0x00080080, 0x04000564,
    )
)  # fmt: skip
# Dates and times the Modified Dates option does not cover (Table E.1-1 has no C for them).
_NOT_SHIFTED = frozenset(Tag(t) for t in (0x00100030, 0x00100032, 0x00160077))
_PATIENT_ID = Tag("PatientID")
_PATIENT_NAME = Tag("PatientName")
_CONTENT_SEQUENCE = Tag("ContentSequence")
_DATE_VRS = ("DA", "DT", "TM")
_D_LIKE = ("D", "Z/D", "X/D", "X/Z/D")
# Words of the names of the SOP classes whose IODs include the Multi-frame Functional Groups
# module (PS3.3 A.36 and after), found by name when a file lacks the functional groups.
_FUNCTIONAL_GROUP_CLASSES = (
    "Enhanced",
    "Segmentation",
    "Legacy Converted",
    "Parametric Map",
    "Tomosynthesis",
    "Whole Slide",
    "Photoacoustic",
    "Optical Coherence Tomography",
)
# Dummy values of dates and times where the IOD needs one (the library's 00010101 is
# rejected by dciodvfy).
_DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000"}
# Type 1 in the Multi-frame Functional Groups, Enhanced General Equipment and SR Document
# General modules (PS3.3 C.7.6.16, C.7.5.2, C.17.2): a dummy value, not an empty one.
_TYPE1_IN_ENHANCED = frozenset(
    Tag(k) for k in ("ContentDate", "ContentTime", "AcquisitionDateTime", "DeviceSerialNumber")
)


def _needs_type1_values(ds: Dataset) -> bool:
    """An object whose IOD has the Multi-frame Functional Groups or SR Document General module."""
    if "SharedFunctionalGroupsSequence" in ds or str(ds.get("Modality", "")) == "SR":
        return True
    name = UID(str(ds.get("SOPClassUID", "") or "")).name
    return any(word in name for word in _FUNCTIONAL_GROUP_CLASSES)


def _resolve(action: str, tag: BaseTag, *, enhanced: bool) -> str:
    """The single letter of a composite action (X/Z, X/D, X/Z/D, Z/D).

    The least informative letter is taken (X, else Z), except D for the few
    attributes that are Type 1 in enhanced multi-frame, SEG and SR objects, whose
    IODs would otherwise be broken (``enhanced``: such an object's top level).
    """
    if action in ("X", "Z", "D"):
        return action
    if action == "X/Z":
        return "Z"
    if enhanced and tag in _TYPE1_IN_ENHANCED:
        return "D"
    return "Z" if action == "Z/D" else "X"


def _profile_action(tag: BaseTag) -> str | None:
    action = _ACTIONS.get(tag)
    if action is not None:
        return action
    for group, element, group_mask, element_mask, masked_action in _MASKED:
        if tag.group & group_mask == group & group_mask and (
            tag.element & element_mask == element & element_mask
        ):
            return masked_action
    return None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class DeidentifiedFile:
    """One file written by :func:`deidentify_files`.

    Parameters
    ----------
    path : str
        Relative POSIX path in the output folder (``dicom/<sha[:2]>/<sha256>.dcm``).
    sha256 : str
    sop_instance_uid, study_instance_uid : str
        The pseudonymous UIDs.
    redacted_regions : int
        Text regions blacked out in the pixels (0: none found or not searched).
    transfer_syntax : str
        Transfer syntax UID written.
    note : str
        Why the transfer syntax changed, if it did.
    """

    path: str
    sha256: str
    sop_instance_uid: str
    study_instance_uid: str
    redacted_regions: int = 0
    transfer_syntax: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class DeidentificationSummary:
    """Outcome of :func:`deidentify_files`; holds no original identifier.

    Parameters
    ----------
    files : tuple of DeidentifiedFile
        In the order of the input paths.
    options : DeidentificationOptions
    """

    files: tuple[DeidentifiedFile, ...]
    options: DeidentificationOptions

    @property
    def n_redacted(self) -> int:
        """Files whose pixels were redacted."""
        return sum(1 for f in self.files if f.redacted_regions)

    def describe(self) -> dict[str, Any]:
        """What the manifest and the audit trail record of the de-identification."""
        codes_used = {c.value: c for c in self.options.method_codes()}
        if self.n_redacted:
            codes_used[CLEAN_PIXEL_DATA.value] = CLEAN_PIXEL_DATA
        return {
            "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
            "profile_table_edition": PROFILE_EDITION,
            "library": LIBRARY,
            "library_version": LIBRARY_VERSION,
            "workbench_version": __version__,
            "options": self.options.to_dict(),
            "method_codes": [c.to_dict() for c in sorted(codes_used.values(), key=_code_key)],
            "n_files": len(self.files),
            "n_files_redacted": self.n_redacted,
            "re_encoded": sorted({f"{f.transfer_syntax}: {f.note}" for f in self.files if f.note}),
            "reidentification_key": "none kept (per-import secret discarded)",
        }


def _code_key(code: MethodCode) -> str:
    return code.value


# --------------------------------------------------------------------------- de-identifier


@dataclass
class _Context:
    date_offset_days: int
    enhanced: bool


@dataclass
class Deidentifier:
    """Applies the profile with one secret to every file of one import.

    Parameters
    ----------
    options : DeidentificationOptions
    text_finder : callable, optional
        ``text_finder(ds, frame_uint8, identifiers) -> [(x, y, w, h), ...]``; the
        default reads each frame with :func:`workbench.quality.burned_in.find_text`.

    Notes
    -----
    The secret is made by :func:`secrets.token_bytes` when the object is created
    and never leaves it; pseudonyms are keyed hashes, so no table of original
    values is built.
    """

    options: DeidentificationOptions = field(default_factory=DeidentificationOptions)
    text_finder: TextFinder | None = None
    _secret: bytes = field(
        default_factory=lambda: secrets.token_bytes(32), init=False, repr=False, compare=False
    )

    # ---- pseudonyms

    def _digest(self, kind: str, value: str) -> int:
        mac = hmac.new(self._secret, f"{kind}\0{value}".encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[:16], "big")

    def pseudonymous_uid(self, uid: str) -> str:
        """``2.25.<decimal>`` (PS3.5 B.2) keyed on this import's secret; empty stays empty."""
        text = str(uid).strip()
        if not text:
            return ""
        return f"2.25.{self._digest('uid', text)}"

    def pseudonymous_patient_id(self, patient_id: str) -> str:
        """``DEID`` and ten digits, the same for every file of one patient."""
        return f"DEID{self._digest('patient', patient_id.strip()) % 10**10:010d}"

    def date_offset_days(self, patient_key: str) -> int:
        """Days every date of this patient moves back (365 to 3650)."""
        return 365 + self._digest("date", patient_key) % 3286

    # ---- header

    def deidentify_dataset(self, ds: Dataset) -> Dataset:
        """De-identify a dataset in place (header only) and return it.

        Parameters
        ----------
        ds : pydicom.Dataset
            A whole file's dataset with ``file_meta``.

        Returns
        -------
        pydicom.Dataset
            The same object.
        """
        patient_id = str(ds.get("PatientID", "") or "")
        issuer = str(ds.get("IssuerOfPatientID", "") or "")
        patient_key = f"{issuer}\0{patient_id}" if patient_id else str(ds.get("StudyInstanceUID"))
        ctx = _Context(
            date_offset_days=self.date_offset_days(patient_key),
            enhanced=_needs_type1_values(ds),
        )
        pseudonym = self.pseudonymous_patient_id(patient_key)
        self._clean(ds, ctx, top=True)
        ds.PatientID = pseudonym
        ds.PatientName = pseudonym
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self._clean(meta, ctx, top=False)
            if "SOPInstanceUID" in ds:
                meta.MediaStorageSOPInstanceUID = UID(str(ds.SOPInstanceUID))
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = (
            "MODIFIED" if self.options.retain_dates_shifted else "REMOVED"
        )
        self._declare(ds, pixels_cleaned=False)
        return ds

    def _declare(self, ds: Dataset, *, pixels_cleaned: bool) -> None:
        ds.DeidentificationMethod = [
            "PS3.15 Basic Application Confidentiality Profile",
            f"{LIBRARY} {LIBRARY_VERSION} {PROFILE_EDITION}"[:64],
            f"Validation Workbench {__version__}"[:64],
        ]
        ds.DeidentificationMethodCodeSequence = DicomSequence(
            [c.to_dataset() for c in self.options.method_codes(pixels_cleaned=pixels_cleaned)]
        )

    def _option_action(self, tag: BaseTag, elem: DataElement) -> str | None:
        o = self.options
        if o.retain_device_identity and tag in _DEVICE_IDENTITY:
            return "K"
        if o.retain_patient_characteristics and tag in _PATIENT_CHARACTERISTICS:
            return "K"
        if o.retain_institution_identity and tag in _INSTITUTION_IDENTITY:
            return "K"
        if o.retain_dates_shifted and elem.VR in _DATE_VRS and tag not in _NOT_SHIFTED:
            return "SHIFT"
        return None

    def _clean(self, ds: Dataset, ctx: _Context, *, top: bool) -> None:
        if not isinstance(ds, pydicom.dataset.FileMetaDataset):
            ds.remove_private_tags()
        for elem in list(ds):
            tag = elem.tag
            profile = _profile_action(tag)
            action = self._option_action(tag, elem) if profile is not None else None
            if action is None:
                action = profile
            if top and tag in (_PATIENT_ID, _PATIENT_NAME):
                continue  # replaced by the per-patient pseudonym afterwards
            if action is None:
                if elem.VR == "SQ":
                    self._items(elem, ctx)
                continue
            if action == "K":
                continue
            if action == "SHIFT":
                self._shift(ds, elem, ctx)
                continue
            self._apply(ds, elem, action, ctx, top=top)

    def _items(self, elem: DataElement, ctx: _Context) -> None:
        for item in elem.value or []:
            self._clean(item, ctx, top=False)

    def _apply(
        self, ds: Dataset, elem: DataElement, action: str, ctx: _Context, *, top: bool
    ) -> None:
        tag = elem.tag
        if action == "X/Z/U*" or (action == "D" and tag == _CONTENT_SEQUENCE):
            # keep the references (SEG, SR trees) with their UIDs replaced
            if elem.VR == "SQ":
                self._items(elem, ctx)
            elif elem.VR == "UI":
                self._replace_uids(elem)
            else:
                del ds[tag]
            return
        if elem.VR == "UI" and action in ("U", *_D_LIKE):
            self._replace_uids(elem)
            return
        if action == "U":  # a U attribute stored with another VR (UN): not interpretable
            del ds[tag]
            return
        letter = _resolve(action, tag, enhanced=ctx.enhanced and top)
        if letter == "X":
            del ds[tag]
        elif letter == "Z":
            if elem.VR == "SQ":
                elem.value = DicomSequence([])
            elif elem.VR in _DATE_VRS:
                elem.value = ""
            else:
                _library.empty_element(elem)
        elif elem.VR == "SQ":  # D on a sequence: every value in it becomes a dummy
            self._dummy_items(elem)
        elif elem.VR in _DUMMY:
            elem.value = _DUMMY[elem.VR]
        else:
            _library.replace_element(elem)

    def _dummy_items(self, elem: DataElement) -> None:
        for item in elem.value or []:
            item.remove_private_tags()
            for sub in list(item):
                if sub.VR == "SQ":
                    self._dummy_items(sub)
                elif sub.VR == "UI":
                    self._replace_uids(sub)
                elif sub.VR in _DUMMY:
                    sub.value = _DUMMY[sub.VR]
                else:
                    _library.replace_element(sub)

    def _replace_uids(self, elem: DataElement) -> None:
        if elem.VM > 1:
            elem.value = [self.pseudonymous_uid(v) for v in elem.value]
        elif elem.value:
            elem.value = self.pseudonymous_uid(str(elem.value))

    def _shift(self, ds: Dataset, elem: DataElement, ctx: _Context) -> None:
        if elem.VR == "TM" or not elem.value:
            return  # times kept: only whole days move
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        shifted = [_shift_value(str(v), elem.VR, ctx.date_offset_days) for v in values]
        if any(v is None for v in shifted):
            del ds[elem.tag]  # partial dates or ranges cannot be shifted safely: removed
            return
        elem.value = shifted if elem.VM > 1 else shifted[0]

    # ---- pixels

    def redact_burned_in_text(
        self, ds: Dataset, identifiers: dict[str, set[str]]
    ) -> tuple[int, str]:
        """Black out text regions found in the pixels; ``(n_regions, note)``.

        Parameters
        ----------
        ds : pydicom.Dataset
            A de-identified dataset with Pixel Data.
        identifiers : dict
            :func:`workbench.quality.burned_in.header_identifiers` of the original
            header, to recognise names and IDs in the text (kept in memory only).

        Returns
        -------
        tuple
            Regions blacked out and a note when the transfer syntax had to change.
        """
        if not _wants_pixels(ds):
            return 0, ""
        frames = _frames(ds)
        n = frames.shape[0]
        sample = sorted({0, n // 2, n - 1})
        finder = self.text_finder or _ocr_regions
        boxes: list[tuple[int, int, int, int]] = []
        for number in sample:
            boxes.extend(finder(ds, frames[number], identifiers))
        if not boxes:
            return 0, ""
        fill = _fill_value(ds, frames)
        rows, cols = frames.shape[1], frames.shape[2]
        for x, y, w, h in boxes:
            pad = max(4, h // 3)
            x0, y0 = max(0, x - pad), max(0, y - pad)
            x1, y1 = min(cols, x + w + pad), min(rows, y + h + pad)
            frames[:, y0:y1, x0:x1, ...] = fill
        note = _store_pixels(ds, frames)
        ds.BurnedInAnnotation = "NO"
        self._declare(ds, pixels_cleaned=True)
        return len(boxes), note

    # ---- files

    def deidentify_file(self, source: str | Path, out_dir: str | Path) -> DeidentifiedFile:
        """Read one file, de-identify it and write it under ``out_dir/dicom/``.

        Parameters
        ----------
        source : str or Path
        out_dir : str or Path

        Returns
        -------
        DeidentifiedFile

        Raises
        ------
        DicomReadError
            The file is not readable DICOM, or its pixels cannot be decoded for
            the Clean Pixel Data option.
        """
        path = Path(source)
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # pydicom raises several types for damaged files
            raise DicomReadError(f"{path}: not a readable DICOM file ({exc}).") from exc
        identifiers: dict[str, set[str]] = {}
        if self.options.clean_pixel_data and _wants_pixels(ds):
            from workbench.quality.burned_in import header_identifiers

            identifiers = header_identifiers(ds)
        self.deidentify_dataset(ds)
        n_regions, note = 0, ""
        if self.options.clean_pixel_data:
            try:
                n_regions, note = self.redact_burned_in_text(ds, identifiers)
            except (ValueError, RuntimeError, NotImplementedError) as exc:
                raise DicomReadError(
                    f"{path}: the pixels could not be decoded or re-encoded for the Clean "
                    f"Pixel Data option ({exc})."
                ) from exc
        identifiers.clear()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        rel = f"{_FOLDER}/{digest[:2]}/{digest}.dcm"
        target = Path(out_dir) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        return DeidentifiedFile(
            path=rel,
            sha256=digest,
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            redacted_regions=n_regions,
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            note=note,
        )


def deidentify_files(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    options: DeidentificationOptions | None = None,
    *,
    text_finder: TextFinder | None = None,
    progress: Progress = None,
) -> DeidentificationSummary:
    """De-identify files with one secret, so that UIDs stay consistent across them.

    Parameters
    ----------
    paths : iterable of str or Path
        DICOM files (e.g. every instance of the studies of one import).
    out_dir : str or Path
        Output folder; files go to ``dicom/<sha[:2]>/<sha256>.dcm``.
    options : DeidentificationOptions, optional
        Basic Profile only when omitted.
    text_finder : callable, optional
        See :class:`Deidentifier`.
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    DeidentificationSummary

    Raises
    ------
    DicomReadError
        A file is not readable DICOM (named in the message).
    """
    chosen = options or DeidentificationOptions()
    worker = Deidentifier(chosen, text_finder=text_finder)
    todo = [Path(p) for p in paths]
    out: list[DeidentifiedFile] = []
    for i, path in enumerate(todo):
        out.append(worker.deidentify_file(path, out_dir))
        if progress is not None:
            progress(i + 1, len(todo), "de-identify")
    return DeidentificationSummary(files=tuple(out), options=chosen)


# --------------------------------------------------------------------------- helpers


def _shift_value(value: str, vr: str, days: int) -> str | None:
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit() or "-" in text[:8]:
        return None
    if vr == "DA" and len(text) != 8:
        return None
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
    moved = day - dt.timedelta(days=days)
    if moved.year < 1:
        return None
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}" + text[8:]


def _wants_pixels(ds: Dataset) -> bool:
    """Images worth reading for text: modalities that carry it, or a YES in the header."""
    if "PixelData" not in ds or str(ds.get("Modality", "")) in ("SEG", "RTSTRUCT", "SR"):
        return False
    from workbench.quality.burned_in import OCR_MODALITIES

    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    return burned == "YES" or str(ds.get("Modality", "") or "").upper() in OCR_MODALITIES


def _frames(ds: Dataset) -> np.ndarray:
    """Decoded pixels as ``(frames, rows, columns[, samples])`` (a writable copy)."""
    arr = np.array(ds.pixel_array)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if n_frames == 1 and arr.ndim == (2 if samples == 1 else 3):
        arr = arr[np.newaxis]
    return arr


def _fill_value(ds: Dataset, frames: np.ndarray) -> Any:
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        return frames.max()
    return frames.min()


def _ocr_regions(
    ds: Dataset, frame: np.ndarray, identifiers: dict[str, set[str]]
) -> list[tuple[int, int, int, int]]:
    from workbench.dicom.pixels import to_display
    from workbench.quality.burned_in import find_text

    return [r.box for r in find_text(to_display(frame, ds), identifiers=identifiers)]


def _store_pixels(ds: Dataset, frames: np.ndarray) -> str:
    """Write redacted frames back; the note says when the transfer syntax changed."""
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    arr = frames if int(ds.get("NumberOfFrames", 1) or 1) > 1 else frames[0]
    if syntax.is_compressed:
        ds.decompress(generate_instance_uid=False)  # Explicit VR Little Endian, colour as RGB
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        # decoded colour is RGB and interleaved, whatever was stored
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    bits = int(ds.BitsAllocated)
    if bits not in (8, 16, 32) or arr.dtype.itemsize * 8 != bits:
        raise ValueError(f"expected pixels of {bits} bits allocated, decoded {arr.dtype}")
    ds.PixelData = arr.tobytes()
    if not syntax.is_compressed:
        return ""
    if syntax in _LOSSLESS_ENCODABLE:
        try:
            ds.compress(syntax, arr, generate_instance_uid=False)
            return ""
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            reason = f"re-encoding as {syntax.name} failed ({exc})"
    else:
        reason = f"no lossless encoder for {syntax.name}"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return f"pixels redacted and written as Explicit VR Little Endian: {reason}"
