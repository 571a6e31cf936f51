"""De-identification on intake from a real Orthanc: nothing identifying reaches the workdir.

Orthanc is loaded with a two-case synthetic test set (CT + reader SEGs) whose
headers carry a real-looking name, ID and birth date, pydicom's CT_small.dcm and
an ultrasound image with the patient's name and ID burned into the pixels. The
import with de-identification must leave no original Patient's Name, Patient ID
or Study/Series/SOP Instance UID in any byte of any file of the workdir nor in a
dump of its database; the PHI and burned-in text checks then pass on the test
set, and the SEGs still reference their CT series.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import numpy as np
import pydicom
import pytest
from orthanc_server import Orthanc, upload
from PIL import Image, ImageDraw, ImageFont
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from workbench.dicom.deidentify import LIBRARY, LIBRARY_VERSION, DeidentificationOptions
from workbench.dicom.synth import Defect
from workbench.dicomweb import Credentials, DicomWebServer
from workbench.quality.findings import Severity
from workbench.services import audit_trail, pacs, testsets

SET = "deid-set"
FONTS = Path("/usr/share/fonts/truetype/dejavu")

pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract is not installed (burned-in text)"
)


def _server(orthanc: Orthanc) -> DicomWebServer:
    return DicomWebServer(
        orthanc.url, credentials=Credentials(user=orthanc.user, password=orthanc.password)
    )


def _ultrasound_with_text(path: Path) -> None:
    rng = np.random.default_rng(3)
    picture = Image.fromarray(np.clip(rng.rayleigh(40, (480, 640)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.truetype(str(FONTS / "DejaVuSans.ttf"), 22)
    draw.text((10, 10), "KOWALSKA^JADWIGA", fill=255, font=font)
    draw.text((400, 10), "ID: HN7735102", fill=255, font=font)
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
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Kowalska^Jadwiga", "HN7735102", "19580702"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240611", "101500", "ACC55120931"
    ds.ReferringPhysicianName = "Lindqvist^Bo"
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _identifiers(paths: list[Path]) -> set[bytes]:
    """Original names, IDs and instance UIDs of the uploaded files, as bytes."""
    out: set[bytes] = set()
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in (
            "PatientName",
            "PatientID",
            "OtherPatientIDs",
            "AccessionNumber",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
        ):
            value = str(ds.get(keyword, "") or "")
            if value:
                out.add(value.encode())
        for part in str(ds.get("PatientName", "") or "").split("^"):
            if len(part) >= 5:
                out.add(part.encode())
    return out


@dataclass
class Intake:
    workdir: Path
    uploaded: list[Path]
    imported: Any
    audit: list[dict[str, Any]]
    quality: Any
    files: Any


@pytest.fixture(scope="module")
def intake(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Intake:
    base = tmp_path_factory.mktemp("deid-intake")
    synth_root = harness.synth(
        base / "synth", n_cases=2, seed=23, defects=[Defect.PHI_IN_HEADER, Defect.PHI_IN_SEQUENCE]
    )
    us = base / "us.dcm"
    _ultrasound_with_text(us)
    uploaded = sorted(synth_root.rglob("*.dcm")) + [
        Path(str(get_testdata_file("CT_small.dcm"))),
        us,
    ]
    upload(orthanc, uploaded)
    studies = sorted(
        {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in uploaded}
    )
    workdir = base / "wb"
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        imported = pacs.import_from_dicomweb(
            wb,
            qa1,
            _server(orthanc),
            name=SET,
            studies=studies,
            deidentify=DeidentificationOptions(retain_dates_shifted=True, clean_pixel_data=True),
        )
        quality = testsets.check_quality(wb, qa1, SET, ocr=True)
        entries = audit_trail.export_entries(wb, qa1, record_type="test_set", record_id=SET)
        with wb.transaction(readonly=True) as session:
            from workbench.records.models import TestSet

            test_set = session.query(TestSet).filter_by(name=SET).one()
            files = testsets.load_index(session, test_set).files
    finally:
        wb.close()
    return Intake(workdir, uploaded, imported, entries, quality, files)


def _as_value(value: bytes) -> re.Pattern[bytes]:
    """The value as a whole token: not glued to letters, digits, '.' or '^' around it."""
    return re.compile(rb"(?<![A-Za-z0-9.^])" + re.escape(value) + rb"(?![A-Za-z0-9.^])")


def test_no_original_identifier_anywhere_in_the_workdir(intake: Intake) -> None:
    wanted = _identifiers(intake.uploaded)
    assert b"Kowalska^Jadwiga" in wanted and b"Novak^Maria^Elena" in wanted
    # long values (UIDs, names) are searched in every byte; short ones (CT_small's ID
    # 1CT1) would match by chance in binary data, so they are searched as whole values
    # in the DICOM headers, the text files and the database dump
    long = {v for v in wanted if len(v) >= 8}
    short = [_as_value(v) for v in wanted - long]
    checked = 0
    for path in sorted(p for p in intake.workdir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        checked += 1
        where = path.relative_to(intake.workdir)
        for value in long:
            assert value not in data, f"{value!r} found in {where}"
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            text = "\n".join(str(e.value) for e in ds.iterall() if e.VR != "SQ").encode()
        elif path.suffix in (".json", ".csv", ".txt", ".log", ".yaml"):
            text = data
        else:
            continue
        for pattern in short:
            assert not pattern.search(text), f"{pattern.pattern!r} found in {where}"
    assert checked > len(intake.uploaded)
    with sqlite3.connect(intake.workdir / "workbench.db") as connection:
        dump = "\n".join(connection.iterdump()).encode()
    assert b"testset.import.dicomweb" in dump and b"113100" in dump
    for value in long:
        assert value not in dump, f"{value!r} found in the database"
    for pattern in short:
        assert not pattern.search(dump), f"{pattern.pattern!r} found in the database"
    # the raw retrieval and the working folder are gone
    testsets_dir = Path(intake.imported.test_set.root_path).parent
    assert sorted(p.name for p in testsets_dir.iterdir()) == [SET]


def test_manifest_and_audit_record_options_codes_and_library(intake: Intake) -> None:
    root = Path(intake.imported.test_set.root_path)
    source = json.loads((root / "dataset.json").read_text())["source"]
    described = source["deidentification"]
    assert described["library"] == LIBRARY and described["library_version"] == LIBRARY_VERSION
    assert described["options"]["retain_dates_shifted"] is True
    assert [c["code_value"] for c in described["method_codes"]] == ["113100", "113101", "113107"]
    assert described["n_files_redacted"] == 1
    assert "query" not in source and source["n_instances"] == len(intake.uploaded)
    (entry,) = [e for e in intake.audit if e["action"] == "testset.import.dicomweb"]
    recorded = entry["new_value"]
    assert recorded["deidentification"]["method_codes"] == described["method_codes"]
    assert set(recorded["sop_instance_uids"]) == set(intake.files["sop_instance_uid"])
    for path in sorted((root / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        codes = [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
        assert codes[0] == "113100" and "113107" in codes
        assert ds.PatientIdentityRemoved == "YES"


def test_quality_checks_pass_on_the_deidentified_set(intake: Intake) -> None:
    report = intake.quality
    phi = [f for f in report.findings if f.check == "phi"]
    assert not [f for f in phi if f.severity is Severity.CRITICAL], phi
    # only the dummy Device Serial Number a SEG must carry (Type 1) is left to review
    assert {f.attribute for f in phi} <= {"DeviceSerialNumber (0018,1000)"}
    burned = [f for f in report.findings if f.check.startswith("burned_in")]
    assert not [f for f in burned if f.severity in (Severity.CRITICAL, Severity.MAJOR)], burned
    assert "burned_in_text" in report.checks_run


def test_seg_references_resolve_in_the_imported_set(intake: Intake) -> None:
    files = intake.files
    segs = files[files["modality"] == "SEG"]
    series = set(files[files["modality"] == "CT"]["series_instance_uid"])
    assert len(segs) >= 2
    assert set(segs["referenced_series_uid"]) <= series


def test_cli_deidentify_flags(intake: Intake, orthanc: Orthanc) -> None:
    workdir = intake.workdir.parent / "cli-wb"
    wb = harness.open_wb(workdir)
    harness.make_accounts(wb)
    wb.close()
    creds = {
        "WORKBENCH_DICOMWEB_USER": orthanc.user,
        "WORKBENCH_DICOMWEB_PASSWORD": orthanc.password,
    }
    ct_small = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    study = str(ct_small.StudyInstanceUID)
    common = ("testset", "import", "cli-deid", "--dicomweb", orthanc.url, "--study", study)
    lone = harness.cli(workdir, *common, "--retain-dates-shifted", user="qa1", env=creds)
    assert lone.returncode == 1
    assert "only apply with --deidentify" in lone.stderr
    done = harness.cli(
        workdir,
        *common,
        "--deidentify",
        "--retain-dates-shifted",
        "--retain-device-identity",
        user="qa1",
        env=creds,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "de-identified with dicom-anonymizer" in done.stdout
    assert "113100, 113107, 113109" in done.stdout
    (path,) = sorted((workdir / "testsets" / "cli-deid" / "dicom").rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID != study and ds.PatientID != ct_small.PatientID
    assert ds.get("StationName") == ct_small.get("StationName")


def test_interrupted_import_resumes_from_the_deidentified_folder(
    intake: Intake, orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = intake.workdir.parent / "resume-wb"
    study = str(pydicom.dcmread(get_testdata_file("CT_small.dcm")).StudyInstanceUID)
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        real_import = pacs.import_test_set

        def fail(*args: Any, **kw: Any) -> Any:
            raise RuntimeError("indexing interrupted")

        monkeypatch.setattr(pacs, "import_test_set", fail)
        options = DeidentificationOptions()
        with pytest.raises(RuntimeError, match="indexing interrupted"):
            pacs.import_from_dicomweb(
                wb, qa1, _server(orthanc), name="resumed", studies=[study], deidentify=options
            )
        folder = wb.workdir.testsets_dir / "resumed"
        written = sorted(p.name for p in (folder / "dicom").rglob("*.dcm"))
        assert len(written) == 1 and not (wb.workdir.testsets_dir / "resumed.partial").exists()
        monkeypatch.setattr(pacs, "import_test_set", real_import)
        done = pacs.import_from_dicomweb(
            wb, qa1, _server(orthanc), name="resumed", studies=[study], deidentify=options
        )
        assert done.n_instances == 1 and done.n_fetched == 0
        # the same de-identified file was imported, not a second de-identification
        assert sorted(p.name for p in (folder / "dicom").rglob("*.dcm")) == written
        assert [t.name for t in testsets.list_test_sets(wb)] == ["resumed"]
    finally:
        wb.close()
