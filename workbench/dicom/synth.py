"""Deterministic synthetic CT test sets with reference standard and optional defects.

:func:`generate_test_set` writes the test-set folder layout of
``docs/developer/contracts.md``:

- one CT Image Storage file per slice (PS3.3 A.3) with Image Plane geometry,
  Rescale to HU, multi-valued window presets and de-identified headers
  (Patient Identity Removed, De-identification Method Code Sequence, PS3.15 E);
- lesion segmentations as DICOM SEG (BINARY, MANUAL) from two simulated readers;
- ``reference/labels.csv`` with three readers' malignancy calls and the consensus;
- ``dataset.json`` describing generator, seed, scanners and injected defects.

Three simulated scanners differ in noise, blur and HU calibration; the third
has a clear HU offset and scale error and heavier noise. The same seed gives
byte-identical files: every UID is derived from the seed, dates are fixed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from workbench import __version__
from workbench.dicom import _phantom
from workbench.dicom.seg import build_seg_dataset
from workbench.errors import WorkbenchError

__all__ = [
    "Defect",
    "InjectedDefect",
    "LABEL_COLUMNS",
    "SCANNERS",
    "Scanner",
    "SynthSummary",
    "generate_test_set",
]

Progress = Callable[[int, int, str], None]

GENERATOR_NAME = "workbench.dicom.synth"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1"  # under pydicom's root
IMPLEMENTATION_VERSION = "WORKBENCH_" + __version__.replace(".", "")[:6]
LABEL_COLUMNS = (
    "case_id",
    "patient_id",
    "study_instance_uid",
    "series_instance_uid",
    "scanner_id",
    "manufacturer",
    "manufacturer_model_name",
    "institution_name",
    "patient_sex",
    "patient_age_years",
    "reader1_malignant",
    "reader2_malignant",
    "reader3_malignant",
    "consensus_malignant",
    "lesion_volume_ml",
    "lesion_contrast_hu",
)
_BASE_DATE = dt.date(2021, 3, 1)


class Defect(StrEnum):
    """Data-quality defects :func:`generate_test_set` can inject."""

    MISSING_SLICE = "missing_slice"
    PHI_IN_HEADER = "phi_in_header"
    PHI_IN_SEQUENCE = "phi_in_sequence"
    WRONG_MODALITY = "wrong_modality"
    DUPLICATE_SOP_UID = "duplicate_sop_uid"
    TRUNCATED_FILE = "truncated_file"
    NON_DICOM_FILE = "non_dicom_file"


@dataclass(frozen=True, slots=True)
class Scanner:
    """A simulated CT scanner: equipment attributes and image characteristics.

    ``hu_scale`` and ``hu_offset`` map true HU to the HU the scanner reports
    (a calibration error); ``noise_hu`` is the noise standard deviation and
    ``blur_px`` the in-plane Gaussian blur of the reconstruction kernel.
    """

    scanner_id: str
    manufacturer: str
    model: str
    institution: str
    station: str
    kvp: float
    kernel: str
    noise_hu: float
    blur_px: float
    hu_scale: float
    hu_offset: float
    thicknesses: tuple[float, ...]
    weight: float
    software_version: str


SCANNERS: tuple[Scanner, ...] = (
    Scanner(
        scanner_id="scanner-a",
        manufacturer="Meridian Medical Systems",
        model="Aurora 128",
        institution="North Valley Hospital",
        station="CTNV01",
        kvp=120.0,
        kernel="STANDARD",
        noise_hu=9.0,
        blur_px=0.6,
        hu_scale=1.0,
        hu_offset=0.0,
        thicknesses=(1.25, 2.5, 3.0),
        weight=0.4,
        software_version="AUR 4.2.1",
    ),
    Scanner(
        scanner_id="scanner-b",
        manufacturer="Kestrel Imaging",
        model="KX-64",
        institution="Riverside Medical Center",
        station="RMC-CT2",
        kvp=100.0,
        kernel="B31s",
        noise_hu=13.0,
        blur_px=0.9,
        hu_scale=1.0,
        hu_offset=4.0,
        thicknesses=(2.0, 3.0, 5.0),
        weight=0.35,
        software_version="KX 11.0",
    ),
    Scanner(
        scanner_id="scanner-c",
        manufacturer="Solace Healthcare",
        model="Vista 16",
        institution="Eastfield Community Clinic",
        station="EFCC-CT",
        kvp=140.0,
        kernel="LUNG_SHARP",
        noise_hu=28.0,
        blur_px=0.3,
        hu_scale=1.07,
        hu_offset=-45.0,
        thicknesses=(2.5, 5.0),
        weight=0.25,
        software_version="V16-2.9",
    ),
)


@dataclass(frozen=True, slots=True)
class InjectedDefect:
    """One defect written into one file (``path`` relative, POSIX)."""

    defect: Defect
    case_id: str
    path: str
    detail: str


@dataclass(frozen=True, slots=True)
class SynthSummary:
    """What :func:`generate_test_set` wrote.

    Parameters
    ----------
    root : Path
        The test-set folder.
    seed : int
        Seed of the generator.
    case_ids : tuple of str
        Cases in order.
    n_files : int
        Files under ``root`` after defect injection.
    defects : tuple of InjectedDefect
        Every file that got a defect (also in ``dataset.json``).
    """

    root: Path
    seed: int
    case_ids: tuple[str, ...]
    n_files: int
    defects: tuple[InjectedDefect, ...] = ()

    @property
    def labels_path(self) -> Path:
        """``reference/labels.csv``."""
        return self.root / "reference" / "labels.csv"

    @property
    def dataset_json_path(self) -> Path:
        """``dataset.json``."""
        return self.root / "dataset.json"

    def files_with(self, defect: Defect | str) -> tuple[str, ...]:
        """Relative paths of the files that got ``defect``."""
        wanted = Defect(defect)
        return tuple(d.path for d in self.defects if d.defect is wanted)


@dataclass(frozen=True, slots=True)
class _CasePlan:
    """Every random choice of one case, drawn before any pixel is made."""

    index: int
    case_id: str
    seed: int
    scanner: Scanner
    patient_id: str
    patient_sex: str
    patient_age: int
    study_date: dt.date
    study_time: dt.time
    n_slices: int
    matrix: int
    pixel_spacing: float
    slice_thickness: float
    table_z: float
    habitus: float
    liver_hu: float
    malignant: bool
    lesion: _phantom.LesionShape
    contrast_hu: float
    heterogeneity: float
    reader_labels: tuple[bool, bool, bool]
    uids: dict[str, str] = field(default_factory=dict)


def _uid(seed: int, *parts: object) -> str:
    return str(generate_uid(entropy_srcs=[GENERATOR_NAME, str(seed), *map(str, parts)]))


def _plan_case(
    seed: int, index: int, matrix: int, slices: tuple[int, int], scanner_override: int | None
) -> _CasePlan:
    rng = np.random.default_rng([seed, index, 7001])
    weights = np.asarray([s.weight for s in SCANNERS])
    scanner_index = int(rng.choice(len(SCANNERS), p=weights / weights.sum()))
    scanner = SCANNERS[scanner_override if scanner_override is not None else scanner_index]
    case_id = f"case{index + 1:04d}"
    sex = "M" if rng.random() < 0.52 else "F"
    age = int(np.clip(round(rng.normal(62.0, 12.0)), 24, 92))
    n_slices = int(rng.integers(slices[0], slices[1] + 1))
    thickness = float(rng.choice(scanner.thicknesses))
    pixel_spacing = round(float(rng.uniform(0.6, 0.9)), 4)
    habitus = float(rng.uniform(0.85, 1.05))
    liver_hu = float(rng.normal(60.0, 6.0))

    malignant = bool(rng.random() < 0.4)
    # Malignant lesions: larger, more lobulated, more enhancing, more heterogeneous.
    # The distributions overlap, so malignancy can be told from the image only
    # imperfectly; contrast stays well above the noise of every scanner.
    if malignant:
        radius = float(np.clip(rng.lognormal(np.log(11.0), 0.25), 6.0, 20.0))
        lobulation = float(rng.uniform(0.08, 0.30))
        contrast = float(rng.normal(88.0, 16.0))
        heterogeneity = float(rng.uniform(0.15, 0.4))
    else:
        radius = float(np.clip(rng.lognormal(np.log(9.0), 0.25), 6.0, 16.0))
        lobulation = float(rng.uniform(0.0, 0.15))
        contrast = float(rng.normal(58.0, 13.0))
        heterogeneity = float(rng.uniform(0.0, 0.15))
    contrast = float(np.clip(contrast, 35.0, 130.0))
    fov = matrix * pixel_spacing
    length = n_slices * thickness
    ry0, rx0 = 0.31 * fov * habitus, 0.44 * fov * habitus
    liver_cy, liver_cx = 0.03 * fov - 0.12 * ry0, -0.38 * rx0
    radii = (
        radius * float(rng.uniform(0.8, 1.2)),
        radius * float(rng.uniform(0.85, 1.15)),
        radius * float(rng.uniform(0.85, 1.15)),
    )
    margin = min(radii[0] * 1.5 + thickness, length / 2.0 - thickness)
    center = (
        float(rng.uniform(margin, length - margin)),
        liver_cy + float(rng.uniform(-0.3, 0.3)) * 0.5 * ry0,
        liver_cx + float(rng.uniform(-0.3, 0.3)) * 0.42 * rx0,
    )
    n_lobes = 3
    directions = rng.normal(size=(n_lobes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lesion = _phantom.LesionShape(
        center_zyx=center,
        radii_zyx=radii,
        lobulation=lobulation,
        lobe_directions=tuple((float(d[0]), float(d[1]), float(d[2])) for d in directions),
        lobe_frequencies=tuple(float(f) for f in rng.uniform(1.5, 3.5, n_lobes)),
        lobe_phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, n_lobes)),
    )
    # Readers see the lesion's features, not the truth: ambiguous lesions get
    # more disagreement.
    evidence = (radius - 10.0) / 3.0 + (lobulation - 0.15) / 0.08 + (contrast - 73.0) / 15.0
    ambiguity = float(np.exp(-(evidence**2) / 4.0))
    labels = []
    for _ in range(3):
        flip = rng.random() < 0.04 + 0.25 * ambiguity
        labels.append(malignant != flip)
    study_date = _BASE_DATE + dt.timedelta(days=int(rng.integers(0, 700)))
    study_time = dt.time(
        int(rng.integers(7, 19)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    )
    patient_id = "PSN" + _uid(seed, case_id, "patient").rsplit(".", 1)[-1][-10:]
    uids = {
        "study": _uid(seed, case_id, "study"),
        "series": _uid(seed, case_id, "series"),
        "frame_of_reference": _uid(seed, case_id, "frame-of-reference"),
    }
    return _CasePlan(
        index=index,
        case_id=case_id,
        seed=seed,
        scanner=scanner,
        patient_id=patient_id,
        patient_sex=sex,
        patient_age=age,
        study_date=study_date,
        study_time=study_time,
        n_slices=n_slices,
        matrix=matrix,
        pixel_spacing=pixel_spacing,
        slice_thickness=thickness,
        table_z=float(rng.uniform(-400.0, -100.0)),
        habitus=habitus,
        liver_hu=liver_hu,
        malignant=malignant,
        lesion=lesion,
        contrast_hu=contrast,
        heterogeneity=heterogeneity,
        reader_labels=(labels[0], labels[1], labels[2]),
        uids=uids,
    )


def _deid_method_codes() -> DicomSequence:
    items = []
    for code in (
        codes.DCM.BasicApplicationConfidentialityProfile,
        codes.DCM.CleanDescriptorsOption,
        codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
        codes.DCM.RetainPatientCharacteristicsOption,
        codes.DCM.RetainDeviceIdentityOption,
        codes.DCM.RetainInstitutionIdentityOption,
    ):
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        items.append(item)
    return DicomSequence(items)


def _common_ct_attributes(plan: _CasePlan) -> Dataset:
    """Attributes shared by every slice of the case's CT series."""
    s = plan.scanner
    date = plan.study_date.strftime("%Y%m%d")
    time = plan.study_time.strftime("%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.AcquisitionDate = date
    ds.ContentDate = date
    ds.StudyTime = time
    ds.SeriesTime = time
    ds.AcquisitionTime = time
    ds.ContentTime = time
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = s.manufacturer
    ds.InstitutionName = s.institution
    ds.ReferringPhysicianName = ""
    ds.StationName = s.station
    ds.StudyDescription = "CT ABDOMEN WITH CONTRAST"
    ds.SeriesDescription = f"ABDOMEN {plan.slice_thickness:g}MM {s.kernel}"
    ds.ManufacturerModelName = s.model
    ds.PatientName = f"{plan.patient_id}^SYNTHETIC"
    ds.PatientID = plan.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = plan.patient_sex
    ds.PatientAge = f"{plan.patient_age:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Workbench synthetic phantom; PS3.15 Basic Profile"
    ds.DeidentificationMethodCodeSequence = _deid_method_codes()
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.ContrastBolusAgent = "IODINATED CONTRAST"
    ds.ContrastBolusRoute = "IV"
    ds.BodyPartExamined = "ABDOMEN"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = f"{plan.slice_thickness:g}"
    ds.KVP = f"{s.kvp:g}"
    ds.SpacingBetweenSlices = f"{plan.slice_thickness:g}"
    ds.DataCollectionDiameter = "500"
    ds.DeviceSerialNumber = f"SN-{s.station}"
    ds.SoftwareVersions = s.software_version
    ds.ReconstructionDiameter = f"{plan.matrix * plan.pixel_spacing:.2f}"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ConvolutionKernel = s.kernel
    ds.PatientPosition = "FFS" if plan.index % 7 == 3 else "HFS"
    ds.StudyInstanceUID = plan.uids["study"]
    ds.SeriesInstanceUID = plan.uids["series"]
    ds.StudyID = f"S{plan.index + 1:05d}"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = plan.uids["frame_of_reference"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = plan.matrix
    ds.Columns = plan.matrix
    ds.PixelSpacing = [f"{plan.pixel_spacing:g}", f"{plan.pixel_spacing:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ["40", "60", "400"]
    ds.WindowWidth = ["400", "160", "1800"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LIVER", "BONE"]
    ds.BurnedInAnnotation = "NO"
    return ds


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _case_pixels(
    plan: _CasePlan,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], float]:
    """Stored pixel values (z, y, x) uint16, true mask, reader masks, lesion ml."""
    rng = np.random.default_rng([plan.seed, plan.index, 7002])
    grid = _phantom.Grid(plan.n_slices, plan.matrix, plan.pixel_spacing, plan.slice_thickness)
    truth, _ = _phantom.anatomy(grid, rng, habitus=plan.habitus, liver_hu=plan.liver_hu)
    box, f = _phantom.lesion_field(plan.lesion, grid)
    inside = f <= 1.0
    profile = 1.0 - plan.heterogeneity * np.clip(1.0 - f, 0.0, 1.0) ** 2
    lesion_hu = plan.liver_hu + plan.contrast_hu * profile
    region = truth[box]
    region[inside] = lesion_hu[inside]
    true_mask = np.zeros(truth.shape, dtype=bool)
    true_mask[box] = inside
    readers = []
    for bias, wobble in ((0.07, 0.05), (-0.05, 0.06)):
        mask = np.zeros(truth.shape, dtype=bool)
        mask[box] = _phantom.reader_mask(
            f, rng, bias=bias + 0.02 * rng.standard_normal(), wobble=wobble
        )
        readers.append(mask)
    s = plan.scanner
    hu = _phantom.image(
        truth,
        rng,
        blur_px=s.blur_px,
        noise_hu=s.noise_hu,
        hu_scale=s.hu_scale,
        hu_offset=s.hu_offset,
    )
    stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)
    voxel_ml = plan.pixel_spacing**2 * plan.slice_thickness / 1000.0
    return stored, true_mask, readers, float(true_mask.sum()) * voxel_ml


def _write_case(plan: _CasePlan, root: str) -> dict[str, Any]:
    """Write one case's CT slices and reader SEGs; return its labels row."""
    stored, _, readers, volume_ml = _case_pixels(plan)
    case_dir = Path(root) / "cases" / plan.case_id
    ct_dir = case_dir / "CT"
    ct_dir.mkdir(parents=True, exist_ok=True)
    common = _common_ct_attributes(plan)
    n = plan.n_slices
    datasets: list[Dataset] = []
    # Array index k runs inferior -> superior; instance 1 is the most superior slice.
    for k in range(n):
        instance = n - k
        z = plan.table_z + k * plan.slice_thickness
        sop_uid = _uid(plan.seed, plan.case_id, "ct", instance)
        ds = Dataset()
        ds.update(common)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = instance
        half = (plan.matrix - 1) / 2.0 * plan.pixel_spacing
        ds.ImagePositionPatient = [f"{-half:.4f}", f"{-half:.4f}", f"{z:.4f}"]
        ds.SliceLocation = f"{z:.4f}"
        ds.PixelData = stored[k].astype("<u2").tobytes()
        ds.file_meta = _file_meta(CT_IMAGE_STORAGE, sop_uid)
        ds.save_as(ct_dir / f"{instance:04d}.dcm", enforce_file_format=True)
        datasets.append(ds)
    when = dt.datetime.combine(plan.study_date, plan.study_time) + dt.timedelta(days=3)
    for reader, mask in enumerate(readers, start=1):
        seg = build_seg_dataset(
            mask,
            datasets,
            series_description=f"Lesion reader {reader}",
            manufacturer="Validation Workbench",
            manufacturer_model_name="Synthetic reader",
            software_versions=__version__,
            series_number=300 + reader,
            series_instance_uid=_uid(plan.seed, plan.case_id, "seg-series", reader),
            sop_instance_uid=_uid(plan.seed, plan.case_id, "seg", reader),
            content_creator_name=f"Reader{reader}^Synthetic",
            content_datetime=when,
        )
        (case_dir / "SEG").mkdir(exist_ok=True)
        seg.save_as(case_dir / "SEG" / f"reader{reader}.dcm", enforce_file_format=True)
    s = plan.scanner
    r1, r2, r3 = plan.reader_labels
    return {
        "case_id": plan.case_id,
        "patient_id": plan.patient_id,
        "study_instance_uid": plan.uids["study"],
        "series_instance_uid": plan.uids["series"],
        "scanner_id": s.scanner_id,
        "manufacturer": s.manufacturer,
        "manufacturer_model_name": s.model,
        "institution_name": s.institution,
        "patient_sex": plan.patient_sex,
        "patient_age_years": plan.patient_age,
        "reader1_malignant": int(r1),
        "reader2_malignant": int(r2),
        "reader3_malignant": int(r3),
        "consensus_malignant": int(r1 + r2 + r3 >= 2),
        "lesion_volume_ml": round(volume_ml, 3),
        "lesion_contrast_hu": round(plan.contrast_hu, 1),
    }


# --------------------------------------------------------------------------- defects


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _ct_files(root: Path, case_id: str) -> list[Path]:
    return sorted((root / "cases" / case_id / "CT").glob("*.dcm"))


def _inject(defect: Defect, root: Path, case_id: str) -> list[InjectedDefect]:
    files = _ct_files(root, case_id)
    middle = files[len(files) // 2]
    out: list[InjectedDefect] = []
    if defect is Defect.MISSING_SLICE:
        middle.unlink()
        out.append(InjectedDefect(defect, case_id, _rel(root, middle), "slice file deleted"))
    elif defect is Defect.PHI_IN_HEADER:
        for path in files:
            ds = pydicom.dcmread(path)
            ds.PatientName = "Novak^Maria^Elena"
            ds.OtherPatientIDs = "MRN00482913"
            ds.PatientBirthDate = "19610314"
            ds.save_as(path, enforce_file_format=True)
            detail = "PatientName, OtherPatientIDs and PatientBirthDate of a real-looking person"
            out.append(InjectedDefect(defect, case_id, _rel(root, path), detail))
    elif defect is Defect.PHI_IN_SEQUENCE:
        for path in files:
            ds = pydicom.dcmread(path)
            code = Dataset()
            code.CodeValue = "4471"
            code.CodingSchemeDesignator = "L"
            code.CodeMeaning = "Dr. Hans Berger"
            person = Dataset()
            person.PersonIdentificationCodeSequence = DicomSequence([code])
            person.PersonAddress = "12 Elm Street, Springfield"
            person.PersonTelephoneNumbers = "555-0142"
            person.InstitutionName = "St. Mary's Hospital"
            ds.ReferringPhysicianIdentificationSequence = DicomSequence([person])
            request = Dataset()
            request.RequestedProcedureID = "RQ88123"
            request.ScheduledProcedureStepID = "SP88123"
            request.RequestedProcedureDescription = "CT ABD follow-up NOVAK^MARIA"
            ds.RequestAttributesSequence = DicomSequence([request])
            ds.save_as(path, enforce_file_format=True)
            detail = (
                "names in ReferringPhysicianIdentificationSequence and RequestAttributesSequence"
            )
            out.append(InjectedDefect(defect, case_id, _rel(root, path), detail))
    elif defect is Defect.WRONG_MODALITY:
        ds = pydicom.dcmread(middle)
        ds.Modality = "MR"
        ds.save_as(middle, enforce_file_format=True)
        out.append(InjectedDefect(defect, case_id, _rel(root, middle), "Modality MR on a CT image"))
    elif defect is Defect.DUPLICATE_SOP_UID:
        source = files[len(files) // 2 - 1]
        uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
        ds = pydicom.dcmread(middle)
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(middle, enforce_file_format=True)
        detail = f"SOPInstanceUID copied from {_rel(root, source)}"
        out.append(InjectedDefect(defect, case_id, _rel(root, middle), detail))
    elif defect is Defect.TRUNCATED_FILE:
        data = middle.read_bytes()
        middle.write_bytes(data[: int(len(data) * 0.6)])
        detail = f"cut to {int(len(data) * 0.6)} of {len(data)} bytes"
        out.append(InjectedDefect(defect, case_id, _rel(root, middle), detail))
    elif defect is Defect.NON_DICOM_FILE:
        stray = middle.parent / f"{len(files) + 1:04d}.dcm"
        stray.write_text(
            "<html><head><title>504 Gateway Timeout</title></head>\n"
            "<body><h1>504 Gateway Timeout</h1>The export server did not respond.</body></html>\n",
            encoding="utf-8",
        )
        detail = "HTML error page saved with a .dcm name"
        out.append(InjectedDefect(defect, case_id, _rel(root, stray), detail))
    return out


# --------------------------------------------------------------------------- orchestration


def _scanner_json(s: Scanner) -> dict[str, Any]:
    data = asdict(s)
    data["thicknesses"] = list(s.thicknesses)
    return data


def generate_test_set(
    out_dir: str | Path,
    *,
    n_cases: int,
    seed: int = 0,
    defects: Iterable[Defect | str] = (),
    progress: Progress | None = None,
    matrix: int = 256,
    slices: tuple[int, int] = (40, 80),
    workers: int = 2,
    scanner_ids: Sequence[str] | None = None,
) -> SynthSummary:
    """Write a synthetic CT test set with reference standard into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Target folder; created if needed, must not already contain ``cases/``.
    n_cases : int
        Number of cases (one patient, study and CT series each), at least 1.
    seed : int
        Seed; the same seed and options give byte-identical files.
    defects : iterable of Defect or str
        Defects to inject, each into a different case where there are enough
        cases (see :class:`Defect`).
    progress : callable, optional
        ``progress(done, total, message)`` after each case.
    matrix : int
        Rows and columns of each slice (at least 64).
    slices : tuple of int
        Inclusive range of the number of slices per case.
    workers : int
        Processes used to write cases.
    scanner_ids : sequence of str, optional
        Force case ``i`` onto scanner ``scanner_ids[i % len(scanner_ids)]``;
        by default scanners are drawn with their weights.

    Returns
    -------
    SynthSummary
        Root, case ids, file count and injected defects.

    Raises
    ------
    WorkbenchError
        Invalid options, or ``out_dir`` already holds a test set.

    Examples
    --------
    >>> summary = generate_test_set("ts", n_cases=3, matrix=128, slices=(40, 40))  # doctest: +SKIP
    >>> summary.case_ids  # doctest: +SKIP
    ('case0001', 'case0002', 'case0003')
    """
    if n_cases < 1:
        raise WorkbenchError(f"n_cases should be at least 1, found {n_cases}.")
    if matrix < 64:
        raise WorkbenchError(f"matrix should be at least 64, found {matrix}.")
    if not 8 <= slices[0] <= slices[1]:
        raise WorkbenchError(
            f"slices should be a range (lo, hi) with 8 <= lo <= hi, found {slices}."
        )
    try:
        wanted = list(dict.fromkeys(Defect(d) for d in defects))
    except ValueError as exc:
        valid = ", ".join(d.value for d in Defect)
        raise WorkbenchError(f"Unknown defect: {exc}. Valid defects: {valid}.") from exc
    overrides: list[int] | None = None
    if scanner_ids:
        known = {s.scanner_id: i for i, s in enumerate(SCANNERS)}
        unknown = [s for s in scanner_ids if s not in known]
        if unknown:
            raise WorkbenchError(
                f"Unknown scanner ids {unknown}; expected some of {sorted(known)}."
            )
        overrides = [known[s] for s in scanner_ids]
    root = Path(out_dir)
    if (root / "cases").exists():
        raise WorkbenchError(f"{root} already contains cases/; choose an empty folder.")
    root.mkdir(parents=True, exist_ok=True)

    plans = [
        _plan_case(
            seed, i, matrix, slices, None if overrides is None else overrides[i % len(overrides)]
        )
        for i in range(n_cases)
    ]
    rows: list[dict[str, Any] | None] = [None] * n_cases
    done = 0
    if workers <= 1 or n_cases == 1:
        for plan in plans:
            rows[plan.index] = _write_case(plan, str(root))
            done += 1
            if progress is not None:
                progress(done, n_cases, plan.case_id)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, n_cases, os.cpu_count() or 1)) as pool:
            futures = {pool.submit(_write_case, plan, str(root)): plan for plan in plans}
            for future in as_completed(futures):
                plan = futures[future]
                rows[plan.index] = future.result()
                done += 1
                if progress is not None:
                    progress(done, n_cases, plan.case_id)

    (root / "reference").mkdir(exist_ok=True)
    with open(root / "reference" / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            assert row is not None  # every case was written above
            writer.writerow(row)

    injected: list[InjectedDefect] = []
    order = np.random.default_rng([seed, 7003]).permutation(n_cases)
    for k, defect in enumerate(wanted):
        case_id = plans[int(order[k % n_cases])].case_id
        injected.extend(_inject(defect, root, case_id))

    description = {
        "generator": GENERATOR_NAME,
        "version": __version__,
        "seed": seed,
        "n_cases": n_cases,
        "options": {"matrix": matrix, "slices": list(slices)},
        "scanners": [_scanner_json(s) for s in SCANNERS],
        "cases": [
            {
                "case_id": p.case_id,
                "scanner_id": p.scanner.scanner_id,
                "n_slices": p.n_slices,
                "pixel_spacing_mm": p.pixel_spacing,
                "slice_thickness_mm": p.slice_thickness,
                "true_malignant": p.malignant,
            }
            for p in plans
        ],
        "defects": [
            {"defect": d.defect.value, "case_id": d.case_id, "path": d.path, "detail": d.detail}
            for d in injected
        ],
    }
    (root / "dataset.json").write_text(
        json.dumps(description, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    return SynthSummary(
        root=root,
        seed=seed,
        case_ids=tuple(p.case_id for p in plans),
        n_files=n_files,
        defects=tuple(injected),
    )
