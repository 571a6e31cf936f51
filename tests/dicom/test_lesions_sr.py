"""Reference lesions from DICOM SR Measurement Reports (TID 1500) on real and phantom images.

Positions are checked against highdicom's ``ImageToReferenceTransformer`` (image
coordinates to patient mm, independent of the workbench's own geometry code) and
against the phantom's reference SEG read through ``lesions_from_mask``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from workbench.dicom.index import index_folder
from workbench.dicom.lesions import LESION_COLUMNS, lesions_from_mask, lesions_from_sr
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.sr import build_measurement_report
from workbench.dicom.synth import generate_test_set
from workbench.dicom.volume import Volume, load_series
from workbench.errors import DicomReadError, GeometryError

_ROIGroup = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, pd.DataFrame]:
    """pydicom's CT_small (a real GE CT slice) and the index of a test set holding only it."""
    root = tmp_path_factory.mktemp("real_ct")
    shutil.copy(str(get_testdata_file("CT_small.dcm")), root / "CT_small.dcm")
    ds = pydicom.dcmread(root / "CT_small.dcm", stop_before_pixels=True)
    return ds, index_folder(root, workers=1).files


@dataclass
class Phantom:
    headers: list[Dataset]
    images: pd.DataFrame
    volume: Volume
    lesions: pd.DataFrame  # from the reader-1 SEG's components
    seg: Path
    index: pd.DataFrame  # every file, the SEGs (same Frame of Reference) included


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Phantom:
    root = tmp_path_factory.mktemp("phantom")
    generate_test_set(root, n_cases=1, seed=5, matrix=64, slices=(12, 14), workers=1)
    paths = sorted((root / "cases" / "case0001" / "CT").glob("*.dcm"))
    volume = load_series(paths)
    seg = root / "cases" / "case0001" / "SEG" / "reader1.dcm"
    lesions = lesions_from_mask(read_seg_mask(seg, volume), volume.affine)
    files = index_folder(root, workers=1).files
    return Phantom(
        headers=[pydicom.dcmread(p, stop_before_pixels=True) for p in paths],
        images=files[files["modality"] == "CT"],
        volume=volume,
        lesions=lesions,
        seg=seg,
        index=files,
    )


# --- building reports -------------------------------------------------------------------------


def _tracking(identifier: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier)


def _planar(
    identifier: str,
    image: Dataset,
    graphic_type: str,
    points: Sequence[Sequence[float]],
    **kw: object,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(identifier),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=graphic_type,
            graphic_data=np.array(points, dtype=float),
            source_image=hd.sr.SourceImageForRegion.from_source_image(image),
        ),
        **kw,  # type: ignore[arg-type]
    )


def _diameter(mm: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=codes.SCT.Diameter, value=mm, unit=codes.UCUM.Millimeter)


def _report(evidence: Sequence[Dataset], groups: Sequence[_ROIGroup]) -> hd.sr.Comprehensive3DSR:
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name="Reader^One"
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=list(groups),
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Reference reader",
    )


def _to_patient(image: Dataset, points: Sequence[Sequence[float]]) -> np.ndarray:
    """highdicom's image-coordinate (top left corner = (0, 0)) to LPS mm transform."""
    transform = hd.spatial.ImageToReferenceTransformer.for_image(image)
    return transform(np.array(points, dtype=float))


# --- planar regions on a real CT image --------------------------------------------------------


def test_planar_outline_on_a_real_ct_image(real_ct: tuple[Dataset, pd.DataFrame]) -> None:
    image, images = real_ct
    outline = [[10, 20], [30, 20], [30, 44], [10, 44], [10, 20]]
    group = _planar(
        "nodule-1",
        image,
        "POLYLINE",
        outline,
        finding_type=codes.SCT.Nodule,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.DCM.LevelOfSignificance, codes.SCT.Malignant),
        ],
    )
    sr = _report([image], [group])
    lesions = lesions_from_sr([sr], images)
    assert list(lesions.columns[: len(LESION_COLUMNS) + 1]) == [
        "series_instance_uid",
        *LESION_COLUMNS,
    ]
    (row,) = lesions.to_dict(orient="records")
    mm = _to_patient(image, outline)
    assert [row["x_min"], row["y_min"], row["z_min"]] == pytest.approx(mm.min(axis=0).tolist())
    assert [row["x_max"], row["y_max"], row["z_max"]] == pytest.approx(mm.max(axis=0).tolist())
    assert [row["x"], row["y"]] == pytest.approx(((mm.min(axis=0) + mm.max(axis=0)) / 2)[:2])
    # Feret diameter of the outline: its diagonal, 20 x 24 pixels of 0.661468 mm.
    assert row["diameter"] == pytest.approx(np.hypot(20, 24) * 0.661468, rel=1e-6)
    assert row["lesion_id"] == "nodule-1"
    assert row["tracking_uid"] == str(group.tracking_uid)
    assert row["sop_instance_uid"] == str(image.SOPInstanceUID)
    assert row["frame"] == 1
    assert row["series_instance_uid"] == str(image.SeriesInstanceUID)
    assert row["finding_type"] == "Nodule"
    assert row["level_of_significance"] == "Malignant"  # a qualitative evaluation
    assert row["lesion_weight"] == 1.0
    assert row["measurement_group"] == 1
    assert row["sr_sop_instance_uid"] == str(sr.SOPInstanceUID)


def test_planar_point_circle_and_ellipse(real_ct: tuple[Dataset, pd.DataFrame]) -> None:
    image, images = real_ct
    groups = [
        _planar("point", image, "POINT", [[64, 50]], measurements=[_diameter(6.0)]),
        _planar("circle", image, "CIRCLE", [[64, 64], [74, 64]]),
        _planar("ellipse", image, "ELLIPSE", [[40, 80], [60, 80], [50, 76], [50, 84]]),
    ]
    lesions = lesions_from_sr([_report([image], groups)], images).set_index("lesion_id")
    point = _to_patient(image, [[64, 50]])[0]
    assert lesions.loc["point", ["x", "y", "z"]].tolist() == pytest.approx(point.tolist())
    assert lesions.loc["point", "x_max"] - lesions.loc["point", "x_min"] == pytest.approx(6.0)
    assert lesions.loc["point", "diameter"] == 6.0
    # A measurement named like a lesion column keeps its value under its own name.
    assert lesions.loc["point", "diameter_measurement"] == 6.0
    circle = _to_patient(image, [[54, 54], [74, 74]])
    assert lesions.loc["circle", ["x_min", "y_min"]].tolist() == pytest.approx(circle[0, :2])
    assert lesions.loc["circle", ["x_max", "y_max"]].tolist() == pytest.approx(circle[1, :2])
    assert lesions.loc["circle", "diameter"] == pytest.approx(20 * 0.661468, rel=1e-6)
    ellipse = _to_patient(image, [[40, 76], [60, 84]])
    assert lesions.loc["ellipse", ["x_min", "y_min"]].tolist() == pytest.approx(ellipse[0, :2])
    assert lesions.loc["ellipse", ["x_max", "y_max"]].tolist() == pytest.approx(ellipse[1, :2])
    assert lesions.loc["ellipse", "diameter"] == pytest.approx(20 * 0.661468, rel=1e-6)
    assert lesions["lesion_weight"].tolist() == pytest.approx([1 / 3] * 3)
    assert lesions["measurement_group"].tolist() == [1, 2, 3]


# --- regions in patient coordinates on the phantom ------------------------------------------


def _inscribed_ellipsoid(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    middle = (lo + hi) / 2
    points = []
    for axis in range(3):
        for end in (lo, hi):
            point = middle.copy()
            point[axis] = end[axis]
            points.append(point)
    return np.array(points)


def test_ellipsoid_and_3d_point_on_the_phantom(phantom: Phantom) -> None:
    (truth,) = phantom.lesions.to_dict(orient="records")
    lo = np.array([truth["x_min"], truth["y_min"], truth["z_min"]])
    hi = np.array([truth["x_max"], truth["y_max"], truth["z_max"]])
    centre = np.array([truth["x"], truth["y"], truth["z"]])
    frame_of_reference = str(phantom.headers[0].FrameOfReferenceUID)
    ellipsoid = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("lesion-3d"),
        referenced_volume_surface=hd.sr.VolumeSurface(
            graphic_type="ELLIPSOID",
            graphic_data=_inscribed_ellipsoid(lo, hi),
            frame_of_reference_uid=frame_of_reference,
            source_series=hd.sr.SourceSeriesForSegmentation(
                str(phantom.headers[0].SeriesInstanceUID)
            ),
        ),
        finding_type=codes.SCT.Mass,
    )
    point = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("centre"),
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type="POINT",
            graphic_data=centre[None, :],
            frame_of_reference_uid=frame_of_reference,
        ),
        measurements=[_diameter(float(truth["diameter"]))],
    )
    sr = _report(phantom.headers, [ellipsoid, point])
    lesions = lesions_from_sr([sr], phantom.index).set_index("lesion_id")
    box = ["x_min", "y_min", "z_min", "x_max", "y_max", "z_max"]
    # Graphic Data is stored as 32-bit floats.
    assert lesions.loc["lesion-3d", box].tolist() == pytest.approx([*lo, *hi], abs=1e-3)
    assert lesions.loc["lesion-3d", "finding_type"] == "Mass"
    assert lesions.loc["lesion-3d", "diameter"] == pytest.approx(float(np.max(hi - lo)), abs=1e-3)
    assert lesions.loc["centre", ["x", "y", "z"]].tolist() == pytest.approx(centre, abs=1e-3)
    assert lesions.loc["centre", "diameter"] == pytest.approx(truth["diameter"])
    assert lesions.loc["centre", "graphic_type"] == "POINT"
    assert pd.isna(lesions.loc["centre", "sop_instance_uid"])
    assert set(lesions["series_instance_uid"]) == {str(phantom.headers[0].SeriesInstanceUID)}
    assert set(lesions["frame_of_reference_uid"]) == {frame_of_reference}


def test_outlines_on_adjacent_slices_make_one_lesion(phantom: Phantom) -> None:
    mask = read_seg_mask(phantom.seg, phantom.volume)
    zs, ys, xs = np.nonzero(mask)
    k0, k1 = int(zs.min()), int(zs.max())
    c0, c1, r0, r1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    by_uid = {str(h.SOPInstanceUID): h for h in phantom.headers}
    slices = [by_uid[uid] for uid in phantom.volume.sop_instance_uids[k0 : k1 + 1]]
    # The pixel edges of the mask's bounding box, in image coordinates.
    outline = np.array([[c0, r0], [c1 + 1, r0], [c1 + 1, r1 + 1], [c0, r1 + 1], [c0, r0]], float)
    regions = [
        hd.sr.ImageRegion(
            graphic_type="POLYLINE",
            graphic_data=outline,
            source_image=hd.sr.SourceImageForRegion.from_source_image(image),
        )
        for image in slices
    ]
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("stack"), referenced_regions=regions
    )
    (row,) = lesions_from_sr([_report(phantom.headers, [group])], phantom.images).to_dict(
        orient="records"
    )
    (truth,) = phantom.lesions.to_dict(orient="records")
    for key in ("x_min", "y_min", "x_max", "y_max"):
        assert row[key] == pytest.approx(truth[key], abs=1e-6), key
    z = [float(image.ImagePositionPatient[2]) for image in slices]
    assert (row["z_min"], row["z_max"]) == pytest.approx((min(z), max(z)))
    assert pd.isna(row["sop_instance_uid"])  # spans several images

    # The same tracking UID in two planar groups is one lesion as well.
    tracking = _tracking("split")
    planar = [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_region=region
        )
        for region in (regions[0], regions[-1])
    ]
    (merged,) = lesions_from_sr([_report(phantom.headers, planar)], phantom.images).to_dict(
        orient="records"
    )
    assert (merged["z_min"], merged["z_max"]) == pytest.approx((min(z), max(z)))


def test_weights_from_a_measurement(phantom: Phantom) -> None:
    weight = Code("LW", "99WBTEST", "Lesion weight")
    image = phantom.headers[5]

    def group(
        name: str, value: float | None
    ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
        measurements = (
            []
            if value is None
            else [hd.sr.Measurement(name=weight, value=value, unit=codes.UCUM.NoUnits)]
        )
        return _planar(
            name, image, "POLYLINE", [[5, 5], [9, 5], [9, 9], [5, 5]], measurements=measurements
        )

    sr = _report(phantom.headers, [group("a", 0.7), group("b", 0.3)])
    lesions = lesions_from_sr([sr], phantom.images, weight_concept=weight)
    assert lesions["lesion_weight"].tolist() == [0.7, 0.3]
    with pytest.raises(DicomReadError, match=r"group 2 \(tracking id 'b'\): expected a 'Lesion w"):
        lesions_from_sr(
            [_report(phantom.headers, [group("a", 0.7), group("b", None)])],
            phantom.images,
            weight_concept=weight,
        )


def test_groups_without_coordinates_are_not_lesions(phantom: Phantom) -> None:
    import datetime as dt

    sr = build_measurement_report(
        phantom.headers,
        seg=None,
        volumes=[],
        score=0.8,
        score_name="malignancy",
        model_name="m",
        model_version="1",
        run_uid="RUN-1",
        device_uid=hd.UID(),
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        content_datetime=dt.datetime(2026, 1, 2, 3, 4, 5),
    )
    lesions = lesions_from_sr([sr], phantom.images)
    assert lesions.empty
    assert "series_instance_uid" in lesions.columns


def test_reads_files_from_disk(real_ct: tuple[Dataset, pd.DataFrame], tmp_path: Path) -> None:
    image, images = real_ct
    path = tmp_path / "sr.dcm"
    _report([image], [_planar("p", image, "POINT", [[3, 4]])]).save_as(path)
    lesions = lesions_from_sr([path], images, default_diameter_mm=5.0)
    assert lesions["diameter"].tolist() == [5.0]


# --- malformed reports give named errors ------------------------------------------------------


def test_an_image_outside_the_test_set_is_named(real_ct: tuple[Dataset, pd.DataFrame]) -> None:
    image, images = real_ct
    other = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")), stop_before_pixels=True)
    groups = [
        _planar("nodule-1", image, "POINT", [[5, 5]], measurements=[_diameter(4.0)]),
        _planar("nodule-2", other, "POINT", [[5, 5]], measurements=[_diameter(4.0)]),
    ]
    sr = _report([image, other], groups)
    with pytest.raises(GeometryError) as raised:
        lesions_from_sr([sr], images)
    assert str(raised.value) == (
        f"SR {sr.SOPInstanceUID}, measurement group 2 (tracking id 'nodule-2'): "
        f"references SOP Instance {other.SOPInstanceUID} which is not in the test set"
    )


def test_regions_outside_the_images_are_named(
    real_ct: tuple[Dataset, pd.DataFrame], phantom: Phantom
) -> None:
    image, images = real_ct
    sr = _report([image], [_planar("wide", image, "POLYLINE", [[100, 10], [140, 10], [140, 30]])])
    with pytest.raises(
        GeometryError,
        match=r"group 1 \(tracking id 'wide'\): POLYLINE from \(100, 10\) to \(140, 30\) lies "
        r"outside the image of 128 columns x 128 rows",
    ):
        lesions_from_sr([sr], images)
    sr = _report([image], [_planar("circle", image, "CIRCLE", [[5, 64], [15, 64]])])
    with pytest.raises(GeometryError, match="'circle'.*outside the image"):
        lesions_from_sr([sr], images)

    frame_of_reference = str(phantom.headers[0].FrameOfReferenceUID)
    beyond = np.array([[0.0, 0.0, float(phantom.headers[-1].ImagePositionPatient[2]) + 50]])
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("far"),
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type="POINT", graphic_data=beyond, frame_of_reference_uid=frame_of_reference
        ),
    )
    with pytest.raises(GeometryError, match=r"'far'\): point \(0.00, 0.00, .*\) mm lies outside"):
        lesions_from_sr([_report(phantom.headers, [group])], phantom.images, default_diameter_mm=5)

    stranger = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("elsewhere"),
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type="POINT", graphic_data=np.zeros((1, 3)), frame_of_reference_uid="1.2.3.4"
        ),
    )
    with pytest.raises(
        GeometryError,
        match=r"'elsewhere'\): frame of reference 1.2.3.4 is not that of any series in the test",
    ):
        lesions_from_sr(
            [_report(phantom.headers, [stranger])], phantom.images, default_diameter_mm=5
        )


def test_a_point_needs_a_size(real_ct: tuple[Dataset, pd.DataFrame]) -> None:
    image, images = real_ct
    sr = _report([image], [_planar("dot", image, "POINT", [[3, 4]])])
    with pytest.raises(GeometryError, match=r"'dot'\): a POINT needs its size: a Diameter"):
        lesions_from_sr([sr], images)


def test_a_frame_the_image_does_not_have_is_named(real_ct: tuple[Dataset, pd.DataFrame]) -> None:
    image, images = real_ct
    sr = _report([image], [_planar("f", image, "POINT", [[3, 4]])])
    region = sr.ContentSequence[-1].ContentSequence[0].ContentSequence[-1]
    region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber = 2
    with pytest.raises(GeometryError, match=r"references frame 2 of SOP Instance .* frames 1..1"):
        lesions_from_sr([sr], images, default_diameter_mm=3)


def test_one_lesion_id_per_lesion(real_ct: tuple[Dataset, pd.DataFrame]) -> None:
    image, images = real_ct
    groups = [_planar("same", image, "POINT", [[3, 4]]), _planar("same", image, "POINT", [[9, 9]])]
    with pytest.raises(DicomReadError, match=r"group 2 .*lesion id 'same' is already used"):
        lesions_from_sr([_report([image], groups)], images, default_diameter_mm=3)


def test_a_segment_reference_is_not_coordinates(phantom: Phantom) -> None:
    seg = pydicom.dcmread(phantom.seg)
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("seg"),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=1,
            source_series=hd.sr.SourceSeriesForSegmentation(
                str(phantom.headers[0].SeriesInstanceUID)
            ),
        ),
    )
    with pytest.raises(DicomReadError, match="referenced segmentation.*lesions_from_mask"):
        lesions_from_sr([_report([*phantom.headers, seg], [group])], phantom.images)


def test_an_sr_of_another_kind_is_refused(real_ct: tuple[Dataset, pd.DataFrame]) -> None:
    """pydicom's test-SR.dcm: a Comprehensive SR written elsewhere, not a TID 1500 report."""
    _, images = real_ct
    other = pydicom.dcmread(str(get_testdata_file("test-SR.dcm")))
    with pytest.raises(DicomReadError) as raised:
        lesions_from_sr([other], images)
    assert str(raised.value).startswith(
        f"SR {other.SOPInstanceUID}: expected a Measurement Report (TID 1500"
    )
    assert "found document title 'Diagnosis'" in str(raised.value)


def test_a_frame_of_reference_shared_by_two_series_must_be_resolved(
    phantom: Phantom, real_ct: tuple[Dataset, pd.DataFrame]
) -> None:
    twin = phantom.images.assign(
        series_instance_uid="2.25.999", sop_instance_uid=phantom.images["sop_instance_uid"] + ".9"
    )
    images = pd.concat([phantom.images, twin], ignore_index=True)
    frame_of_reference = str(phantom.headers[0].FrameOfReferenceUID)
    (truth,) = phantom.lesions.to_dict(orient="records")
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("twin"),
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type="POINT",
            graphic_data=np.array([[truth["x"], truth["y"], truth["z"]]]),
            frame_of_reference_uid=frame_of_reference,
        ),
    )
    # The SR's evidence names the phantom's series: that one is meant.
    cited = lesions_from_sr([_report(phantom.headers, [group])], images, default_diameter_mm=5)
    assert cited["series_instance_uid"].tolist() == [str(phantom.headers[0].SeriesInstanceUID)]
    # Evidence naming neither: the reader cannot tell which series the point is in.
    unrelated = _report([real_ct[0]], [group])
    with pytest.raises(GeometryError, match=r"'twin'\): frame of reference .* is shared by series"):
        lesions_from_sr([unrelated], images, default_diameter_mm=5)


# --- a report written by another toolkit ------------------------------------------------------


def _concept(value: str, scheme: str, meaning: str, tag: str = "concept") -> str:
    return (
        f"<{tag}><value>{value}</value><scheme><designator>{scheme}</designator></scheme>"
        f"<meaning>{meaning}</meaning></{tag}>"
    )


def _dcmtk_group(identifier: str, uid: str, sop: str, region: str, extra: str = "") -> str:
    """A Measurement Group in dcmtk's SR XML, without template identification."""
    return (
        '<container flag="CONTINUOUS"><relationship>CONTAINS</relationship>'
        + _concept("125007", "DCM", "Measurement Group")
        + "<text><relationship>HAS OBS CONTEXT</relationship>"
        + _concept("112039", "DCM", "Tracking Identifier")
        + f"<value>{identifier}</value></text>"
        + "<uidref><relationship>HAS OBS CONTEXT</relationship>"
        + _concept("112040", "DCM", "Tracking Unique Identifier")
        + f"<value>{uid}</value></uidref>"
        + extra
        + region.format(sop=sop)
        + "</container>"
    )


_DCMTK_REGION = (
    '<scoord type="{type}"><relationship>CONTAINS</relationship>'
    + _concept("111030", "DCM", "Image Region")
    + "<image><relationship>SELECTED FROM</relationship><value>"
    + '<sopclass uid="1.2.840.10008.5.1.4.1.1.2">CTImageStorage</sopclass>'
    + '<instance uid="{{sop}}"/></value></image><data>{data}</data></scoord>'
)


@pytest.mark.skipif(shutil.which("xml2dsr") is None, reason="xml2dsr (dcmtk) not installed")
def test_a_report_encoded_by_dcmtk(real_ct: tuple[Dataset, pd.DataFrame], tmp_path: Path) -> None:
    """dcmtk's xml2dsr writes the report (no Content Template Sequence, dcmtk's own encoding)."""
    image, images = real_ct
    study, series, sop = image.StudyInstanceUID, image.SeriesInstanceUID, image.SOPInstanceUID
    diameter = (
        "<num><relationship>CONTAINS</relationship>"
        + _concept("81827009", "SCT", "Diameter")
        + "<value>7</value>"
        + _concept("mm", "UCUM", "millimeter", tag="unit")
        + "</num>"
    )
    groups = [
        _dcmtk_group(
            "dcmtk-point",
            "2.25.1003",
            sop,
            _DCMTK_REGION.format(type="POINT", data="64/32"),
            diameter,
        ),
        _dcmtk_group(
            "dcmtk-outline",
            "2.25.1004",
            sop,
            _DCMTK_REGION.format(type="POLYLINE", data="10/20,30/20,30/44,10/44,10/20"),
        ),
    ]
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<report type="Comprehensive SR">
<sopclass uid="1.2.840.10008.5.1.4.1.1.88.33">ComprehensiveSRStorage</sopclass>
<modality>SR</modality><manufacturer>dcmtk</manufacturer><patient><id>1CT1</id></patient>
<study uid="{study}"></study><series uid="2.25.1001"><number>77</number></series>
<instance uid="2.25.1002"><number>1</number></instance>
<evidence type="Current Requested Procedure"><study uid="{study}"><series uid="{series}"><value>
<sopclass uid="1.2.840.10008.5.1.4.1.1.2">CTImageStorage</sopclass><instance uid="{sop}"/>
</value></series></study></evidence>
<document><completion flag="COMPLETE"/><verification flag="UNVERIFIED"/>
<content><date>2025-01-02</date><time>03:04:05</time>
<container flag="CONTINUOUS">{_concept("126000", "DCM", "Imaging Measurement Report")}
<container flag="CONTINUOUS"><relationship>CONTAINS</relationship>
{_concept("126010", "DCM", "Imaging Measurements")}{"".join(groups)}
</container></container></content></document></report>
"""
    (tmp_path / "report.xml").write_text(xml)
    done = subprocess.run(
        ["xml2dsr", str(tmp_path / "report.xml"), str(tmp_path / "report.dcm")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = pydicom.dcmread(tmp_path / "report.dcm")
    assert "ContentTemplateSequence" not in written
    lesions = lesions_from_sr([written], images).set_index("lesion_id")
    assert lesions.index.tolist() == ["dcmtk-point", "dcmtk-outline"]
    point = _to_patient(image, [[64, 32]])[0]
    assert lesions.loc["dcmtk-point", ["x", "y", "z"]].tolist() == pytest.approx(point.tolist())
    assert lesions.loc["dcmtk-point", "diameter"] == 7.0
    outline = _to_patient(image, [[10, 20], [30, 44]])
    assert lesions.loc["dcmtk-outline", ["x_min", "y_min"]].tolist() == pytest.approx(
        outline[0, :2].tolist()
    )
    assert lesions.loc["dcmtk-outline", ["x_max", "y_max"]].tolist() == pytest.approx(
        outline[1, :2].tolist()
    )
    assert lesions["tracking_uid"].tolist() == ["2.25.1003", "2.25.1004"]


# --- a frame of an enhanced multi-frame CT (pydicom-data) -------------------------------------


@pytest.fixture(scope="module")
def enhanced_ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, pd.DataFrame, Path]:
    """pydicom-data's eCT_Supplemental: a real enhanced CT of 2 frames 10 mm apart."""
    root = tmp_path_factory.mktemp("enhanced_ct")
    shutil.copy(str(get_testdata_file("eCT_Supplemental.dcm")), root / "ect.dcm")
    ds = pydicom.dcmread(root / "ect.dcm", stop_before_pixels=True)
    return ds, index_folder(root, workers=1).files, root


def test_a_region_on_a_later_frame_is_placed_on_that_frame(
    enhanced_ct: tuple[Dataset, pd.DataFrame, Path],
) -> None:
    image, images, root = enhanced_ct
    outline = [[10.0, 20.0], [40.0, 20.0], [40.0, 50.0], [10.0, 20.0]]
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("frame-2"),
        referenced_region=hd.sr.ImageRegion(
            graphic_type="POLYLINE",
            graphic_data=np.array(outline),
            source_image=hd.sr.SourceImageForRegion.from_source_image(
                image, referenced_frame_numbers=[2]
            ),
        ),
    )
    sr = _report([image], [group])
    (row,) = lesions_from_sr([sr], images, root=root).to_dict(orient="records")
    transform = hd.spatial.ImageToReferenceTransformer.for_image(image, frame_number=2)
    mm = transform(np.array(outline))
    assert [row["x_min"], row["y_min"], row["z_min"]] == pytest.approx(mm.min(axis=0).tolist())
    assert [row["x_max"], row["y_max"], row["z_max"]] == pytest.approx(mm.max(axis=0).tolist())
    assert row["z"] == pytest.approx(-149.0)  # frame 1 lies at -159 mm
    assert row["frame"] == 2
    with pytest.raises(
        GeometryError,
        match=r"'frame-2'\): frame 2 of the multi-frame SOP Instance .* pass root",
    ):
        lesions_from_sr([sr], images)


def test_a_3d_point_between_the_frames_of_an_enhanced_ct(
    enhanced_ct: tuple[Dataset, pd.DataFrame, Path],
) -> None:
    image, images, root = enhanced_ct
    # In the slab of frame 2 (at -149 mm; frame 1 at -159 mm), inside the pixel matrix.
    centre = hd.spatial.ImageToReferenceTransformer.for_image(image, frame_number=2)(
        np.array([[100.0, 120.0]])
    )[0]
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("deep"),
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type="POINT",
            graphic_data=centre[None, :],
            frame_of_reference_uid=str(image.FrameOfReferenceUID),
        ),
    )
    sr = _report([image], [group])
    (row,) = lesions_from_sr([sr], images, root=root, default_diameter_mm=4).to_dict(
        orient="records"
    )
    assert [row["x"], row["y"], row["z"]] == pytest.approx(centre.tolist(), abs=1e-3)
    with pytest.raises(GeometryError, match=r"'deep'\): frame 2 of the multi-frame SOP"):
        lesions_from_sr([sr], images, default_diameter_mm=4)
    # 20 mm beyond the last frame's slab: outside.
    far = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("beyond"),
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type="POINT",
            graphic_data=(centre + [0.0, 0.0, 20.0])[None, :],
            frame_of_reference_uid=str(image.FrameOfReferenceUID),
        ),
    )
    with pytest.raises(GeometryError, match=r"'beyond'\): point .* lies outside the images"):
        lesions_from_sr([_report([image], [far])], images, root=root, default_diameter_mm=4)


def test_a_group_without_tracking_identification_is_named(
    real_ct: tuple[Dataset, pd.DataFrame],
) -> None:
    image, images = real_ct
    sr = _report([image], [_planar("x", image, "POINT", [[3, 4]])])
    group = sr.ContentSequence[-1].ContentSequence[0]
    group.ContentSequence = [
        item
        for item in group.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue not in ("112039", "112040")
    ]
    with pytest.raises(
        DicomReadError,
        match=r"measurement group 1: expected a Tracking Identifier or Tracking Unique",
    ):
        lesions_from_sr([sr], images, default_diameter_mm=3)
