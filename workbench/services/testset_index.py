"""Where a test set's labels live, and its DICOM index rebuilt from the stored file rows.

Shared by the test-set services and the pre-flight check (which the lock also runs).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from workbench.dicom.index import FILE_COLUMNS, DicomIndex
from workbench.records.models import FileKind, TestSet, TestSetFile

__all__ = ["LABELS_PATH", "load_index"]

#: The reference labels of a test set, relative to its root.
LABELS_PATH = "reference/labels.csv"


def load_index(session: Session, test_set: TestSet) -> DicomIndex:
    """Rebuild the :class:`DicomIndex` of a stored test set from its file rows."""
    files = session.scalars(
        select(TestSetFile).where(TestSetFile.test_set_id == test_set.id).order_by(TestSetFile.path)
    ).all()
    dicom_rows, unreadable_rows, other_rows = [], [], []
    for f in files:
        base = {"path": f.path, "size": f.size, "sha256": f.sha256}
        if f.kind == FileKind.DICOM.value:
            dicom_rows.append(
                {
                    **base,
                    "sop_instance_uid": f.sop_instance_uid,
                    "sop_class_uid": f.sop_class_uid,
                    "series_instance_uid": f.series_instance_uid,
                    "study_instance_uid": f.study_instance_uid,
                    "modality": f.modality,
                    "manufacturer": f.manufacturer,
                    "manufacturer_model_name": f.manufacturer_model_name,
                    "patient_sex": f.patient_sex,
                    "patient_age": f.patient_age,
                    **(f.header or {}),
                }
            )
        elif f.kind == FileKind.UNREADABLE.value:
            unreadable_rows.append({**base, "reason": f.reason})
        else:
            other_rows.append(base)
    files_frame = pd.DataFrame(dicom_rows, columns=list(FILE_COLUMNS))
    for column, dtype in FILE_COLUMNS.items():
        if dtype != "str":
            files_frame[column] = files_frame[column].astype(dtype)
    return DicomIndex(
        root=Path(test_set.root_path),
        files=files_frame,
        unreadable=pd.DataFrame(unreadable_rows, columns=["path", "size", "sha256", "reason"]),
        other_files=pd.DataFrame(other_rows, columns=["path", "size", "sha256"]),
        skipped=pd.DataFrame(columns=["path", "reason"]),
    )
