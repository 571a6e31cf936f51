"""A sealed PDF report as an Encapsulated PDF object (PS3.3 A.45.1), and back.

The PDF's bytes are stored unchanged in Encapsulated Document (0042,0011); an
odd length is padded with one NUL byte, as the OB VR requires, and Encapsulated
Document Length (0042,0015) keeps the true length, so :func:`extract_pdf` gives
back a file byte-identical to the sealed one (its PAdES seal still verifies).

The report is not about one patient: it goes into a study of its own, keyed by
the run, with a pseudonymous patient that names the validation, not a person.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from workbench import __version__
from workbench.errors import DicomReadError

__all__ = ["ENCAPSULATED_PDF_STORAGE", "build_encapsulated_pdf", "extract_pdf"]

#: Encapsulated PDF Storage SOP Class (PS3.4 B.5).
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"

# A UUID-derived UID (PS3.5 B.2) naming the writer.
_IMPLEMENTATION_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'validation-workbench/writer').int}"


def build_encapsulated_pdf(
    pdf: bytes,
    *,
    document_title: str,
    patient_id: str,
    patient_name: str,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    study_description: str,
    series_description: str,
    contribution_description: str,
    content_datetime: dt.datetime,
    series_number: int = 900,
) -> Dataset:
    """Wrap a PDF into an Encapsulated PDF dataset (PS3.3 A.45.1, C.24.2).

    Parameters
    ----------
    pdf : bytes
        The PDF file, stored unchanged.
    document_title : str
        Document Title (0042,0010).
    patient_id, patient_name : str
        Patient of the report's own study (not a person: the validation).
    study_instance_uid, series_instance_uid, sop_instance_uid : str
        Deterministic UIDs (a re-export writes the same instance).
    study_description, series_description : str
    contribution_description : str
        Contributing Equipment's Contribution Description: run id and model.
    content_datetime : datetime.datetime
        Content and acquisition date/time (the sealing time).
    series_number : int

    Returns
    -------
    pydicom.Dataset
        With file meta information, ready for ``save_as`` or STOW-RS.

    Raises
    ------
    DicomReadError
        ``pdf`` does not start with ``%PDF-``.
    """
    if not pdf.startswith(b"%PDF-"):
        raise DicomReadError("Expected a PDF document (starting with %PDF-), found other bytes.")
    date, time = content_datetime.strftime("%Y%m%d"), content_datetime.strftime("%H%M%S")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ENCAPSULATED_PDF_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(_IMPLEMENTATION_UID)
    meta.ImplementationVersionName = f"WB_{__version__}"[:16]
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.SpecificCharacterSet = "ISO_IR 192"
    # SOP Common (C.12.1)
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient (C.7.1.1)
    ds.PatientName = patient_name
    ds.PatientID = patient_id[:64]
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "No patient: validation report of a test set"
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = study_instance_uid
    ds.StudyDate, ds.StudyTime = date, time
    ds.ReferringPhysicianName = ""
    ds.StudyID = hashlib.sha256(study_instance_uid.encode()).hexdigest()[:16]
    ds.AccessionNumber = ""
    ds.StudyDescription = study_description[:64]
    # Encapsulated Document Series (C.24.1)
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description[:64]
    # General Equipment (C.7.5.1) and SC Equipment (C.8.6.1)
    ds.Manufacturer = "Validation Workbench"
    ds.ManufacturerModelName = "Validation Workbench"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    equipment = Dataset()
    equipment.Manufacturer = "Validation Workbench"
    equipment.ManufacturerModelName = "Validation Workbench"
    equipment.SoftwareVersions = __version__
    purpose = Dataset()
    purpose.CodeValue = "109102"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Processing Equipment"
    equipment.PurposeOfReferenceCodeSequence = DicomSequence([purpose])
    equipment.ContributionDescription = contribution_description[:1024]
    ds.ContributingEquipmentSequence = DicomSequence([equipment])
    # Encapsulated Document (C.24.2)
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = content_datetime.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.DocumentTitle = document_title[:64]
    title = Dataset()
    title.CodeValue = "18748-4"
    title.CodingSchemeDesignator = "LN"
    title.CodeMeaning = "Diagnostic imaging report"
    ds.ConceptNameCodeSequence = DicomSequence([title])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    return ds


def extract_pdf(ds: Dataset) -> bytes:
    """The PDF bytes of an Encapsulated PDF dataset, padding removed.

    Raises
    ------
    DicomReadError
        Not an Encapsulated PDF, or the stored length does not fit the data.
    """
    if str(ds.get("SOPClassUID", "")) != ENCAPSULATED_PDF_STORAGE:
        raise DicomReadError(
            f"Expected Encapsulated PDF Storage ({ENCAPSULATED_PDF_STORAGE}), "
            f"found {ds.get('SOPClassUID')}."
        )
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    if length is None:
        # Older writers: strip the single pad byte after the PDF's end-of-file marker.
        return data[:-1] if data.endswith(b"%%EOF\n\x00") or data.endswith(b"%%EOF\x00") else data
    if not 0 <= int(length) <= len(data) or len(data) - int(length) > 1:
        raise DicomReadError(
            f"Encapsulated Document Length {length} does not fit the {len(data)} bytes stored."
        )
    return data[: int(length)]
