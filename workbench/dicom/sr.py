"""A model's findings on one case as a DICOM Measurement Report (PS3.16 TID 1500).

Two reports are built here: :func:`build_measurement_report` for a segmentation
or classification model, and :func:`build_detection_report` for a detection
model's marks (see that function); :func:`workbench.dicom.lesions.lesions_from_sr`
reads either back as lesions.

The report is a Comprehensive 3D SR (PS3.3 A.35.13) written with highdicom:

- observer context: the model as a device observer (TID 1004: name, version as
  model name, the run as its UID's source);
- one volumetric measurement group (TID 1411) per segment of the model's SEG,
  referencing the segment and its source series, with the segment's volume in
  mm3 (SCT 118565006 *Volume*);
- one measurement group (TID 1501) with the case's classification score
  (SCT 246262008 *Score*, unit ``1``) when the model gives one;

and every referenced instance (source images, SEG) recorded as evidence.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from workbench import __version__
from workbench.dicom.lesions import SeriesExtent
from workbench.errors import DicomReadError, GeometryError

__all__ = [
    "DetectionMark",
    "SCORE_CONCEPT",
    "SegmentVolume",
    "build_detection_report",
    "build_measurement_report",
    "contributing_equipment",
    "segment_volumes",
]

_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

#: Procedure Reported (CID 100) by modality of the source images.
_PROCEDURES = {
    "CT": codes.LN.CTUnspecifiedBodyRegion,
    "MR": codes.LN.MRIUnspecifiedBodyRegion,
    "NM": codes.LN.NMUnspecifiedBodyRegion,
    "PT": codes.LN.PETUnspecifiedBodyRegion,
    "CR": codes.LN.XRUnspecifiedBodyRegion,
    "DX": codes.LN.XRUnspecifiedBodyRegion,
}


@dataclass(frozen=True, slots=True)
class SegmentVolume:
    """Volume of one segment of a SEG.

    Parameters
    ----------
    segment_number : int
    label : str
        Segment Label.
    volume_mm3 : float
    """

    segment_number: int
    label: str
    volume_mm3: float


def segment_volumes(seg: Dataset) -> list[SegmentVolume]:
    """Volume of every segment of a binary or fractional SEG (voxel count x voxel size).

    The voxel size is Pixel Spacing x Spacing Between Slices (else Slice
    Thickness) of the shared Pixel Measures (PS3.3 C.7.6.16.2.1).

    Raises
    ------
    DicomReadError
        Not a SEG, or its pixel measures are missing.
    """
    if str(seg.get("SOPClassUID", "")) != _SEG_SOP_CLASS:
        raise DicomReadError(
            f"Expected a Segmentation Storage object, found SOP Class {seg.get('SOPClassUID')}."
        )
    try:
        measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        row, col = (float(v) for v in measures.PixelSpacing)
        depth = float(measures.get("SpacingBetweenSlices") or measures.SliceThickness)
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        raise DicomReadError(f"SEG {seg.SOPInstanceUID} has no usable Pixel Measures.") from exc
    frames = np.asarray(seg.pixel_array)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    fractional = str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL"
    scale = float(seg.get("MaximumFractionalValue", 255)) if fractional else 1.0
    shared = seg.SharedFunctionalGroupsSequence[0].get("SegmentIdentificationSequence")
    counts: dict[int, float] = {}
    for i, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        # With one segment the identification may be shared by all frames (C.7.6.16).
        identification = group.get("SegmentIdentificationSequence") or shared
        number = int(identification[0].ReferencedSegmentNumber)
        counts[number] = counts.get(number, 0.0) + float(frames[i].sum()) / scale
    voxel = row * col * depth
    return [
        SegmentVolume(
            segment_number=int(item.SegmentNumber),
            label=str(item.get("SegmentLabel", "")),
            volume_mm3=counts.get(int(item.SegmentNumber), 0.0) * voxel,
        )
        for item in seg.SegmentSequence
    ]


def contributing_equipment(description: str) -> hd.ContributingEquipment:
    """The workbench as Processing Equipment (DCM 109102) with a contribution description.

    The description (Contribution Description, 0018,A003) carries the run id
    and model identity in a standard, non-private attribute.
    """
    return hd.ContributingEquipment(
        manufacturer="Validation Workbench",
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name="Validation Workbench",
        software_versions=__version__,
        contribution_description=description[:1024],
    )


def build_measurement_report(
    source_images: Sequence[Dataset],
    *,
    seg: Dataset | None,
    volumes: Sequence[SegmentVolume],
    score: float | None,
    score_name: str,
    model_name: str,
    model_version: str,
    run_uid: str,
    device_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    content_datetime: dt.datetime,
    series_number: int = 301,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Measurement Report of one case.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        Headers of the case's source series (evidence; patient and study are
        taken from them).
    seg : pydicom.Dataset, optional
        The exported SEG whose segments ``volumes`` describe.
    volumes : sequence of SegmentVolume
        From :func:`segment_volumes` of ``seg``.
    score : float, optional
        Classification score of the case.
    score_name : str
        Name of the model output the score comes from (tracking identifier).
    model_name, model_version : str
        Algorithm identification and device observer.
    run_uid : str
        The validation run (series description, observer and equipment).
    device_uid : str
        Device Observer UID of the model (stable per model).
    series_instance_uid, sop_instance_uid : str
        Deterministic UIDs of the SR.
    content_datetime : datetime.datetime
        Content date and time.
    series_number : int

    Returns
    -------
    highdicom.sr.Comprehensive3DSR

    Raises
    ------
    DicomReadError
        Neither a SEG nor a score: nothing to report.
    """
    if not source_images:
        raise DicomReadError("Expected the source images of the case, found none.")
    if seg is None and score is None:
        raise DicomReadError("Expected a segmentation or a score to report, found neither.")
    algorithm = hd.sr.AlgorithmIdentification(name=model_name, version=model_version)
    observer = _device_observer(model_name, model_version, run_uid, device_uid)
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    series_uid = str(source_images[0].SeriesInstanceUID)
    if seg is not None:
        for volume in volumes:
            referenced = hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID),
                sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=volume.segment_number,
                source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
            )
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=_derived_uid(sop_instance_uid, f"segment/{volume.segment_number}"),
                        identifier=f"segment {volume.segment_number} {volume.label}"[:64],
                    ),
                    referenced_segment=referenced,
                    finding_type=codes.SCT.Lesion,
                    algorithm_id=algorithm,
                    measurements=[
                        hd.sr.Measurement(
                            name=codes.SCT.Volume,
                            value=float(volume.volume_mm3),
                            unit=codes.UCUM.CubicMillimeter,
                            algorithm_id=algorithm,
                        )
                    ],
                )
            )
    if score is not None:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_derived_uid(sop_instance_uid, "score"),
                    identifier=f"classification {score_name}"[:64],
                ),
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.Score,
                        value=float(score),
                        unit=codes.UCUM.NoUnits,
                        algorithm_id=algorithm,
                    )
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_PROCEDURES.get(
            str(source_images[0].get("Modality", "")), codes.LN.DiagnosticImagingReport
        ),
        imaging_measurements=groups,
    )
    evidence = list(source_images) + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="Validation Workbench",
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=[
            contributing_equipment(
                f"Findings of model {model_name} {model_version} in validation run {run_uid}"
            )
        ],
    )
    sr.SeriesDescription = f"{model_name} {model_version} run {run_uid}"[:64]
    _pin_time(sr, content_datetime)
    return sr


class DetectionMark(Protocol):
    """What :func:`build_detection_report` reads of a mark.

    :class:`workbench.inference.detection.Mark` is one: a centre ``x, y, z`` and
    optionally a box ``x_min .. z_max`` in LPS mm, a ``score`` and a ``label``.
    """

    @property
    def score(self) -> float: ...
    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...
    @property
    def z(self) -> float: ...
    @property
    def x_min(self) -> float | None: ...
    @property
    def y_min(self) -> float | None: ...
    @property
    def z_min(self) -> float | None: ...
    @property
    def x_max(self) -> float | None: ...
    @property
    def y_max(self) -> float | None: ...
    @property
    def z_max(self) -> float | None: ...
    @property
    def label(self) -> str: ...


#: Concept of a mark's score: Certainty of Finding (DCM 111012), how likely the
#: finding is what it is said to be, as in the CAD SR templates of PS3.16.
SCORE_CONCEPT = codes.DCM.CertaintyOfFinding


def _mark_geometry(
    number: int, mark: DetectionMark
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(graphic type, graphic data, box low, box high) of one mark in LPS mm."""
    centre = np.array([mark.x, mark.y, mark.z], dtype=float)
    box = (mark.x_min, mark.y_min, mark.z_min, mark.x_max, mark.y_max, mark.z_max)
    if all(v is None for v in box):
        if not np.all(np.isfinite(centre)):
            raise GeometryError(f"mark {number}: expected a finite centre; found {centre.tolist()}")
        return "POINT", centre[None, :], centre, centre
    if any(v is None for v in box):
        raise GeometryError(
            f"mark {number}: expected all six box corners x_min .. z_max or none; found {box}"
        )
    lo = np.array(box[:3], dtype=float)
    hi = np.array(box[3:], dtype=float)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(hi < lo):
        raise GeometryError(
            f"mark {number}: expected a finite box with x/y/z_min <= x/y/z_max; "
            f"found {lo.tolist()} to {hi.tolist()}"
        )
    middle = (lo + hi) / 2.0
    # The ellipsoid inscribed in the box, its axes along x, y and z (PS3.3 C.18.9.1.2):
    # its axis-aligned bounding box is the box itself.
    data = []
    for axis in range(3):
        for end in (lo, hi):
            point = middle.copy()
            point[axis] = end[axis]
            data.append(point)
    return "ELLIPSOID", np.array(data), lo, hi


def build_detection_report(
    source_images: Sequence[Dataset],
    marks: Sequence[DetectionMark],
    *,
    model_name: str,
    model_version: str,
    run_uid: str,
    device_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    content_datetime: dt.datetime,
    finding_type: Code = codes.SCT.Lesion,
    label_codes: Mapping[str, Code] | None = None,
    series_number: int = 302,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Measurement Report of a detection model's marks on one case.

    One Volumetric ROI measurement group (PS3.16 TID 1411) per mark, in the
    order given:

    - Tracking Identifier ``M<k>`` (k = 1, 2, ... as in
      :func:`workbench.inference.detection.marks_to_frame`) and a Tracking
      Unique Identifier derived from the report's UID and ``k``;
    - the region as a Volume Surface (SCOORD3D, LPS mm, in the source series'
      Frame of Reference): a box mark as the ``ELLIPSOID`` inscribed in the box
      (axes along x, y and z, so the box is recovered exactly), a point mark as
      a ``POINT``; with the source images whose slab the mark meets;
    - Finding type: ``label_codes[mark.label]``, else ``finding_type``;
    - the score as a numeric measurement *Certainty of Finding* (DCM 111012,
      unit ``1``) and the model as Algorithm Identification (TID 4019) of the
      group and of the measurement;

    with the model as device observer and the source images as evidence. Read
    it back with :func:`workbench.dicom.lesions.lesions_from_sr`: ``lesion_id``
    is the tracking identifier, the box that of the mark (the centre read back
    is the box's centre: a box mark's own centre, e.g. a component's centroid,
    is not stored), a point mark's centre its point (it needs
    ``default_diameter_mm`` there), the score is in the ``certainty_of_finding``
    column and the label's code in ``finding_type``.

    Parameters
    ----------
    source_images : sequence of pydicom.Dataset
        Headers of the case's source series (one series, with a Frame of
        Reference).
    marks : sequence of DetectionMark
        E.g. :class:`workbench.inference.detection.Mark`; at least one (TID 1500
        needs a measurement group: a case without marks has no detection report).
    model_name, model_version : str
        Algorithm identification and device observer.
    run_uid : str
        The validation run (series description, observer and equipment).
    device_uid : str
        Device Observer UID of the model (stable per model).
    series_instance_uid, sop_instance_uid : str
        Deterministic UIDs of the SR.
    content_datetime : datetime.datetime
        Content date and time.
    finding_type : pydicom.sr.coding.Code
        Finding type of a mark without a label (default SCT 52988006 *Lesion*).
    label_codes : mapping of str to Code, optional
        Finding type of each mark label the model emits.
    series_number : int

    Returns
    -------
    highdicom.sr.Comprehensive3DSR

    Raises
    ------
    DicomReadError
        No source images or no marks, source images of more than one series,
        multi-frame or without a Frame of Reference UID, or a mark label without
        a code.
    GeometryError
        A mark with a partial, inverted or non-finite box, or lying outside the
        source images; the message names the mark (1-based) and what was expected.
    """
    if not source_images:
        raise DicomReadError("Expected the source images of the case, found none.")
    if not marks:
        raise DicomReadError(
            "Expected at least one mark, found none: a Measurement Report needs a "
            "measurement group, so a case without marks has no detection report."
        )
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in source_images}
    if len(series) != 1:
        raise DicomReadError(f"Expected source images of one series; found {sorted(series)}.")
    frame_of_reference = str(source_images[0].get("FrameOfReferenceUID", ""))
    if not frame_of_reference:
        raise DicomReadError(
            f"Expected a Frame of Reference UID in the source series {series.pop()}; "
            "marks in patient coordinates need one."
        )
    for ds in source_images:
        if int(ds.get("NumberOfFrames") or 1) > 1:
            raise DicomReadError(
                f"Source image {ds.SOPInstanceUID} has {ds.NumberOfFrames} frames; detection "
                "reports are written for series of single-frame images (as the run loads them)."
            )
    extent = SeriesExtent.from_datasets(source_images)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source_images}
    labels = dict(label_codes or {})
    algorithm = hd.sr.AlgorithmIdentification(name=model_name, version=model_version)
    groups: list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations] = []
    for number, mark in enumerate(marks, start=1):
        graphic_type, data, lo, hi = _mark_geometry(number, mark)
        outside = extent.outside(data)
        if outside.any():
            point = data[int(np.argmax(outside))]
            raise GeometryError(
                f"mark {number}: point ({point[0]:.2f}, {point[1]:.2f}, {point[2]:.2f}) mm "
                f"lies outside the images of {extent.describe()}"
            )
        if mark.label and mark.label not in labels:
            raise DicomReadError(
                f"mark {number}: label {mark.label!r} has no code; expected one of "
                f"{sorted(labels)} in label_codes"
            )
        depths = extent.depth(np.array([lo, hi]))
        sources = extent.images_between(float(depths.min()), float(depths.max()))
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=_derived_uid(sop_instance_uid, f"mark/{number}"),
                    identifier=f"M{number}",
                ),
                referenced_volume_surface=hd.sr.VolumeSurface(
                    graphic_type=graphic_type,
                    graphic_data=data,
                    frame_of_reference_uid=frame_of_reference,
                    source_images=[
                        hd.sr.SourceImageForSegmentation.from_source_image(by_uid[uid])
                        for uid in sources
                    ],
                ),
                finding_type=labels[mark.label] if mark.label else finding_type,
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(
                        name=SCORE_CONCEPT,
                        value=float(mark.score),
                        unit=codes.UCUM.NoUnits,
                        algorithm_id=algorithm,
                    )
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=_device_observer(model_name, model_version, run_uid, device_uid)
        ),
        procedure_reported=_PROCEDURES.get(
            str(source_images[0].get("Modality", "")), codes.LN.DiagnosticImagingReport
        ),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(source_images),
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="Validation Workbench",
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=[
            contributing_equipment(
                f"Detections of model {model_name} {model_version} in validation run {run_uid}"
            )
        ],
    )
    sr.SeriesDescription = f"{model_name} {model_version} marks run {run_uid}"[:64]
    _pin_time(sr, content_datetime)
    return sr


def _device_observer(
    model_name: str, model_version: str, run_uid: str, device_uid: str
) -> hd.sr.ObserverContext:
    """The model as device observer (TID 1004)."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name=model_name[:64],
            manufacturer_name="Validation Workbench",
            model_name=f"{model_name} {model_version}"[:64],
            serial_number=run_uid[:64],
        ),
    )


def _derived_uid(base: str, part: str) -> str:
    """A UUID-derived UID (PS3.5 B.2) from ``base`` and ``part``: the same on every export."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'{base}/{part}').int}"


def _pin_time(ds: Dataset, when: dt.datetime) -> None:
    """Date and time attributes from ``when`` so that a re-export writes the same object."""
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    for prefix in ("Content", "InstanceCreation", "Series"):
        if f"{prefix}Date" in ds:
            setattr(ds, f"{prefix}Date", date)
            setattr(ds, f"{prefix}Time", time)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
