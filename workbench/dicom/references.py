"""Find the readers' reference segmentations of each image series, by content.

A reference file is matched to its image series by what it says (the series it
references), never by its file name; its reader comes from the object itself
(Content Creator's Name for SEG, Operators' Name for RTSTRUCT), else from the
file name without extension. NIfTI/NRRD masks carry neither, so a mapping file
``reference/masks.csv`` names each mask's series and reader.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from workbench.errors import SegmentationError, WorkbenchError

__all__ = ["MASKS_PATH", "find_reference_files", "reader_names"]

#: Mapping of NIfTI/NRRD reference masks: ``series_instance_uid, reader, path``.
MASKS_PATH = "reference/masks.csv"


def reader_names(person_name: str | None, path: str | Path) -> tuple[str, ...]:
    """The names a reference file answers to: the person's family name and the file stem.

    ``"Reader1^Synthetic"`` in ``reader1.dcm`` answers to ``reader1``; both lower-cased.
    """
    names = []
    if person_name:
        family = str(person_name).split("^", 1)[0].strip()
        if family:
            names.append(family.lower())
    stem = Path(str(path)).name
    for suffix in (".gz", ".nii", ".nrrd", ".dcm"):
        stem = stem.removesuffix(suffix)
    names.append(stem.lower())
    return tuple(dict.fromkeys(names))


def _dicom_references(
    index_files: pd.DataFrame, root: Path, modality: str
) -> Iterable[tuple[str, tuple[str, ...], Path]]:
    from workbench.dicom.rtstruct import identify_rtstruct
    from workbench.dicom.seg import identify_seg

    rows = index_files[index_files["modality"].fillna("") == modality]
    for rel in sorted(rows["path"].astype(str)):
        path = root / rel
        try:
            if modality == "SEG":
                seg = identify_seg(path)
                series, person = seg.referenced_series_uids, seg.reader
            else:
                rt = identify_rtstruct(path)
                series, person = rt.referenced_series_uids, rt.operators
        except (WorkbenchError, ValueError, KeyError, AttributeError) as error:
            raise SegmentationError(
                f"Reference {modality} {rel} cannot be identified: {error}"
            ) from None
        for uid in series:
            yield str(uid), reader_names(person, rel), path


def find_reference_files(
    index_files: pd.DataFrame, root: Path, source: str
) -> dict[str, dict[str, Path]]:
    """Reference files of every image series, by reader name.

    Parameters
    ----------
    index_files : DataFrame
        The test set's DICOM index.
    root : Path
        The test-set folder.
    source : {"seg", "rtstruct", "nifti"}
        The protocol's ``reference_standard.segmentation.source``.

    Returns
    -------
    dict
        ``{series_instance_uid: {reader name: path}}``; a file answers to every name of
        :func:`reader_names`, so a protocol may name readers either way.

    Raises
    ------
    SegmentationError
        A reference file cannot be identified, or ``reference/masks.csv`` is malformed
        or names a file that is not in the test set.
    """
    found: dict[str, dict[str, Path]] = {}
    if source in ("seg", "rtstruct"):
        modality = "SEG" if source == "seg" else "RTSTRUCT"
        for series, names, path in _dicom_references(index_files, root, modality):
            for name in names:
                found.setdefault(series, {}).setdefault(name, path)
        return found
    mapping = root / MASKS_PATH
    if not mapping.is_file():
        raise SegmentationError(
            f"NIfTI/NRRD references need {MASKS_PATH} with columns series_instance_uid, "
            "reader, path; found no such file."
        )
    try:
        table = pd.read_csv(mapping, dtype=str)
    except (ValueError, OSError) as error:
        raise SegmentationError(f"{MASKS_PATH} cannot be read: {error}") from None
    missing = [c for c in ("series_instance_uid", "reader", "path") if c not in table.columns]
    if missing:
        raise SegmentationError(
            f"{MASKS_PATH} lacks column(s) {missing}; found {list(table.columns)}."
        )
    for number, row in enumerate(table.to_dict(orient="records"), start=2):
        rel = str(row["path"])
        path = (root / rel).resolve()
        if root.resolve() not in path.parents or not path.is_file():
            raise SegmentationError(
                f"{MASKS_PATH} row {number}: {rel!r} is not a file of the test set."
            )
        found.setdefault(str(row["series_instance_uid"]), {})[str(row["reader"]).lower()] = path
    return found
