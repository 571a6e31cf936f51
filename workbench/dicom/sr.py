"""A model's findings on one case as a DICOM Measurement Report (PS3.16 TID 1500).

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
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from workbench import __version__
from workbench.errors import DicomReadError

__all__ = ["SegmentVolume", "build_measurement_report", "contributing_equipment", "segment_volumes"]

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
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name=model_name[:64],
            manufacturer_name="Validation Workbench",
            model_name=f"{model_name} {model_version}"[:64],
            serial_number=run_uid[:64],
        ),
    )
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
