"""Index a folder of DICOM files: one header read and one SHA-256 per file.

Each file is read into memory once; the bytes are hashed and the header is
parsed from the same buffer (``stop_before_pixels``), so indexing costs about
one read of the data. Work is spread over processes in chunks. A writer that
fills a folder can have its files indexed as it writes them
(:class:`FolderIndexer`), with the SHA-256 of the bytes it wrote. Files that are not DICOM,
are truncated or cannot be read are listed with the reason and never stop the
index; non-DICOM files that belong to the set's reference
(``dataset.json``, anything under ``reference/``) are listed as other files.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID

from workbench.dicom import _raw
from workbench.dicom._walk import chunked, walk_files
from workbench.errors import DicomReadError

__all__ = [
    "FILE_COLUMNS",
    "KINDS",
    "DicomIndex",
    "FolderIndexer",
    "index_folder",
    "is_reference_file",
    "sniff_file_type",
]

Progress = Callable[[int, int, str], None]

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"

_TAGS = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "StationName",
    "SoftwareVersions",
    "KVP",
    "ConvolutionKernel",
    "PatientID",
    "PatientName",
    "PatientSex",
    "PatientAge",
    "PatientBirthDate",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyDate",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "InstanceNumber",
    "ImageType",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "NumberOfFrames",
    "PhotometricInterpretation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "BurnedInAnnotation",
    "WindowCenter",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "RescaleSlope",
    "RescaleIntercept",
    "ReferencedSeriesSequence",
]

FILE_COLUMNS: dict[str, str] = {
    "path": "str",
    "size": "int64",
    "sha256": "str",
    "kind": "str",
    "sop_instance_uid": "str",
    "sop_class_uid": "str",
    "sop_class_name": "str",
    "transfer_syntax_uid": "str",
    "has_file_meta": "bool",
    "series_instance_uid": "str",
    "study_instance_uid": "str",
    "accession_number": "str",
    "frame_of_reference_uid": "str",
    "modality": "str",
    "manufacturer": "str",
    "manufacturer_model_name": "str",
    "institution_name": "str",
    "station_name": "str",
    "software_versions": "str",
    "kvp": "float64",
    "convolution_kernel": "str",
    "patient_id": "str",
    "patient_name": "str",
    "patient_sex": "str",
    "patient_age": "str",
    "patient_birth_date": "str",
    "patient_identity_removed": "str",
    "deidentification_method": "str",
    "study_date": "str",
    "series_number": "Int64",
    "series_description": "str",
    "body_part_examined": "str",
    "instance_number": "Int64",
    "image_type": "str",
    "rows": "Int64",
    "columns": "Int64",
    "number_of_frames": "Int64",
    "bits_allocated": "Int64",
    "samples_per_pixel": "Int64",
    "photometric_interpretation": "str",
    "pixel_spacing_row": "float64",
    "pixel_spacing_col": "float64",
    "imager_pixel_spacing_row": "float64",
    "imager_pixel_spacing_col": "float64",
    "burned_in_annotation": "str",
    "voi": "str",
    "us_regions": "Int64",
    "slice_thickness": "float64",
    "spacing_between_slices": "float64",
    "image_position_x": "float64",
    "image_position_y": "float64",
    "image_position_z": "float64",
    "image_orientation": "str",
    "rescale_slope": "float64",
    "rescale_intercept": "float64",
    "referenced_series_uid": "str",
}
"""Columns of :attr:`DicomIndex.files` and their pandas dtypes."""

_UNREADABLE_COLUMNS = {"path": "str", "size": "int64", "sha256": "str", "reason": "str"}
_OTHER_COLUMNS = {"path": "str", "size": "int64", "sha256": "str"}
_SKIPPED_COLUMNS = {"path": "str", "reason": "str"}


def is_reference_file(relpath: str) -> bool:
    """Whether a non-DICOM file belongs to the set's reference standard or description.

    ``dataset.json`` at the root and anything under ``reference/`` (for example
    ``reference/labels.csv``) are part of a test set; any other non-DICOM file
    is reported as unreadable.
    """
    return relpath == "dataset.json" or relpath.startswith("reference/")


@dataclass(frozen=True, slots=True, eq=False)
class DicomIndex:
    """What :func:`index_folder` found under a root.

    Parameters
    ----------
    root : Path
        The indexed folder.
    files : pandas.DataFrame
        One row per readable DICOM file, columns :data:`FILE_COLUMNS`, sorted by path.
    unreadable : pandas.DataFrame
        ``path, size, sha256, reason`` for files that are not DICOM (outside the
        reference), truncated or unreadable.
    other_files : pandas.DataFrame
        ``path, size, sha256`` of non-DICOM files of the reference (see
        :func:`is_reference_file`).
    skipped : pandas.DataFrame
        ``path, reason`` of links not followed and special files (not hashed).
    """

    root: Path
    files: pd.DataFrame
    unreadable: pd.DataFrame
    other_files: pd.DataFrame
    skipped: pd.DataFrame

    @property
    def hashes(self) -> dict[str, str]:
        """``{relpath: sha256}`` of every hashed file (DICOM, unreadable, other)."""
        out: dict[str, str] = {}
        for frame in (self.files, self.unreadable, self.other_files):
            for path, digest in zip(frame["path"], frame["sha256"], strict=True):
                if isinstance(digest, str) and digest:
                    out[str(path)] = digest
        return out

    def series(self) -> pd.DataFrame:
        """One row per series: study, series, modality, equipment and file count.

        Returns
        -------
        pandas.DataFrame
            Columns ``study_instance_uid, series_instance_uid, modality, kind,
            manufacturer, manufacturer_model_name, patient_id, n_files,
            referenced_series_uid, folder`` (folder of the series' first file).
        """
        columns = [
            "study_instance_uid",
            "series_instance_uid",
            "modality",
            "kind",
            "manufacturer",
            "manufacturer_model_name",
            "patient_id",
            "n_files",
            "referenced_series_uid",
            "folder",
        ]
        if self.files.empty:
            return pd.DataFrame(columns=columns)
        frame = self.files.assign(folder=self.files["path"].map(lambda p: p.rpartition("/")[0]))
        grouped = frame.groupby(
            ["study_instance_uid", "series_instance_uid"], dropna=False, sort=True
        )
        out = grouped.agg(
            modality=("modality", "first"),
            kind=("kind", "first"),
            manufacturer=("manufacturer", "first"),
            manufacturer_model_name=("manufacturer_model_name", "first"),
            patient_id=("patient_id", "first"),
            n_files=("path", "size"),
            referenced_series_uid=("referenced_series_uid", "first"),
            folder=("folder", "first"),
        ).reset_index()
        return out[columns]

    def cases(self) -> pd.DataFrame:
        """One row per case: what a viewer shows and a model reads as one input.

        A series of single-frame CT, MR or PT images is one case (``series``, load
        it with :func:`workbench.dicom.volume.load_series`); a multi-frame
        cross-sectional object is one case (``multiframe``,
        :func:`~workbench.dicom.volume.load_multiframe`); every other image file
        (CR, DX, MG, US, secondary capture, ...) is a case of its own (``image``,
        :func:`~workbench.dicom.volume.load_image`). Objects that are not images
        are not cases.

        Returns
        -------
        pandas.DataFrame
            Columns ``case_key, case_type, modality, study_instance_uid,
            series_instance_uid, sop_instance_uid, paths, n_frames``; ``case_key``
            is the Series Instance UID for a series and the SOP Instance UID
            otherwise; ``paths`` is a tuple of relative paths.
        """
        columns = [
            "case_key",
            "case_type",
            "modality",
            "study_instance_uid",
            "series_instance_uid",
            "sop_instance_uid",
            "paths",
            "n_frames",
        ]
        images = self.files[self.files["kind"] == "image"] if len(self.files) else self.files
        records: list[dict[str, Any]] = []
        if len(images):
            frames = images["number_of_frames"].astype("Float64").fillna(1).astype(int)
            cross = images["modality"].isin(list(CROSS_SECTIONAL)) & ~images["image_type"].fillna(
                ""
            ).str.upper().str.contains("LOCALIZER")
            stacked = images[cross & (frames <= 1)]
            for uid, group in stacked.groupby("series_instance_uid", sort=True, dropna=False):
                records.append(
                    {
                        "case_key": uid,
                        "case_type": "series",
                        "modality": group["modality"].iloc[0],
                        "study_instance_uid": group["study_instance_uid"].iloc[0],
                        "series_instance_uid": uid,
                        "sop_instance_uid": None,
                        "paths": tuple(group["path"]),
                        "n_frames": len(group),
                    }
                )
            for row, n in zip(
                images[~(cross & (frames <= 1))].itertuples(),
                frames[~(cross & (frames <= 1))],
                strict=True,
            ):
                records.append(
                    {
                        "case_key": row.sop_instance_uid,
                        "case_type": "multiframe"
                        if row.modality in CROSS_SECTIONAL and n > 1
                        else "image",
                        "modality": row.modality,
                        "study_instance_uid": row.study_instance_uid,
                        "series_instance_uid": row.series_instance_uid,
                        "sop_instance_uid": row.sop_instance_uid,
                        "paths": (row.path,),
                        "n_frames": int(n),
                    }
                )
        return pd.DataFrame.from_records(records, columns=columns)


CROSS_SECTIONAL = frozenset({"CT", "MR", "PT"})
"""Modalities whose single-frame images stack into volumes."""

_FAST_ENCODINGS = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO 2022 IR 6": "latin-1",
    "ISO_IR 192": "utf-8",
}
_TAG_OF = {kw: int(tag_for_keyword(kw) or 0) for kw in _TAGS}
_BINARY_INT = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}


class _NotRaw(Exception):
    """A value the raw reader does not decode; the file is read with pydicom instead."""


_CONVERTED = object()
"""An element pydicom has already converted (a sequence of undefined length)."""

#: Sequences whose items :func:`_record` reads; a file with one is read with pydicom.
_ITEMS_READ = frozenset(
    int(tag_for_keyword(keyword) or 0)
    for keyword in (
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
        "SequenceOfUltrasoundRegions",
        "ReferencedSeriesSequence",
    )
)


def _decoded(value: Any, encoding: str) -> str | None:
    if not isinstance(value, bytes):
        return None
    return value.decode(encoding, "replace").rstrip("\x00 ").strip() or None


class _Header:
    """Fast access to header values, decoding raw elements without pydicom's conversion.

    pydicom converts every value it is asked for through several layers; for
    the few dozen plain values an index needs, decoding the raw bytes directly
    is several times faster. Anything unusual falls back to pydicom.
    """

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds
        self.encoding = self._charset()

    def _charset(self) -> str | None:
        element = self._element(_TAG_OF["SpecificCharacterSet"])
        raw = "" if element is None else _decoded(element[1], "latin-1")
        return _FAST_ENCODINGS.get((raw or "").strip())

    @property
    def dataset(self) -> Dataset:
        """The pydicom data set, for what is read item by item."""
        return self._ds

    def has(self, tag: int) -> bool:
        """Whether the data set has the element ``tag`` (before the pixel data)."""
        return BaseTag(tag) in self._ds._dict

    def sequence(self, keyword: str) -> Any:
        """The items of a sequence, or None."""
        return self._ds.get(keyword)

    def meta(self, keyword: str) -> str | None:
        """A file meta value (group 0002), or None."""
        return _plain(self._ds.get("file_meta") or Dataset(), keyword)

    def _element(self, tag: int) -> tuple[str, Any, bool] | None:
        """``(VR, raw value or _CONVERTED, little endian)`` of ``tag``, or None."""
        elem = self._ds._dict.get(BaseTag(tag))
        if elem is None:
            return None
        vr = elem.VR or dictionary_VR(elem.tag)
        if isinstance(elem, RawDataElement):
            return vr, elem.value, elem.is_little_endian
        return vr, _CONVERTED, True

    def _converted_text(self, keyword: str) -> str | None:
        value = self._ds.get(keyword)
        if value is None or value == "":
            return None
        if isinstance(value, MultiValue):
            return "\\".join(str(v) for v in value)
        return str(value)

    def text(self, keyword: str) -> str | None:
        element = self._element(_TAG_OF.get(keyword) or tag_for_keyword(keyword) or 0)
        if element is None:
            return None
        vr, value, _ = element
        if value is not _CONVERTED and self.encoding and vr not in _BINARY_INT:
            return _decoded(value, self.encoding)
        return self._converted_text(keyword)

    def number(self, keyword: str, index: int = 0) -> float | None:
        element = self._element(_TAG_OF.get(keyword) or tag_for_keyword(keyword) or 0)
        if element is None:
            return None
        vr, raw, little = element
        try:
            if raw is not _CONVERTED and vr in _BINARY_INT:
                fmt = ("<" if little else ">") + _BINARY_INT[vr]
                size = struct.calcsize(fmt)
                if raw is None or len(raw) < size * (index + 1):
                    return None
                return float(struct.unpack_from(fmt, raw, size * index)[0])
            text = self.text(keyword)
            if text is None:
                return None
            return float(text.split("\\")[index])
        except (ValueError, IndexError, struct.error):
            return None

    def integer(self, keyword: str) -> int | None:
        number = self.number(keyword)
        return None if number is None else int(number)


class _RawHeader(_Header):
    """The same values read from the bytes of a complete file, without pydicom.

    Only files whose every length the raw reader has followed to the end
    (:func:`workbench.dicom._raw.read_header`), in a character set decoded
    directly and without the sequences :func:`_record` reads item by item; any
    other file raises ``_raw.NotWalked``, ``_raw.Truncated`` or :class:`_NotRaw`
    and is read with pydicom, which then decides what it is. Values are decoded
    exactly as :class:`_Header` decodes pydicom's raw elements.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._raw = _raw.read_header(data)
        if not self._raw.elements.keys().isdisjoint(_ITEMS_READ):
            raise _NotRaw("sequences read item by item")
        charset = self._raw.elements.get(_TAG_OF["SpecificCharacterSet"])
        if charset is not None and charset[0] not in (b"CS", b"UN", b""):
            raise _NotRaw("a character set of another VR, which pydicom cannot read")
        self.encoding = self._charset()
        if self.encoding is None:
            raise _NotRaw("a character set decoded by pydicom")

    @property
    def dataset(self) -> Dataset:
        raise _NotRaw("values read item by item")

    def has(self, tag: int) -> bool:
        return tag in self._raw.elements

    def sequence(self, keyword: str) -> Any:
        if self.has(_TAG_OF.get(keyword) or tag_for_keyword(keyword) or 0):
            raise _NotRaw(f"{keyword} is read item by item")
        return None

    def meta(self, keyword: str) -> str | None:
        tag = tag_for_keyword(keyword)
        if tag is None or tag >> 16 != 0x0002:
            raise _NotRaw(f"{keyword} is not a file meta attribute")
        value = self._raw.meta.get(tag & 0xFFFF)
        if value is not None and (b"\\" in value or not value.isascii()):
            raise _NotRaw(f"{keyword} holds several values or non-ASCII bytes")
        return _raw.text(value)

    def _element(self, tag: int) -> tuple[str, Any, bool] | None:
        found = self._raw.elements.get(tag)
        if found is None:
            return None
        vr, offset, length = found
        if length == _raw.UNDEFINED:
            return (vr.decode("ascii") or dictionary_VR(tag)), _CONVERTED, self._raw.little
        value = self._data[offset : offset + length]
        return (vr.decode("ascii") or dictionary_VR(tag)), value, self._raw.little

    def _converted_text(self, keyword: str) -> str | None:
        raise _NotRaw(f"{keyword} needs pydicom's conversion")


KINDS = {
    "image": "image",
    "segmentation": "DICOM SEG (segmentation)",
    "directory": "DICOMDIR (media storage directory)",
    "structured_report": "structured report (SR)",
    "key_object": "key object selection (KOS)",
    "presentation_state": "presentation state (PR)",
    "radiotherapy": "radiotherapy object (RT)",
    "encapsulated_document": "encapsulated document (PDF, CDA, STL...)",
    "waveform": "waveform (ECG, audio...)",
    "raw_data": "raw data",
    "other": "DICOM object that is not an image",
}
"""Values of the index's ``kind`` column and how reports name them."""


def _kind(sop_class: str | None, h: _Header) -> str:
    if sop_class in (SEG_STORAGE, LABEL_MAP_SEG_STORAGE):
        return "segmentation"
    if sop_class == _DIRECTORY_STORAGE or h.has(0x00041220):  # DirectoryRecordSequence
        return "directory"
    name = UID(sop_class).name if sop_class else ""
    if "Key Object Selection" in name:
        return "key_object"
    if "SR Storage" in name or "Structured Report" in name:
        return "structured_report"
    if "Presentation State" in name:
        return "presentation_state"
    if name.startswith("RT ") and "Image" not in name:
        return "radiotherapy"
    if "Encapsulated" in name:
        return "encapsulated_document"
    if "Waveform" in name or "ECG" in name:
        return "waveform"
    if name.startswith("Raw Data"):
        return "raw_data"
    if "Image Storage" in name or h.has(0x00280010):  # Rows
        return "image"
    return "other"


def _first(ds: Dataset, *path: str) -> Any:
    """The value at ``Seq[0].Seq[0]...Keyword`` or None."""
    node: Any = ds
    for keyword in path[:-1]:
        seq = node.get(keyword) if node is not None else None
        if not seq:
            return None
        node = seq[0]
    return node.get(path[-1]) if node is not None else None


def _functional(ds: Dataset, macro: str, keyword: str) -> Any:
    """A value of a functional group macro: shared groups first, then the first frame's.

    Enhanced multi-frame objects (PS3.3 C.7.6.16) keep Pixel Measures, Plane
    Orientation and Plane Position in functional groups instead of the top level.
    """
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        value = _first(ds, groups, macro, keyword)
        if value is not None and value != "":
            return value
    return None


def _numbers(value: Any) -> list[float]:
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    out: list[float] = []
    for item in items:
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            return []
    return out


def _pixel_data_problem(data: bytes, position: int, ds: Dataset) -> str | None:
    """Check that the pixel data element that follows the header is complete."""
    if position >= len(data) or 0x00280010 not in ds._dict:
        return None
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    order: Literal["little", "big"] = "little" if little else "big"
    header = data[position : position + 12]
    if len(header) < 8:
        return f"truncated: pixel data element header cut after {len(header)} bytes"
    group = int.from_bytes(header[0:2], order)
    element = int.from_bytes(header[2:4], order)
    if (group, element) not in ((0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)):
        return None
    vr = header[4:6]
    if implicit or not (vr.isalpha() and vr.isupper()):
        # Implicit VR, or an explicit-VR file that wrote this element without a VR.
        length, start = int.from_bytes(header[4:8], order), 8
    elif vr in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"):
        if len(header) < 12:
            return "truncated: pixel data element header is incomplete"
        length, start = int.from_bytes(header[8:12], order), 12
    else:
        length, start = int.from_bytes(header[6:8], order), 8
    available = len(data) - position - start
    if length == 0xFFFFFFFF:
        # Encapsulated: the item sequence must end with a Sequence Delimitation Item.
        delimiter = (0xFFFE).to_bytes(2, order) + (0xE0DD).to_bytes(2, order)
        if data.rfind(delimiter, position) < 0:
            return "truncated: encapsulated pixel data has no sequence delimiter"
        return None
    if available < length:
        return f"truncated: pixel data declares {length} bytes, file holds {available}"
    return None


def _record(rel: str, data: bytes, digest: str, h: _Header, has_meta: bool) -> dict[str, Any]:
    sop_class = h.text("SOPClassUID") or h.meta("MediaStorageSOPClassUID")
    iop = h.text("ImageOrientationPatient")
    spacing: list[float | None] = [h.number("PixelSpacing", 0), h.number("PixelSpacing", 1)]
    thickness = h.number("SliceThickness")
    position: list[float | None] = [h.number("ImagePositionPatient", i) for i in range(3)]
    functional_groups = h.has(0x52009229) or h.has(0x52009230)  # Shared, Per-frame
    if functional_groups:
        ds = h.dataset
        if iop is None:
            found = _numbers(_functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient"))
            iop = "\\".join(str(v) for v in found) if len(found) == 6 else None
        if spacing[0] is None:
            found = _numbers(_functional(ds, "PixelMeasuresSequence", "PixelSpacing"))
            spacing = [found[0], found[1]] if len(found) >= 2 else spacing
        if thickness is None:
            found = _numbers(_functional(ds, "PixelMeasuresSequence", "SliceThickness"))
            thickness = found[0] if found else None
        if position[2] is None:
            found = _numbers(_functional(ds, "PlanePositionSequence", "ImagePositionPatient"))
            position = [found[0], found[1], found[2]] if len(found) == 3 else position
    voi = None
    if h.has(0x00281050) or (
        functional_groups and _functional(h.dataset, "FrameVOILUTSequence", "WindowCenter")
    ):
        voi = "window"
    if h.has(0x00283010):  # VOILUTSequence
        voi = "lut" if voi is None else "window+lut"
    regions = h.sequence("SequenceOfUltrasoundRegions")
    ref_series = None
    refs = h.sequence("ReferencedSeriesSequence")
    if refs:
        ref_series = "\\".join(str(item.get("SeriesInstanceUID", "")) for item in refs)
    return {
        "path": rel,
        "size": len(data),
        "sha256": digest,
        "kind": _kind(sop_class, h),
        "sop_instance_uid": h.text("SOPInstanceUID"),
        "sop_class_uid": sop_class,
        "sop_class_name": UID(sop_class).name if sop_class else None,
        "transfer_syntax_uid": h.meta("TransferSyntaxUID"),
        "has_file_meta": has_meta,
        "series_instance_uid": h.text("SeriesInstanceUID"),
        "study_instance_uid": h.text("StudyInstanceUID"),
        "accession_number": h.text("AccessionNumber"),
        "frame_of_reference_uid": h.text("FrameOfReferenceUID"),
        "modality": h.text("Modality"),
        "manufacturer": h.text("Manufacturer"),
        "manufacturer_model_name": h.text("ManufacturerModelName"),
        "institution_name": h.text("InstitutionName"),
        "station_name": h.text("StationName"),
        "software_versions": h.text("SoftwareVersions"),
        "kvp": h.number("KVP"),
        "convolution_kernel": h.text("ConvolutionKernel"),
        "patient_id": h.text("PatientID"),
        "patient_name": h.text("PatientName"),
        "patient_sex": h.text("PatientSex"),
        "patient_age": h.text("PatientAge"),
        "patient_birth_date": h.text("PatientBirthDate"),
        "patient_identity_removed": h.text("PatientIdentityRemoved"),
        "deidentification_method": h.text("DeidentificationMethod"),
        "study_date": h.text("StudyDate"),
        "series_number": h.integer("SeriesNumber"),
        "series_description": h.text("SeriesDescription"),
        "body_part_examined": h.text("BodyPartExamined"),
        "instance_number": h.integer("InstanceNumber"),
        "image_type": h.text("ImageType"),
        "rows": h.integer("Rows"),
        "columns": h.integer("Columns"),
        "number_of_frames": h.integer("NumberOfFrames"),
        "bits_allocated": h.integer("BitsAllocated"),
        "samples_per_pixel": h.integer("SamplesPerPixel"),
        "photometric_interpretation": h.text("PhotometricInterpretation"),
        "pixel_spacing_row": spacing[0],
        "pixel_spacing_col": spacing[1],
        "imager_pixel_spacing_row": h.number("ImagerPixelSpacing", 0),
        "imager_pixel_spacing_col": h.number("ImagerPixelSpacing", 1),
        "burned_in_annotation": h.text("BurnedInAnnotation"),
        "voi": voi,
        "us_regions": len(regions) if regions is not None else None,
        "slice_thickness": thickness,
        "spacing_between_slices": h.number("SpacingBetweenSlices"),
        "image_position_x": position[0],
        "image_position_y": position[1],
        "image_position_z": position[2],
        "image_orientation": (",".join(f"{float(v):g}" for v in iop.split("\\")) if iop else None),
        "rescale_slope": h.number("RescaleSlope"),
        "rescale_intercept": h.number("RescaleIntercept"),
        "referenced_series_uid": ref_series,
    }


def _plain(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or value == "" else str(value)


class _Truncated(Exception):
    """The file ends before its data set begins."""


def _parse(data: bytes) -> tuple[Dataset, int, bool]:
    """Parse the header from bytes; fall back to files without File Meta Information."""
    buffer = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(buffer, stop_before_pixels=True)
        if len(ds) == 0:
            # Only a preamble and (part of) the File Meta Information: a file cut short.
            raise _Truncated(
                f"truncated: no data elements after the File Meta Information ({len(data)} bytes)"
            )
        return ds, buffer.tell(), True
    except InvalidDicomError:
        if len(data) < 132 or data[128:132] == b"DICM":
            raise
    # A raw data set (no preamble): accept only if it carries a SOP Instance UID.
    buffer = io.BytesIO(data)
    ds = pydicom.dcmread(buffer, stop_before_pixels=True, force=True)
    uid = ds.get("SOPInstanceUID")
    if not uid or not str(uid).replace(".", "").isdigit():
        raise InvalidDicomError("no DICM prefix and no SOP Instance UID")
    return ds, buffer.tell(), False


def _index_one(root: str, rel: str, digest: str | None = None) -> tuple[str, dict[str, Any]]:
    """Classify one file: ``("dicom" | "unreadable" | "other", record)``.

    ``digest`` is the SHA-256 of the bytes written to the file when the writer
    computed it; otherwise the bytes read are hashed.
    """
    try:
        with open(os.path.join(root, rel), "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return "unreadable", {
            "path": _printable(rel),
            "size": -1,
            "sha256": None,
            "reason": str(exc),
        }
    return _index_data(rel, data, digest or hashlib.sha256(data).hexdigest())


def _raw_record(rel: str, data: bytes, digest: str) -> dict[str, Any] | None:
    """The record of a file read straight from its bytes, or None to read it with pydicom."""
    try:
        return _record(rel, data, digest, _RawHeader(data), True)
    except Exception:  # not walked, incomplete, or a value needing pydicom
        return None


def _index_data(
    rel: str, data: bytes, digest: str, *, raw: bool = True
) -> tuple[str, dict[str, Any]]:
    """Classify the content ``data`` of the file ``rel`` whose SHA-256 is ``digest``.

    A complete file in a plain encoding is read straight from its bytes
    (:class:`_RawHeader`); any other, or any doubt, is read with pydicom, which
    then decides what the file is and why it cannot be read. Both give the same
    record (``raw=False`` reads every file with pydicom).
    """
    base = {"path": rel, "size": len(data), "sha256": digest}
    if _printable(rel) != rel:
        return "unreadable", {
            **base,
            "path": _printable(rel),
            "reason": "file name is not valid UTF-8 (undecodable bytes shown as \\x escapes); "
            "rename the file",
        }
    if raw:
        record = _raw_record(rel, data, digest)
        if record is not None:
            return "dicom", record
    try:
        ds, position, has_meta = _parse(data)
    except _Truncated as exc:
        return "unreadable", {**base, "reason": str(exc)}
    except InvalidDicomError as exc:
        if is_reference_file(rel):
            return "other", base
        what = sniff_file_type(data)
        reason = f"not DICOM ({what})" if what else f"not DICOM: {exc}".splitlines()[0][:300]
        return "unreadable", {**base, "reason": reason}
    except Exception as exc:  # pydicom raises many types on corrupt input
        reason = f"unreadable DICOM header: {type(exc).__name__}: {exc}".splitlines()[0][:300]
        return "unreadable", {**base, "reason": reason}
    problem = _pixel_data_problem(data, position, ds)
    if problem is not None:
        return "unreadable", {**base, "reason": problem}
    try:
        return "dicom", _record(rel, data, digest, _Header(ds), has_meta)
    except Exception as exc:  # malformed values (e.g. undecodable strings)
        return "unreadable", {**base, "reason": f"malformed attribute values: {exc}"[:300]}


_MAGIC = (
    (b"PK\x03\x04", "ZIP archive"),
    (b"PK\x05\x06", "empty ZIP archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"%PDF", "PDF document"),
    (b"\x89PNG", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"BZh", "bzip2 archive"),
    (b"7z\xbc\xaf", "7-Zip archive"),
    (b"\xfd7zXZ", "xz archive"),
    (b"\x93NUMPY", "NumPy array"),
    (b"\x89HDF", "HDF5 file"),
)


def sniff_file_type(data: bytes) -> str | None:
    """What a file that is not DICOM looks like: ``"ZIP archive"``, ``"text file"``...

    Parameters
    ----------
    data : bytes
        The file's content (its first few kilobytes suffice).

    Returns
    -------
    str or None
        A short description, or None when the content is not recognised.
    """
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 40 and data[36:40] == b"acsp":
        return "ICC colour profile"
    if len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "NIfTI image"
    head = data[:4096]
    if not head:
        return "empty file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 9 for c in text):
        return None
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "JSON or text file"
    if stripped.startswith("<"):
        return "XML or HTML file"
    return "text file"


def _printable(rel: str) -> str:
    """The path as valid UTF-8: undecodable bytes (surrogate escapes) become ``\\xNN``."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(rel).decode("utf-8", "backslashreplace")
    return rel


def _index_chunk(root: str, rels: list[str]) -> list[tuple[str, dict[str, Any]]]:
    return [_index_one(root, rel) for rel in rels]


def _index_known(
    root: str, files: list[tuple[str, str | None]]
) -> list[tuple[str, tuple[str, dict[str, Any]]]]:
    return [(rel, _index_one(root, rel, digest)) for rel, digest in files]


def _frame(records: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(columns))
    for name, dtype in columns.items():
        if dtype == "str":
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
        else:
            frame[name] = frame[name].astype(dtype)
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


class FolderIndexer:
    """Index files while a folder is being filled, in worker processes.

    A writer that knows each file's SHA-256 (it hashed the bytes it wrote) hands
    the files to :meth:`add` as they are written; the processes classify them
    exactly as :func:`index_folder` does, recording that digest, while the
    writer goes on. :func:`index_folder` given the indexer then takes
    those records and reads only the files it was not handed (in the indexer's
    processes). Records are keyed by path relative to the folder, so the folder
    may be renamed in between, once :meth:`results` has returned (the files
    handed over are read by then). Use it as a context manager, or call
    :meth:`close`.

    Parameters
    ----------
    workers : int, default 2
        Processes reading the files.
    """

    def __init__(self, *, workers: int = 2) -> None:
        self.workers = max(1, workers)
        self._pool = ProcessPoolExecutor(max_workers=self.workers)
        self._futures: list[Future[list[tuple[str, tuple[str, dict[str, Any]]]]]] = []
        self._results: dict[str, tuple[str, dict[str, Any]]] = {}
        # Start the processes now, before the writer starts threads of its own.
        self._pool.submit(int).result()

    def add(self, root: str | Path, files: Sequence[tuple[str, str | None]]) -> None:
        """Index files under ``root`` in the background.

        Parameters
        ----------
        root : str or Path
            The folder.
        files : sequence of (str, str or None)
            ``(relative path, SHA-256)``: the hex digest of exactly the bytes
            written to that file, or None to have it computed from the file.
        """
        if files:
            self._futures.append(self._pool.submit(_index_known, os.fspath(root), list(files)))

    def results(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{relative path: (kind, record)}`` of every file added, once all are indexed.

        ``kind`` is ``"dicom"``, ``"unreadable"`` or ``"other"`` and ``record``
        the row :func:`index_folder` makes of the file.
        """
        for future in self._futures:
            self._results.update(future.result())
        self._futures.clear()
        return dict(self._results)

    def close(self) -> None:
        """Stop the processes; files not yet indexed are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FolderIndexer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def index_folder(
    root: str | Path,
    *,
    workers: int = 2,
    progress: Progress | None = None,
    indexer: FolderIndexer | None = None,
) -> DicomIndex:
    """Index every file under ``root``: header fields, size and SHA-256.

    Parameters
    ----------
    root : str or Path
        The test-set folder.
    workers : int
        Processes to use (1 runs in this process).
    progress : callable, optional
        ``progress(done, total, message)`` as chunks of files finish.
    indexer : FolderIndexer, optional
        Records of files already indexed while they were written (keyed by
        path relative to ``root``); only the other files are read, in its
        processes (``workers`` is then not used).

    Returns
    -------
    DicomIndex
        DICOM files, unreadable files with reasons, other reference files and
        skipped links.

    Raises
    ------
    DicomReadError
        ``root`` is not a folder.

    Examples
    --------
    >>> index = index_folder("testsets/demo")  # doctest: +SKIP
    >>> index.files.groupby("modality").size()  # doctest: +SKIP
    """
    base = Path(root)
    if not base.is_dir():
        raise DicomReadError(f"Expected a folder to index, found {base} (missing or not a folder).")
    rels, skipped = walk_files(base)
    total = len(rels)
    if progress is not None:
        progress(0, total, f"indexing {total} files")
    results: list[tuple[str, dict[str, Any]]] = []
    if indexer is not None:
        # Files the indexer was not handed are read now, in its processes.
        known = indexer.results()
        missing = [(rel, None) for rel in rels if rel not in known]
        for start in range(0, len(missing), 32):
            indexer.add(base, missing[start : start + 32])
        known = indexer.results()
        results.extend(known[rel] for rel in rels)
        rels = []
        if progress is not None:
            progress(total, total, "indexing")
    if workers <= 1 or len(rels) < 64:
        for chunk in chunked(rels, max(1, len(rels) // 256)):
            results.extend(_index_chunk(str(base), chunk))
            if progress is not None:
                progress(len(results), total, "indexing")
    else:
        chunks = chunked(rels, workers * 8, min_size=32)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_index_chunk, str(base), chunk) for chunk in chunks]
            for future in as_completed(futures):
                results.extend(future.result())
                if progress is not None:
                    progress(len(results), total, "indexing")
    groups: dict[str, list[dict[str, Any]]] = {"dicom": [], "unreadable": [], "other": []}
    for kind, record in results:
        groups[kind].append(record)
    return DicomIndex(
        root=base,
        files=_frame(groups["dicom"], FILE_COLUMNS),
        unreadable=_frame(groups["unreadable"], _UNREADABLE_COLUMNS),
        other_files=_frame(groups["other"], _OTHER_COLUMNS),
        skipped=_frame([{"path": p, "reason": r} for p, r in skipped], _SKIPPED_COLUMNS),
    )
