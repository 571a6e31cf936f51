"""Read and write lesion segmentations as DICOM SEG (PS3.3 A.51, C.8.20).

Masks are boolean arrays ``(z, y, x)`` aligned with a
:class:`~workbench.dicom.volume.Volume` of the source CT series: slice ``k`` of
the mask belongs to ``volume.sop_instance_uids[k]``. Writing uses highdicom
(BINARY segmentation: one segment, or one segment per structure of a label map);
a segmentation with ``algorithm_name`` is AUTOMATIC and carries the Algorithm
Identification Sequence, otherwise MANUAL. Reading picks one segment by number
or by Segment Label, or takes the union of all.

Both SOP classes are read (:data:`SEG_SOP_CLASSES`):

- Segmentation Storage (``1.2.840.10008.5.1.4.1.1.66.4``), SegmentationType
  BINARY or FRACTIONAL, one frame per segment and source slice. A FRACTIONAL
  segment holds a voxel wherever its stored value is above 0, whatever the
  Maximum Fractional Value (probability or occupancy alike).
- Label Map Segmentation Storage (``1.2.840.10008.5.1.4.1.1.66.7``, SegmentationType
  LABELMAP), one frame per source slice whose pixel values are Segment Numbers:
  segment ``k`` is the voxels of value ``k``. Value 0 is background; a segment 0
  in the Segment Sequence (highdicom writes one, labelled "Background") is not a
  structure and is never read as one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from workbench import __version__
from workbench.dicom.volume import Volume, sort_slices
from workbench.errors import DicomReadError, SegmentationError

__all__ = [
    "LABEL_MAP_SEG_STORAGE",
    "SEG_SOP_CLASSES",
    "SEG_STORAGE",
    "SegIdentity",
    "build_seg_dataset",
    "identify_seg",
    "read_seg_mask",
    "segment_number_of",
    "write_seg",
]

#: Segmentation Storage (PS3.4 B.5): BINARY or FRACTIONAL segments.
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: Label Map Segmentation Storage (PS3.4 B.5): one LABELMAP frame per source slice.
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
#: The SOP classes read as a SEG, with their names.
SEG_SOP_CLASSES: dict[str, str] = {
    SEG_STORAGE: "Segmentation Storage",
    LABEL_MAP_SEG_STORAGE: "Label Map Segmentation Storage",
}


def _expected_classes() -> str:
    return " or ".join(f"{name} ({uid})" for uid, name in SEG_SOP_CLASSES.items())


def _is_label_map(seg: Dataset) -> bool:
    return (
        str(seg.get("SOPClassUID", "")) == LABEL_MAP_SEG_STORAGE
        or str(seg.get("SegmentationType", "")) == "LABELMAP"
    )


def _described_segments(seg: Dataset) -> dict[int, str]:
    """Segment Number -> Segment Label, without the background segment 0 of a label map."""
    found = {
        int(item.SegmentNumber): str(item.get("SegmentLabel", ""))
        for item in seg.get("SegmentSequence", [])
    }
    if _is_label_map(seg):
        found.pop(0, None)
    return dict(sorted(found.items()))


def _referenced_series(seg: Dataset) -> set[str]:
    refs = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    for study in seg.get("StudiesContainingOtherReferencedInstancesSequence", []):
        refs.update(str(s.SeriesInstanceUID) for s in study.get("ReferencedSeriesSequence", []))
    return refs


def read_seg_mask(
    seg_path: str | Path,
    volume: Volume,
    *,
    segment_number: int | None = None,
    segment_label: str | None = None,
) -> np.ndarray:
    """Read a DICOM SEG as a boolean mask aligned with its source volume.

    Parameters
    ----------
    seg_path : str or Path
        A Segmentation Storage or Label Map Segmentation Storage file that
        references ``volume``'s series.
    volume : Volume
        The source CT series, as returned by :func:`~workbench.dicom.volume.load_series`.
    segment_number : int, optional
        Read only this segment; by default the union of all segments.
    segment_label : str, optional
        Read only the segment with this Segment Label (PS3.3 C.8.20.2), matched
        exactly; it must name one segment. Not together with ``segment_number``.

    Returns
    -------
    numpy.ndarray of bool, shape (z, y, x)
        ``True`` inside the segmentation; slices without frames are empty.

    Raises
    ------
    SegmentationError
        The file is not a SEG, references another series, or its frames cannot
        be placed on the volume's slices.
    """
    path = Path(seg_path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom/pydicom raise several types for bad input
        raise SegmentationError(f"Cannot read {path} as DICOM SEG: {exc}") from exc
    if str(seg.SOPClassUID) not in SEG_SOP_CLASSES:
        raise SegmentationError(
            f"{path}: expected SOP Class {_expected_classes()}, found {seg.SOPClassUID}."
        )
    refs = _referenced_series(seg)
    if refs and volume.series_instance_uid not in refs:
        raise SegmentationError(
            f"{path}: references series {sorted(refs)}, expected the volume's series "
            f"{volume.series_instance_uid}."
        )
    if segment_label is not None:
        if segment_number is not None:
            raise SegmentationError("Give segment_number or segment_label, not both.")
        segment_number = segment_number_of(seg, segment_label, path)
    numbers = None if segment_number is None else [segment_number]
    if segment_number is not None and segment_number not in seg.segment_numbers:
        raise SegmentationError(
            f"{path}: expected segment {segment_number}, found segments "
            f"{list(seg.segment_numbers)}."
        )
    try:
        pixels = seg.get_pixels_by_source_instance(
            list(volume.sop_instance_uids),
            segment_numbers=numbers,
            rescale_fractional=False,  # stored FRACTIONAL values: a voxel is in where > 0
            dtype=np.uint8,
        )
        mask = np.asarray(pixels).any(axis=-1)
    except (KeyError, ValueError, RuntimeError, AttributeError):
        # No per-frame source references: place frames by their plane positions.
        mask = _mask_by_position(seg, volume, numbers, path)
    if mask.shape != volume.shape:
        raise SegmentationError(
            f"{path}: mask shape {mask.shape} does not match the volume's {volume.shape}."
        )
    return mask.astype(bool, copy=False)


def segment_number_of(seg: Dataset, segment_label: str, where: str | Path = "SEG") -> int:
    """The Segment Number of the one segment labelled ``segment_label``.

    Raises
    ------
    SegmentationError
        No segment or several segments carry the label (the message lists the labels found).
    """
    found = _described_segments(seg)
    numbers = [n for n, label in found.items() if label == segment_label]
    if len(numbers) != 1:
        raise SegmentationError(
            f"{where}: expected one segment labelled {segment_label!r}. Found "
            f"{len(numbers)} among segments {found}."
        )
    return numbers[0]


def _functional_group(seg: Dataset, frame: Dataset, keyword: str, path: Path) -> Dataset:
    """A functional group macro of one frame: per-frame, else shared (PS3.3 C.7.6.16)."""
    for holder in (frame, *seg.get("SharedFunctionalGroupsSequence", [])):
        if keyword in holder and len(holder[keyword].value):
            return holder[keyword].value[0]
    raise SegmentationError(
        f"{path}: expected {keyword} in the per-frame or shared functional groups; found neither."
    )


def _mask_by_position(
    seg: hd.seg.Segmentation, volume: Volume, numbers: list[int] | None, path: Path
) -> np.ndarray:
    mask = np.zeros(volume.shape, dtype=bool)
    if int(seg.Rows) != volume.shape[1] or int(seg.Columns) != volume.shape[2]:
        raise SegmentationError(
            f"{path}: frames of {seg.Rows}x{seg.Columns} cannot be placed on slices of "
            f"{volume.shape[1]}x{volume.shape[2]}."
        )
    frames = np.asarray(seg.pixel_array)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    inverse = np.linalg.inv(volume.direction * np.asarray(volume.spacing[::-1]))
    label_map = _is_label_map(seg)
    wanted = numbers if numbers is not None else list(_described_segments(seg))
    for i, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        if not label_map:
            identification = _functional_group(seg, group, "SegmentIdentificationSequence", path)
            number = int(identification.ReferencedSegmentNumber)
            if numbers is not None and number not in numbers:
                continue
        position = _functional_group(seg, group, "PlanePositionSequence", path)
        ipp = np.asarray([float(v) for v in position.ImagePositionPatient])
        xyz = inverse @ (ipp - volume.origin)
        if np.any(np.abs(xyz[:2]) > 0.01) or abs(xyz[2] - round(xyz[2])) > 0.01:
            raise SegmentationError(
                f"{path}: frame {i + 1} at {list(ipp)} does not lie on a slice of the volume."
            )
        k = int(round(xyz[2]))
        if not 0 <= k < volume.shape[0]:
            raise SegmentationError(f"{path}: frame {i + 1} lies outside the volume.")
        # a label-map frame holds Segment Numbers; a BINARY/FRACTIONAL frame one segment
        mask[k] |= np.isin(frames[i], wanted) if label_map else frames[i] > 0
    return mask


def write_seg(
    mask: np.ndarray,
    source_paths: Sequence[str | Path],
    out_path: str | Path,
    *,
    source_headers: Sequence[Dataset] | None = None,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    segment_label: str = "Lesion",
    series_description: str = "Lesion segmentation",
    manufacturer: str = "Validation Workbench",
    manufacturer_model_name: str = "Validation Workbench",
    software_versions: str = __version__,
    series_number: int = 300,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    content_creator_name: str | None = None,
    content_datetime: dt.datetime | None = None,
    segment_labels: Sequence[str] | None = None,
) -> Path:
    """Write a binary lesion mask as a DICOM SEG referencing its CT series.

    Parameters
    ----------
    mask : numpy.ndarray, shape (z, y, x)
        Boolean (or 0/1) mask aligned with ``load_series(source_paths)``.
    source_paths : sequence of str or Path
        The CT files of the source series, in any order.
    out_path : str or Path
        Where to write the SEG; parent folders are created.
    source_headers : sequence of pydicom.Dataset, optional
        The headers of the same files, already read and in z order
        (:attr:`Volume.headers <workbench.dicom.volume.Volume.headers>`), so
        that the files are not read again; the SEG is the same either way.
    algorithm_name, algorithm_version : str, optional
        When ``algorithm_name`` is given the segment is AUTOMATIC and the SEG
        carries an Algorithm Identification Sequence (family: Artificial
        Intelligence); otherwise it is MANUAL.
    segment_label : str
        Segment Label of the single segment.
    segment_labels : sequence of str, optional
        Several segments: ``mask`` is then a label map whose value ``k`` (1, 2, ...)
        marks segment ``k``, labelled ``segment_labels[k - 1]``; 0 is background.
        Each segment is an anatomical structure (SCT 91723000) and every segment is
        written, empty or not.
    series_description, manufacturer, manufacturer_model_name, software_versions : str
        General Series and Enhanced General Equipment attributes.
    series_number : int
        Series Number of the SEG series.
    series_instance_uid, sop_instance_uid : str, optional
        UIDs to use (new random UIDs by default).
    content_creator_name : str, optional
        Person Name of the reader of a manual segmentation.
    content_datetime : datetime.datetime, optional
        Content, series and instance creation date/time; by default now. Fixing
        it (and the UIDs) makes the file byte-for-byte reproducible.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    SegmentationError
        The mask does not match the source series in shape, or writing fails.
    """
    paths = [Path(p) for p in source_paths]
    if source_headers is not None:
        if len(source_headers) != len(paths):
            raise SegmentationError(
                f"Expected one header per source file ({len(paths)}). Found {len(source_headers)}."
            )
        sources = list(source_headers)
    else:
        try:
            # Only the headers are needed: the SEG references the images, it does not copy them.
            datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
        except Exception as exc:
            raise DicomReadError(f"Cannot read the source series of the SEG: {exc}") from exc
        order, _, _ = sort_slices(datasets, [str(p) for p in paths])
        sources = [datasets[i] for i in order]
    seg = build_seg_dataset(
        mask,
        sources,
        algorithm_name=algorithm_name,
        algorithm_version=algorithm_version,
        segment_label=segment_label,
        series_description=series_description,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=software_versions,
        series_number=series_number,
        series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid,
        content_creator_name=content_creator_name,
        content_datetime=content_datetime,
        segment_labels=segment_labels,
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out, enforce_file_format=True)
    return out


def build_seg_dataset(
    mask: np.ndarray,
    sources: Sequence[Dataset],
    *,
    algorithm_name: str | None = None,
    algorithm_version: str | None = None,
    segment_label: str = "Lesion",
    series_description: str = "Lesion segmentation",
    manufacturer: str = "Validation Workbench",
    manufacturer_model_name: str = "Validation Workbench",
    software_versions: str = __version__,
    series_number: int = 300,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    content_creator_name: str | None = None,
    content_datetime: dt.datetime | None = None,
    segment_labels: Sequence[str] | None = None,
) -> hd.seg.Segmentation:
    """Build the SEG dataset of :func:`write_seg` from source datasets in memory.

    Parameters
    ----------
    mask : numpy.ndarray, shape (z, y, x)
        Mask aligned with ``sources``.
    sources : sequence of pydicom.Dataset
        The source slices already in z order (see
        :func:`~workbench.dicom.volume.sort_slices`).
    algorithm_name, algorithm_version, segment_label, series_description, manufacturer, \
manufacturer_model_name, software_versions, series_number, series_instance_uid, \
sop_instance_uid, content_creator_name, content_datetime, segment_labels
        As in :func:`write_seg`.

    Returns
    -------
    highdicom.seg.Segmentation
        The dataset, ready for ``save_as``.
    """
    array = np.asarray(mask)
    if not sources:
        raise SegmentationError("Expected the source slices of the SEG, found none.")
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if array.shape != expected:
        raise SegmentationError(
            f"Mask shape {array.shape} does not match the source series (z, y, x) {expected}."
        )
    if algorithm_version is not None and algorithm_name is None:
        raise SegmentationError("algorithm_version was given without algorithm_name.")
    if algorithm_name is None:
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues.MANUAL
        algorithm = None
    else:
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = hd.AlgorithmIdentificationSequence(
            name=algorithm_name,
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm_version or "unknown",
        )
    if segment_labels is None:
        descriptions = [
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label=segment_label,
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Lesion,
                algorithm_type=algorithm_type,
                algorithm_identification=algorithm,
            )
        ]
        pixels = array.astype(bool)
    else:
        labels = list(segment_labels)
        if not labels:
            raise SegmentationError("Expected at least one segment label, found none.")
        if array.dtype.kind not in "biu" or array.min(initial=0) < 0 or array.max() > len(labels):
            raise SegmentationError(
                f"Expected a label map with values 0 to {len(labels)} (one per segment label "
                f"{labels}). Found values {sorted(np.unique(array).tolist())[:10]}."
            )
        descriptions = [
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=codes.SCT.AnatomicalStructure,
                algorithm_type=algorithm_type,
                algorithm_identification=algorithm,
            )
            for number, label in enumerate(labels, start=1)
        ]
        # One-hot (z, y, x, segments): every segment keeps its frames, empty or not.
        pixels = np.stack([array == k for k in range(1, len(labels) + 1)], axis=-1)
    sop_uid = sop_instance_uid or hd.UID()
    when = content_datetime or dt.datetime.now()
    try:
        seg = hd.seg.Segmentation(
            source_images=list(sources),
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            # An all-empty mask keeps every frame (highdicom would do so too, with a warning).
            omit_empty_frames=bool(array.any()) and segment_labels is None,
            segment_descriptions=descriptions,
            series_instance_uid=series_instance_uid or hd.UID(),
            series_number=series_number,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer=manufacturer,
            manufacturer_model_name=manufacturer_model_name,
            software_versions=software_versions,
            device_serial_number="0",
            series_description=series_description,
            content_creator_name=content_creator_name,
            content_label="LESION",
            content_description=series_description[:64],
            content_date=when.date(),
            content_time=when.time(),
        )
    except (ValueError, TypeError) as exc:
        raise SegmentationError(f"Cannot build the DICOM SEG: {exc}") from exc
    _pin_generated_values(seg, sop_uid, when)
    return seg


def _pin_generated_values(seg: Dataset, sop_uid: str, when: dt.datetime) -> None:
    """Replace values highdicom derives from the clock or a random source."""
    date = when.strftime("%Y%m%d")
    time = when.strftime("%H%M%S")
    seg.InstanceCreationDate = date
    seg.InstanceCreationTime = time
    seg.SeriesDate = date
    seg.SeriesTime = time
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
    dim_uid = generate_uid(entropy_srcs=[str(sop_uid), "dimension-organization"])
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = dim_uid
    for item in seg.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = dim_uid


@dataclass(frozen=True, slots=True)
class SegIdentity:
    """What a DICOM SEG says about itself: what it segments, which segments, by whom.

    Attributes
    ----------
    sop_instance_uid, series_instance_uid : str
        Of the SEG itself.
    referenced_series_uids : tuple of str
        Series Instance UIDs of the source images it references (Referenced
        Series Sequence, PS3.3 C.7.6.16.2.10, and Studies Containing Other
        Referenced Instances), sorted.
    frame_of_reference_uid : str or None
    segment_labels : dict of int to str
        Segment Number -> Segment Label (Segment Sequence, PS3.3 C.8.20.2); a label
        map's background segment 0 is left out.
    algorithm_types : dict of int to str
        Segment Number -> Segment Algorithm Type (``MANUAL``, ``SEMIAUTOMATIC``,
        ``AUTOMATIC``).
    reader : str or None
        Content Creator's Name (PS3.3 C.10.9), the person who drew a manual
        segmentation, as written (``Family^Given``); ``None`` when absent.
    algorithm_names : tuple of str
        Algorithm Names of automatic segments (Segmentation Algorithm
        Identification Sequence), sorted.
    content_label : str or None
    segmentation_type : str
        ``BINARY``, ``FRACTIONAL`` or ``LABELMAP`` (PS3.3 C.8.20.2).
    """

    sop_instance_uid: str
    series_instance_uid: str
    referenced_series_uids: tuple[str, ...]
    frame_of_reference_uid: str | None
    segment_labels: dict[int, str]
    algorithm_types: dict[int, str]
    reader: str | None
    algorithm_names: tuple[str, ...]
    content_label: str | None
    segmentation_type: str = "BINARY"

    @property
    def referenced_series_uid(self) -> str:
        """The one source series the SEG references.

        Raises
        ------
        SegmentationError
            The SEG references no series or more than one.
        """
        if len(self.referenced_series_uids) != 1:
            raise SegmentationError(
                f"SEG {self.sop_instance_uid}: expected one referenced source series. Found "
                f"{len(self.referenced_series_uids)}: {list(self.referenced_series_uids)}."
            )
        return self.referenced_series_uids[0]


def identify_seg(seg: Dataset | str | Path) -> SegIdentity:
    """Identify a DICOM SEG by its content, not by its file name.

    Parameters
    ----------
    seg : pydicom.Dataset or str or Path
        A Segmentation Storage dataset, or the path of one (read without its
        pixel data).

    Returns
    -------
    SegIdentity
        Referenced series, segment labels, the reader (Content Creator's Name)
        and, for automatic segments, the algorithm names.

    Raises
    ------
    SegmentationError
        Not readable, or neither Segmentation Storage nor Label Map Segmentation
        Storage (expected and found SOP Class).

    Examples
    --------
    >>> identity = identify_seg("cases/case0001/SEG/reader1.dcm")  # doctest: +SKIP
    >>> identity.reader, identity.segment_labels  # doctest: +SKIP
    ('Reader1^Synthetic', {1: 'Lesion'})
    """
    if isinstance(seg, Dataset):
        ds = seg
    else:
        try:
            ds = pydicom.dcmread(seg, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for bad files
            raise SegmentationError(f"Cannot read {seg} as DICOM: {exc}") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in SEG_SOP_CLASSES:
        raise SegmentationError(
            f"Expected SOP Class {_expected_classes()}. "
            f"Found {sop_class or 'none'} (Modality {ds.get('Modality', 'none')})."
        )
    labels = _described_segments(ds)
    types: dict[int, str] = {}
    algorithms: set[str] = set()
    for item in ds.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        if number not in labels:
            continue  # a label map's background
        types[number] = str(item.get("SegmentAlgorithmType", ""))
        for algorithm in item.get("SegmentationAlgorithmIdentificationSequence", []):
            if "AlgorithmName" in algorithm:
                algorithms.add(str(algorithm.AlgorithmName))
        if "SegmentAlgorithmName" in item:
            algorithms.add(str(item.SegmentAlgorithmName))
    creator = ds.get("ContentCreatorName")
    return SegIdentity(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        referenced_series_uids=tuple(sorted(_referenced_series(ds))),
        frame_of_reference_uid=str(ds.FrameOfReferenceUID) if "FrameOfReferenceUID" in ds else None,
        segment_labels=labels,
        algorithm_types=dict(sorted(types.items())),
        reader=str(creator) if creator else None,
        algorithm_names=tuple(sorted(algorithms)),
        content_label=str(ds.ContentLabel) if "ContentLabel" in ds else None,
        segmentation_type=str(ds.get("SegmentationType", "")) or "BINARY",
    )
