"""De-identification on intake (PS3.15 Basic Profile) on real files and synthetic phantoms.

Real files come from pydicom's test data (CT, MR, JPEG 2000 US, RLE and JPEG
RGB secondary captures, an enhanced multi-frame MR); the phantoms from
:mod:`workbench.dicom.synth` with PHI injected in the header and in nested
sequences. The expectations are checked against independent sources: the
profile's action table as the library ships it (PS3.15 Table E.1-1, 2026c),
``dciodvfy`` (dicom3tools) for conformance, the project's own PHI check and its
OCR burned-in text check.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from workbench.dicom.deidentify import (
    DeidentificationOptions,
    Deidentifier,
    deidentify_files,
)
from workbench.dicom.index import index_folder
from workbench.dicom.seg import read_seg_mask
from workbench.dicom.synth import Defect, generate_test_set
from workbench.dicom.volume import load_series
from workbench.errors import DicomReadError
from workbench.quality.findings import Severity
from workbench.quality.phi import check_phi

REAL_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "US1_J2KR.dcm",  # ultrasound, RGB, JPEG 2000 lossless
    "SC_rgb_rle.dcm",  # RGB, RLE lossless
    "SC_rgb_jpeg_gdcm.dcm",  # RGB, JPEG baseline (lossy)
    "emri_small.dcm",  # enhanced MR, multi-frame
    "JPEG2000.dcm",
)
# PS3.15 Table E.1-1, columns "Rtn. Pat. Chars. Opt." and "Rtn. Dev. Id. Opt." (K), as far as
# the test files have them.
KEPT_BY_OPTIONS = (
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup", "PregnancyStatus",
    "SmokingStatus", "PatientSexNeutered", "StationName", "DeviceSerialNumber", "DetectorID",
    "DeviceUID", "GantryID", "PlateID", "CassetteID", "DeviceDescription",
)  # fmt: skip
ALL_OPTIONS = DeidentificationOptions(
    retain_dates_shifted=True,
    retain_device_identity=True,
    retain_patient_characteristics=True,
)

# PS3.15 Table E.1-1 as the library ships it (2026c): action letter by tag.
_TABLES = dicom_anonymization_database_selector("dicomfields_2026c")
_LETTER: dict[int, str] = {}
for _category, _letter in (
    ("D_TAGS", "D"),
    ("Z_TAGS", "Z"),
    ("X_TAGS", "X"),
    ("U_TAGS", "U"),
    ("Z_D_TAGS", "Z/D"),
    ("X_Z_TAGS", "X/Z"),
    ("X_D_TAGS", "X/D"),
    ("X_Z_D_TAGS", "X/Z/D"),
    ("X_Z_U_STAR_TAGS", "X/Z/U*"),
):
    for _entry in _TABLES[_category]:
        if len(_entry) == 2:
            _LETTER[Tag(*_entry)] = _letter


def _real(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def _walk(ds: Dataset) -> Iterator[pydicom.DataElement]:
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _walk(item)


def _values(elem: pydicom.DataElement) -> list[str]:
    if elem.VR == "SQ" or elem.value is None:
        return []
    items = list(elem.value) if elem.VM > 1 else [elem.value]
    return [str(v) for v in items if str(v).strip()]


def _dciodvfy_errors(path: Path) -> set[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (done.stdout + done.stderr).splitlines()
    # the message without the value found, so that a changed value is the same error
    return {line.split(" - ", 1)[-1] for line in lines if line.startswith("Error")}


@pytest.fixture(scope="module")
def real_out(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("deid-real")
    summary = deidentify_files([_real(n) for n in REAL_FILES], out, ALL_OPTIONS)
    return {n: out / f.path for n, f in zip(REAL_FILES, summary.files, strict=True)}


@pytest.fixture(scope="module")
def real_out_bare(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The Basic Profile without options: dates removed or replaced by dummies."""
    out = tmp_path_factory.mktemp("deid-real-bare")
    summary = deidentify_files([_real(n) for n in REAL_FILES], out)
    return {n: out / f.path for n, f in zip(REAL_FILES, summary.files, strict=True)}


@pytest.mark.parametrize("name", REAL_FILES)
def test_every_profile_attribute_is_removed_emptied_or_replaced(
    name: str, real_out: dict[str, Path]
) -> None:
    original = pydicom.dcmread(_real(name))
    result = pydicom.dcmread(real_out[name])
    kept_by_options = {Tag(k) for k in KEPT_BY_OPTIONS}
    before = {e.tag: e for e in _walk(original)}
    checked = 0
    for elem in _walk(result):
        assert not elem.tag.is_private, f"{name}: private {elem.tag} left"
        letter = _LETTER.get(elem.tag)
        if letter is None or elem.tag in kept_by_options or elem.VR in ("DA", "DT", "TM"):
            continue
        old = before.get(elem.tag)
        checked += 1
        if elem.tag in (Tag("PatientID"), Tag("PatientName")):
            assert str(elem.value).startswith("DEID"), name
        elif letter == "X":
            pytest.fail(f"{name}: {elem.keyword} (action X) is still present")
        elif letter in ("Z", "X/Z"):
            assert elem.VR == "SQ" and not elem.value or not _values(elem), (name, elem)
        elif elem.VR == "UI":
            assert all(v.startswith("2.25.") for v in _values(elem)), (name, elem)
            if old is not None:
                assert set(_values(elem)).isdisjoint(_values(old)), (name, elem.keyword)
        elif old is not None and elem.VR != "SQ" and _values(old):
            assert _values(elem) != _values(old), (name, elem.keyword)
    assert checked >= 5
    # no value of an identifying attribute of the original survives anywhere in the bytes
    data = real_out[name].read_bytes()
    # text the profile keeps elsewhere (InstitutionName TOSHIBA in Manufacturer TOSHIBA_MEC)
    elsewhere = {v for e in _walk(original) if _LETTER.get(e.tag) is None for v in _values(e)}
    for elem in before.values():
        letter = _LETTER.get(elem.tag)
        if letter is None or elem.tag in kept_by_options or elem.VR in ("DA", "DT", "TM"):
            continue
        for value in _values(elem):
            if any(value in kept for kept in elsewhere):
                continue
            if len(value) >= 6 and elem.VR in ("PN", "LO", "SH", "UI", "LT", "ST"):
                assert value.encode() not in data, f"{name}: {elem.keyword} value left"
    assert result.PatientIdentityRemoved == "YES"
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    codes = [i.CodeValue for i in result.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108", "113109"]
    assert all(i.CodingSchemeDesignator == "DCM" for i in result.DeidentificationMethodCodeSequence)
    assert "dicom-anonymizer" in " ".join(result.DeidentificationMethod)


@pytest.mark.parametrize("name", REAL_FILES)
def test_phi_check_passes_on_the_result(
    name: str, real_out: dict[str, Path], real_out_bare: dict[str, Path]
) -> None:
    before = check_phi(pydicom.dcmread(_real(name)), name)
    assert before, f"{name}: expected the original to have PHI findings"
    after = check_phi(pydicom.dcmread(real_out[name]), name)
    assert after == [], [(f.attribute, f.message) for f in after]
    bare = check_phi(pydicom.dcmread(real_out_bare[name]), name)
    if name == "emri_small.dcm":
        # enhanced MR: Type 1 Content Date/Time, Acquisition DateTime and Device Serial
        # Number get the profile's dummy (D), which the check reports as values (major)
        assert {f.severity for f in bare} == {Severity.MAJOR}
        assert {f.attribute.split(" ")[0] for f in bare} <= {
            "ContentDate", "AcquisitionDateTime", "DeviceSerialNumber"
        }  # fmt: skip
    else:
        assert bare == [], [(f.attribute, f.message) for f in bare]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy is not installed")
@pytest.mark.parametrize("name", REAL_FILES)
def test_dciodvfy_finds_no_new_error(
    name: str, real_out: dict[str, Path], real_out_bare: dict[str, Path]
) -> None:
    before = _dciodvfy_errors(_real(name))
    assert _dciodvfy_errors(real_out[name]) - before == set()
    assert _dciodvfy_errors(real_out_bare[name]) - before == set()


def test_options_retain_what_they_declare_and_nothing_else(tmp_path: Path) -> None:
    source = _real("CT_small.dcm")
    original = pydicom.dcmread(source)
    bare = deidentify_files([source], tmp_path / "bare").files[0]
    kept = deidentify_files([source], tmp_path / "kept", ALL_OPTIONS).files[0]
    plain = pydicom.dcmread(tmp_path / "bare" / bare.path)
    rich = pydicom.dcmread(tmp_path / "kept" / kept.path)
    for keyword in ("PatientSex", "PatientAge", "PatientWeight", "StationName"):
        if keyword in original:
            assert rich.get(keyword) == original.get(keyword), keyword
            assert not plain.get(keyword), keyword
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        assert not plain.get(keyword), keyword
    assert [i.CodeValue for i in plain.DeidentificationMethodCodeSequence] == ["113100"]
    assert plain.LongitudinalTemporalInformationModified == "REMOVED"
    assert rich.LongitudinalTemporalInformationModified == "MODIFIED"
    assert not plain.get("InstitutionName") and not rich.get("InstitutionName")


def test_dates_shift_by_one_offset_per_patient_and_times_are_kept(tmp_path: Path) -> None:
    names = ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm")
    summary = deidentify_files([_real(n) for n in names], tmp_path, ALL_OPTIONS)
    offsets: dict[str, set[int]] = {}
    for name, f in zip(names, summary.files, strict=True):
        original = pydicom.dcmread(_real(name))
        result = pydicom.dcmread(tmp_path / f.path)
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            if original.get(keyword):
                a = dt.datetime.strptime(str(original.get(keyword)), "%Y%m%d").date()
                b = dt.datetime.strptime(str(result.get(keyword)), "%Y%m%d").date()
                offsets.setdefault(str(original.PatientID), set()).add((a - b).days)
        for keyword in ("StudyTime", "SeriesTime"):
            if original.get(keyword):
                assert result.get(keyword) == original.get(keyword)
    # MR_small and MR_small_RLE are the same patient: one offset; each within 1-10 years
    for patient, days in offsets.items():
        assert len(days) == 1, (patient, days)
        assert 365 <= days.pop() <= 3650
    mr = [pydicom.dcmread(tmp_path / f.path) for f in summary.files[1:3]]
    assert mr[0].PatientID == mr[1].PatientID and mr[0].StudyInstanceUID == mr[1].StudyInstanceUID


def test_a_new_import_gets_new_pseudonyms_and_no_mapping_is_kept(tmp_path: Path) -> None:
    from dicomanonymizer import simpledicomanonymizer

    source = _real("CT_small.dcm")
    first = deidentify_files([source], tmp_path / "a").files[0]
    second = deidentify_files([source], tmp_path / "b").files[0]
    assert first.study_instance_uid != second.study_instance_uid
    assert first.sop_instance_uid != second.sop_instance_uid
    # the library's own original-to-random UID table is never filled
    assert simpledicomanonymizer.dictionary == {}
    worker = Deidentifier()
    worker.deidentify_file(source, tmp_path / "c")
    assert set(vars(worker)) == {"options", "text_finder", "_secret"}
    assert "_secret" not in repr(worker)
    with pytest.raises(TypeError):
        Deidentifier(_secret=b"0" * 32)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("deid-phantom")
    summary = generate_test_set(
        base / "raw",
        n_cases=2,
        seed=5,
        matrix=64,
        slices=(8, 10),
        workers=1,
        defects=[Defect.PHI_IN_HEADER, Defect.PHI_IN_SEQUENCE],
    )
    files = sorted(summary.root.rglob("*.dcm"))
    deidentify_files(files, base / "out", DeidentificationOptions(retain_dates_shifted=True))
    deidentify_files(files, base / "bare")
    return summary.root, base / "out"


def test_seg_references_resolve_after_deidentification(phantom: tuple[Path, Path]) -> None:
    raw, out = phantom
    before = index_folder(raw, workers=1).files
    after = index_folder(out, workers=1).files
    assert len(after) == len(before)
    assert set(after["study_instance_uid"]).isdisjoint(before["study_instance_uid"])
    assert set(after["patient_id"]).isdisjoint(before["patient_id"])
    images = after[after["modality"] == "CT"]
    segs = after[after["modality"] == "SEG"]
    assert len(segs) == len(before[before["modality"] == "SEG"]) >= 2
    for _, seg in segs.iterrows():
        series = images[images["series_instance_uid"] == seg["referenced_series_uid"]]
        assert len(series) > 0, "the SEG's referenced series is not in the result"
        assert set(series["study_instance_uid"]) == {seg["study_instance_uid"]}
        volume = load_series([out / p for p in series["path"]])
        mask = read_seg_mask(out / seg["path"], volume)
        assert mask.shape == volume.array.shape and mask.any()
    # every slice kept its study: one study per case before and after
    assert before["study_instance_uid"].nunique() == after["study_instance_uid"].nunique()


def test_phi_injected_in_the_phantom_is_gone(phantom: tuple[Path, Path]) -> None:
    raw, out = phantom
    raw_findings = [
        f for p in sorted(raw.rglob("*.dcm")) for f in check_phi(pydicom.dcmread(p), p.name)
    ]
    assert any(f.severity is Severity.CRITICAL for f in raw_findings)
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        findings = check_phi(ds, path.name)
        if ds.Modality == "SEG":
            # Device Serial Number is Type 1 in a SEG (Enhanced General Equipment): the
            # profile's D gives the dummy, which the check reports as a value (major)
            assert ds.DeviceSerialNumber == "ANONYMIZED"
            assert [f.attribute for f in findings] == ["DeviceSerialNumber (0018,1000)"]
            assert findings[0].severity is Severity.MAJOR
        else:
            assert findings == [], [(f.attribute, f.message) for f in findings]
        data = path.read_bytes()
        for text in (b"Novak", b"MRN00482913", b"19610314", b"Berger", b"Elm Street", b"RQ88123"):
            assert text not in data, (path.name, text)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy is not installed")
def test_phantom_ct_and_seg_pass_dciodvfy_as_before(phantom: tuple[Path, Path]) -> None:
    raw, out = phantom
    for modality in ("CT", "SEG"):
        before = next(
            p for p in sorted(raw.rglob("*.dcm")) if pydicom.dcmread(p).Modality == modality
        )
        for folder in (out, out.parent / "bare"):
            after = next(
                p for p in sorted(folder.rglob("*.dcm")) if pydicom.dcmread(p).Modality == modality
            )
            new = _dciodvfy_errors(after) - _dciodvfy_errors(before)
            assert new == set(), (modality, folder.name, new)


# --------------------------------------------------------------------------- pixels

FONTS = Path("/usr/share/fonts/truetype/dejavu")
NAME, PATIENT_ID = "Novak^Maria", "MRN00482913"


def _us_with_text(path: Path, *, text: bool) -> None:
    rng = np.random.default_rng(7)
    picture = Image.fromarray(np.clip(rng.rayleigh(40, (480, 640)), 0, 255).astype(np.uint8))
    if text:
        draw = ImageDraw.Draw(picture)
        font = ImageFont.truetype(str(FONTS / "DejaVuSans.ttf"), 22)
        draw.text((10, 10), "NOVAK^MARIA", fill=255, font=font)
        draw.text((400, 10), f"ID: {PATIENT_ID}", fill=255, font=font)
        draw.text((10, 440), "14.03.1961  SAINT ELM HOSPITAL", fill=235, font=font)
    pixels = np.asarray(picture)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, "19610314"
    ds.InstitutionName = "Saint Elm Hospital"
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract is not installed")
def test_burned_in_text_is_redacted_and_the_check_passes_afterwards(tmp_path: Path) -> None:
    from workbench.quality.burned_in import burned_in_findings, find_text, header_identifiers

    source, clean = tmp_path / "text.dcm", tmp_path / "clean.dcm"
    _us_with_text(source, text=True)
    _us_with_text(clean, text=False)
    original = pydicom.dcmread(source)
    identifiers = header_identifiers(original)
    assert any(r.matches for r in find_text(original.pixel_array, identifiers=identifiers))
    options = DeidentificationOptions(clean_pixel_data=True)
    summary = deidentify_files([source, clean], tmp_path / "out", options)
    redacted, untouched = summary.files
    assert redacted.redacted_regions >= 3 and untouched.redacted_regions == 0
    ds = pydicom.dcmread(tmp_path / "out" / redacted.path)
    assert ds.BurnedInAnnotation == "NO"
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", "113101"]
    assert find_text(ds.pixel_array, identifiers=identifiers) == []
    frames = ds.pixel_array[np.newaxis, ..., np.newaxis]
    findings = burned_in_findings(ds, frames, "text.dcm")
    assert not [f for f in findings if f.severity in (Severity.CRITICAL, Severity.MAJOR)]
    other = pydicom.dcmread(tmp_path / "out" / untouched.path)
    assert "BurnedInAnnotation" not in other
    assert [i.CodeValue for i in other.DeidentificationMethodCodeSequence] == ["113100"]
    assert np.array_equal(other.pixel_array, pydicom.dcmread(clean).pixel_array)
    assert summary.describe()["n_files_redacted"] == 1


def _box_finder(
    ds: Dataset, frame: np.ndarray, identifiers: dict[str, set[str]]
) -> list[tuple[int, int, int, int]]:
    return [(8, 6, 20, 10)]


@pytest.mark.parametrize(
    ("name", "written", "note"),
    [
        ("SC_rgb_rle.dcm", RLELossless, False),
        ("US1_J2KR.dcm", "1.2.840.10008.1.2.4.90", False),
        ("SC_rgb_jpeg_gdcm.dcm", ExplicitVRLittleEndian, True),
        ("emri_small.dcm", ExplicitVRLittleEndian, False),
    ],
)
def test_redaction_re_encodes_or_says_why_not(
    tmp_path: Path, name: str, written: str, note: bool
) -> None:
    source = tmp_path / name
    ds = pydicom.dcmread(_real(name))
    ds.BurnedInAnnotation = "YES"  # an image declaring text is always searched
    ds.save_as(source)
    worker = Deidentifier(DeidentificationOptions(clean_pixel_data=True), text_finder=_box_finder)
    result = worker.deidentify_file(source, tmp_path / "out")
    assert result.redacted_regions >= 1
    assert result.transfer_syntax == written
    assert bool(result.note) is note
    out = pydicom.dcmread(tmp_path / "out" / result.path)
    arr = out.pixel_array
    if int(out.get("NumberOfFrames", 1) or 1) == 1:
        arr = arr[np.newaxis]
    region = arr[:, 6:16, 8:28]
    assert (region == region.min()).all() and region.min() == arr.min()
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


def test_a_file_that_is_not_dicom_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("not an image")
    with pytest.raises(DicomReadError, match="notes.dcm"):
        deidentify_files([bad], tmp_path / "out")
