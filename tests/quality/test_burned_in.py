"""Burned-in text found in the pixels by OCR, never echoed; no false alarm without text.

Images are drawn with PIL: names, dates and IDs in corners and in a black band,
in several fonts and sizes, over ultrasound-like speckle; the images without
text are speckle, a ruler with a scale bar, and a CT slice with its table.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from workbench.dicom.index import index_folder
from workbench.quality import Severity, run_quality_checks
from workbench.quality.burned_in import find_text, header_identifiers, wants_ocr

pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="Debian tesseract-ocr is not installed (scripts/install_system_deps.sh)",
)

FONTS = Path("/usr/share/fonts/truetype/dejavu")
NAME, PATIENT_ID, BIRTH = "Novak^Maria", "MRN00482913", "19610314"


def _header() -> Dataset:
    ds = Dataset()
    ds.PatientName = NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH
    ds.InstitutionName = "Saint Elm Hospital"
    ds.Modality = "US"
    return ds


def _speckle(seed: int, shape: tuple[int, int] = (768, 1024)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.rayleigh(40, shape), 0, 255).astype(np.uint8)


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS / name), size)


def _with_text(seed: int, font: str, size: int) -> np.ndarray:
    picture = Image.fromarray(_speckle(seed))
    draw = ImageDraw.Draw(picture)
    f = _font(font, size)
    draw.text((10, 10), "NOVAK^MARIA", fill=255, font=f)
    draw.text((700, 10), f"ID: {PATIENT_ID}", fill=255, font=f)
    draw.rectangle((0, 730, 1024, 768), fill=0)
    draw.text((10, 740), "14.03.1961  SAINT ELM HOSPITAL", fill=230, font=f)
    return np.asarray(picture)


@pytest.mark.parametrize(
    ("font", "size", "expected"),
    [
        ("DejaVuSans.ttf", 18, {"PatientName", "PatientID", "PatientBirthDate", "InstitutionName"}),
        ("DejaVuSerif-Bold.ttf", 24, {"PatientName", "PatientID", "PatientBirthDate"}),
        ("DejaVuSansMono.ttf", 14, {"PatientBirthDate", "InstitutionName"}),
        ("DejaVuSans.ttf", 11, {"PatientName", "InstitutionName"}),
    ],
)
def test_identifiers_in_corners_and_bands_are_found(
    font: str, size: int, expected: set[str]
) -> None:
    regions = find_text(_with_text(size, font, size), identifiers=header_identifiers(_header()))
    matched = {m for r in regions for m in r.matches}
    assert expected <= matched, regions
    positions = {r.position for r in regions if r.matches}
    assert "bottom-left" in positions
    assert all(0 < r.confidence <= 100 for r in regions)


def test_no_text_no_finding() -> None:
    speckle = _speckle(1)
    ruler = _speckle(2)
    ruler[700:704, 100:900] = 255  # scale bar
    for x in range(100, 901, 50):  # ticks
        ruler[688:700, x : x + 2] = 255
    ct = np.zeros((512, 512), np.uint8)
    yy, xx = np.mgrid[:512, :512]
    ct[(yy - 256) ** 2 / 200**2 + (xx - 256) ** 2 / 180**2 < 1] = 120
    ct[430:445, 60:450] = 200  # table top
    ct[445:460, 40:470] = 90
    for image in (speckle, ruler, ct):
        assert find_text(image, identifiers=header_identifiers(_header())) == []


def _write_us(path: Path, pixels: np.ndarray, *, burned: str | None) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = _header()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientIdentityRemoved = "YES"
    ds.PatientName = ""
    ds.PatientBirthDate = ""
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if burned is not None:
        ds.BurnedInAnnotation = burned
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_quality_check_reports_region_match_and_confidence_never_the_text(tmp_path: Path) -> None:
    root = tmp_path / "us"
    root.mkdir()
    # the header names were removed, the pixels still carry the ID and the institution
    _write_us(root / "text.dcm", _with_text(3, "DejaVuSerif-Bold.ttf", 24), burned="NO")
    _write_us(root / "clean.dcm", _speckle(4), burned=None)
    index = index_folder(root, workers=1)
    without = run_quality_checks(root, index, suite="us-test-set-v1", task="classification")
    assert without.by_check("burned_in_text") == ()
    report = run_quality_checks(
        root, index, suite="us-test-set-v1", task="classification", ocr=True
    )
    found = report.by_check("burned_in_text")
    assert {f.path for f in found} == {"text.dcm"}
    critical = [f for f in found if f.severity is Severity.CRITICAL]
    assert critical and any("PatientID" in f.found for f in critical)
    assert all(f.attribute == "PixelData (7FE0,0010)" for f in found)
    assert all("OCR confidence" in f.message for f in found)
    assert all("frame 0" in f.message for f in critical)
    text = json.dumps(report.to_dict()).upper()
    for secret in ("NOVAK", "MARIA", "MRN", "00482913", "1961", "SAINT ELM"):
        assert secret not in text


def test_header_yes_stays_a_finding_and_ocr_skips_it(tmp_path: Path) -> None:
    path = tmp_path / "yes.dcm"
    _write_us(path, _speckle(5), burned="YES")
    ds = pydicom.dcmread(path)
    assert not wants_ocr(ds)
    report = run_quality_checks(
        tmp_path, index_folder(tmp_path, workers=1), suite="us-test-set-v1", ocr=True
    )
    (finding,) = report.by_check("burned_in_annotation")
    assert (finding.severity, finding.expected, finding.found) == (Severity.CRITICAL, "NO", "YES")
