"""Real DICOM from other tools: pydicom's test files and the ``pydicom-data`` package.

Every file is indexed; every image object is decoded through the pinned pylibjpeg
plugins (and python-gdcm); the files that cannot be decoded are listed here with
the reason, and the test fails when that list changes in either direction. The
data-quality check runs over the whole mixed folder without crashing and reports
DICOMDIR, SR, RT and stray files as what they are.

At the time of writing: 244 files; 232 DICOM (201 images, 4 SEG, 27 other
objects), 12 unreadable (2 truncated, 10 not DICOM); of the 201 images 146
decode, 53 carry no pixel data (pydicom strips them from its DICOMDIR test
tree) and 2 hold invalid compressed streams.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom.pixels import pixel_array

from workbench.dicom.index import DicomIndex, index_folder
from workbench.dicom.pixels import (
    decode_frames,
    frame_geometry,
    frame_shape,
    frame_table,
    read_dicom,
)
from workbench.errors import DicomReadError, GeometryError
from workbench.quality import QualityReport, Severity, run_quality_checks

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"

#: Image objects whose pixel data no decoder can read, and why.
UNDECODABLE = {
    # libjpeg: "A misplaced marker segment was found"; GDCM and Pillow refuse 12-bit
    "pydicom/JPEG-lossy.dcm": "JPEG Extended",
    # the J2K codestream holds a stray sequence delimiter: "failed to read the header"
    "pydicom/JPEG2000-embedded-sequence-delimiter.dcm": "JPEG 2000",
}

#: Unreadable files and the start of their reason.
UNREADABLE = {
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",
    "pydicom/MR_truncated.dcm": "truncated",
    "pydicom/README.txt": "not DICOM (text file)",
    "pydicom/crayons.icc": "not DICOM (ICC colour profile)",
    "pydicom/zipMR.gz": "not DICOM (gzip archive)",
    "pydicom/test1.json": "not DICOM (JSON",
}

SYNTAXES_DECODED = {
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1 (process 14)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE
}


@dataclass(frozen=True)
class RealSet:
    root: Path
    index: DicomIndex
    decoded: dict[str, tuple[int, ...]]
    failed: dict[str, str]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealSet:
    data_store = pytest.importorskip("data_store", reason="pydicom-data (dev extra) not installed")
    root = tmp_path_factory.mktemp("real")
    shutil.copytree(PYDICOM_FILES, root / "pydicom")
    shutil.copytree(Path(data_store.__file__).parent / "data", root / "pydicom-data")
    index = index_folder(root, workers=1)
    decoded: dict[str, tuple[int, ...]] = {}
    failed: dict[str, str] = {}
    for row in index.files[index.files["kind"] == "image"].itertuples():
        ds = read_dicom(root / row.path)
        try:
            decoded[row.path] = tuple(decode_frames(ds).shape)
        except DicomReadError as exc:
            failed[row.path] = str(exc)
    return RealSet(root, index, decoded, failed)


def test_index_reads_every_file_and_names_what_it_cannot(real: RealSet) -> None:
    files, unreadable = real.index.files, real.index.unreadable
    assert len(files) + len(unreadable) + len(real.index.other_files) == sum(
        1 for p in real.root.rglob("*") if p.is_file()
    )
    reasons = dict(zip(unreadable["path"], unreadable["reason"], strict=True))
    for path, start in UNREADABLE.items():
        assert reasons[path].startswith(start), (path, reasons[path])
    kinds = set(files["kind"])
    assert {"image", "segmentation", "directory", "structured_report", "radiotherapy"} <= kinds
    modalities = set(files.loc[files["kind"] == "image", "modality"])
    assert {"CT", "MR", "US", "CR", "NM", "OT"} <= modalities


def test_every_image_decodes_or_the_reason_is_known(real: RealSet) -> None:
    no_pixels = {p for p, why in real.failed.items() if "found none" in why}
    invalid = {p: why for p, why in real.failed.items() if p not in no_pixels}
    assert set(invalid) == set(UNDECODABLE), invalid
    for path, syntax in UNDECODABLE.items():
        assert syntax in invalid[path]
    assert all(
        "TINY_ALPHA" in p or "UN_sequence" in p or "no_meta" in p or "priv_SQ" in p
        for p in no_pixels
    ), no_pixels
    files = real.index.files.set_index("path")
    syntaxes = {files.at[p, "transfer_syntax_uid"] for p in real.decoded}
    assert SYNTAXES_DECODED <= syntaxes, SYNTAXES_DECODED - syntaxes
    assert len(real.decoded) >= 146


def test_decoded_shape_follows_frames_samples_and_colour(real: RealSet) -> None:
    for path, shape in real.decoded.items():
        ds = read_dicom(real.root / path, stop_before_pixels=True)
        frames, rows, cols, samples = frame_shape(ds)
        if ds.PhotometricInterpretation == "PALETTE COLOR":
            samples = 3
        assert shape == (frames, rows, cols, samples), path


def test_ybr_is_converted_to_rgb(real: RealSet) -> None:
    # the same picture stored as RGB and as YBR_FULL (pydicom-data)
    rgb = decode_frames(read_dicom(real.root / "pydicom-data/SC_rgb.dcm"))
    ybr = decode_frames(read_dicom(real.root / "pydicom-data/SC_ybr_full_uncompressed.dcm"))
    assert rgb.shape == ybr.shape
    assert np.abs(rgb.astype(int) - ybr.astype(int)).max() <= 8  # rounding of the YBR values
    raw = pixel_array(read_dicom(real.root / "pydicom-data/SC_ybr_full_uncompressed.dcm"), raw=True)
    assert np.abs(rgb[0].astype(int) - raw.astype(int)).max() > 50  # unconverted differs


def test_enhanced_ct_geometry_comes_from_functional_groups(real: RealSet) -> None:
    ds = read_dicom(real.root / "pydicom-data/eCT_Supplemental.dcm", stop_before_pixels=True)
    geometry = frame_geometry(ds)
    assert geometry.source == "functional-groups"
    assert geometry.positions is not None and geometry.positions.shape == (2, 3)
    assert geometry.n_orientations == 1 and geometry.pixel_spacing is not None
    frames = frame_table(real.root, ["pydicom-data/eCT_Supplemental.dcm", "pydicom/CT_small.dcm"])
    assert list(frames["frame"]) == [0, 1, 0]
    assert frames["image_position_z"].notna().all()
    ect = frames[frames["path"] == "pydicom-data/eCT_Supplemental.dcm"]
    assert ect["image_position_z"].nunique() == 2  # one position per frame
    row = real.index.files.set_index("path").loc["pydicom-data/eCT_Supplemental.dcm"]
    assert row["pixel_spacing_row"] == pytest.approx(geometry.pixel_spacing[0])
    assert row["image_orientation"] is not None


@pytest.fixture(scope="module")
def mixed_report(real: RealSet) -> QualityReport:
    return run_quality_checks(real.root, real.index, suite="mixed-test-set-v1")


def test_quality_check_of_the_mixed_folder(real: RealSet, mixed_report: QualityReport) -> None:
    objects = real.index.files[~real.index.files["kind"].isin(["image", "segmentation"])]
    reported = {f.path for f in mixed_report.by_check("non_image_object")}
    assert reported == set(objects["path"])
    assert all(f.severity is Severity.INFO for f in mixed_report.by_check("non_image_object"))
    stray = {f.path for f in mixed_report.by_check("non_dicom_file")}
    assert {"pydicom/README.txt", "pydicom/zipMR.gz", "pydicom/crayons.icc"} <= stray
    critical = {f.path for f in mixed_report.by_check("pixel_geometry") if f.severity == "critical"}
    assert critical.isdisjoint(real.decoded), critical & set(real.decoded)
    for f in mixed_report.findings:
        assert f.attribute, f
    # a DICOMDIR holds patient names; they are findings, never echoed
    text = mixed_report.to_frame().to_csv()
    assert "Doe^Archibald" not in text and "CompressedSamples" not in text


def test_a_ct_suite_gives_one_modality_finding_per_series(real: RealSet) -> None:
    # pydicom-data alone: CT, MR, US, OT and NM series in one folder
    files = real.index.files[real.index.files["path"].str.startswith("pydicom-data/")]
    subset = DicomIndex(
        real.root, files.reset_index(drop=True), files.iloc[0:0], files.iloc[0:0], files.iloc[0:0]
    )
    report = run_quality_checks(real.root, subset, suite="ct-test-set-v1")
    findings = report.by_check("modality")
    images = files[files["kind"] == "image"]
    other = images[images["modality"].notna() & (images["modality"] != "CT")]
    series = other.drop_duplicates(["series_instance_uid", "modality"])
    assert 0 < len(findings) <= len(series) < len(other)
    assert all(f.attribute == "Modality (0008,0060)" and f.expected == "CT" for f in findings)


def test_cases_and_loaders_for_volumes_multiframes_and_2d_images(real: RealSet) -> None:
    from workbench.dicom.volume import load_image, load_multiframe, load_series

    cases = real.index.cases()
    # the test files share UIDs between variants, so look cases up by file
    by_path = {p: row for _, row in cases.iterrows() for p in row["paths"]}
    emri = by_path["pydicom-data/emri_small.dcm"]
    assert (emri["case_type"], emri["n_frames"]) == ("multiframe", 10)
    # this enhanced MR was stripped of its functional groups: frames, but no volume
    with pytest.raises(DicomReadError, match="position and orientation for every frame"):
        load_multiframe(real.root / "pydicom-data/emri_small.dcm")
    assert load_image(real.root / "pydicom-data/emri_small.dcm").array.shape == (10, 64, 64, 1)
    enhanced = load_multiframe(real.root / "pydicom-data/eCT_Supplemental.dcm")
    assert enhanced.shape == (2, 512, 512)
    assert enhanced.spacing[0] > 0
    assert np.allclose(np.linalg.norm(enhanced.direction, axis=0), 1)
    assert -1100 < float(enhanced.array.min()) < float(enhanced.array.max()) < 4000
    us = by_path["pydicom/examples_ybr_color.dcm"]
    assert (us["case_type"], us["modality"], us["n_frames"]) == ("image", "US", 30)
    image = load_image(real.root / "pydicom/examples_ybr_color.dcm", frames=[0, 29])
    assert image.array.shape == (2, 240, 320, 3)
    cr = by_path["pydicom/dicomdirtests/77654033/CR1/6154"]
    assert cr["case_type"] == "image"
    ct = cases[(cases["case_type"] == "series") & (cases["modality"] == "CT")]
    assert len(ct) and all(t == "series" for t in ct["case_type"])
    multi = real.index.files.set_index("path").loc["pydicom-data/emri_small_RLE.dcm"]
    assert multi["number_of_frames"] == 10
    series = by_path["pydicom/dicomdirtests/77654033/CT2/17136"]
    assert series["case_type"] == "series" and len(series["paths"]) == 4
    # pydicom kept 4 slices of this CT: the gaps are named, as the quality check names them
    with pytest.raises(GeometryError, match="a slice is missing"):
        load_series(real.root / p for p in series["paths"])
