"""The cases of a validation: image series joined with their labels by one documented rule.

Pure: takes the test set's DICOM index (one row per file), its
``reference/labels.csv`` and the protocol, and returns one :class:`CaseSpec`
per image series. The run, the pre-flight check and the data-quality check
all join labels here, so a test set that locks is a test set whose cases the
run finds.

The join
--------
``reference_standard.labels_key`` names the column of ``labels.csv`` that
identifies a case's image series:

``series_instance_uid`` (default)
    One labels row per image series.
``study_instance_uid``
    One labels row per study; a study must then hold exactly one image series
    (otherwise the case is excluded, naming the series found).
``accession_number``
    As ``study_instance_uid``, through the studies' AccessionNumber (how most
    PACS exports key reports and labels).
``case_id``
    The labels row's ``case_id`` equals the series' PatientID.

A case's id is the labels row's ``case_id`` when it has one, else the PatientID,
else the series UID. Its attributes are the DICOM header attributes of
:data:`HEADER_ATTRIBUTES` (so strata such as ``manufacturer`` or ``kvp`` need no
labels column) overlaid by every column of its labels row. With the protocol's
``cluster_by`` naming an index column that the labels row does not hold (``patient_id``,
the DICOM PatientID), that column is added too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.protocols.schema import DetectionSource, LabelsKey, Protocol

__all__ = [
    "HEADER_ATTRIBUTES",
    "CaseSpec",
    "build_cases",
    "patient_age_years",
    "series_labels",
]

#: Index columns copied into every case's attributes (first image of the series).
HEADER_ATTRIBUTES = (
    "modality",
    "manufacturer",
    "manufacturer_model_name",
    "institution_name",
    "station_name",
    "software_versions",
    "kvp",
    "convolution_kernel",
    "body_part_examined",
    "slice_thickness",
    "patient_sex",
    "study_instance_uid",
    "series_description",
    "magnetic_field_strength",
    "accession_number",
)

#: Modalities whose series are image cases (everything else is a reference or other object).
_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "SR", "KO", "PR", "RTPLAN", "RTDOSE", "DOC"}


@dataclass(frozen=True, slots=True)
class CaseSpec:
    """One case: an image series, its reference files, its attributes and any exclusion.

    Parameters
    ----------
    case_id : str
    series_uid : str
    image_paths : tuple of Path
        The series' files, in path order.
    seg_paths : Mapping of str to Path
        Reference DICOM SEGs of the series by reader id.
    attributes : Mapping of str to object
        Header attributes overlaid by the labels row (see the module docstring).
    exclusion : str or None
        Why the case cannot be analysed, decided before inference.
    """

    case_id: str
    series_uid: str
    image_paths: tuple[Path, ...]
    seg_paths: Mapping[str, Path] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    exclusion: str | None = None

    @property
    def labels(self) -> Mapping[str, Any]:
        """The case's attributes (header attributes and labels row)."""
        return self.attributes


def patient_age_years(age: object) -> float | None:
    """Years from a DICOM Age String (``"045Y"``, ``"018M"``, ``"003W"``, ``"010D"``)."""
    if age is None or (isinstance(age, float) and pd.isna(age)):
        return None
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(age).upper())
    if not match:
        return None
    value, unit = int(match.group(1)), match.group(2)
    return round(value / {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[unit], 4)


def _clean(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value.item() if hasattr(value, "item") else value


def _header(group: pd.DataFrame) -> dict[str, Any]:
    first = group.iloc[0]
    out = {k: _clean(first[k]) for k in HEADER_ATTRIBUTES if k in group.columns}
    if "patient_age" in group.columns:
        years = patient_age_years(first["patient_age"])
        if years is not None:
            out["patient_age_years"] = years
    return {k: v for k, v in out.items() if v is not None and v != ""}


def _label_rows(labels: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    if key not in labels.columns:
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for record in labels.to_dict(orient="records"):
        value = _clean(record.get(key))
        if value is not None:
            rows.setdefault(str(value), {k: _clean(v) for k, v in record.items()})
    return rows


_INDEX_COLUMN = {
    LabelsKey.SERIES_INSTANCE_UID: "series_instance_uid",
    LabelsKey.STUDY_INSTANCE_UID: "study_instance_uid",
    LabelsKey.ACCESSION_NUMBER: "accession_number",
    LabelsKey.CASE_ID: "patient_id",
}


def series_labels(
    index_files: pd.DataFrame, labels: pd.DataFrame | None, key: LabelsKey | str
) -> pd.DataFrame | None:
    """``labels`` re-keyed by image series through the documented join.

    Every labels row that joins an image series (see the module docstring) is given
    that series' ``series_instance_uid`` (one row per joined series), so checks that
    look labels up by series (the data-quality suite) use the same join as the run.

    Returns
    -------
    DataFrame or None
        ``None`` when ``labels`` is ``None``.
    """
    if labels is None:
        return None
    key = LabelsKey(key)
    if key is LabelsKey.SERIES_INSTANCE_UID or key.value not in labels.columns:
        return labels
    column = _INDEX_COLUMN[key]
    if column not in index_files.columns:
        return labels.iloc[0:0].assign(series_instance_uid=pd.Series(dtype=str))
    modality = index_files["modality"].fillna("").astype(str)
    series = index_files[~modality.isin(_NON_IMAGE_MODALITIES)].drop_duplicates(
        "series_instance_uid"
    )[["series_instance_uid", column]]
    series = series.dropna(subset=[column]).astype(str)
    rekeyed = labels.drop(columns=["series_instance_uid"], errors="ignore").assign(
        **{key.value: labels[key.value].astype(str)}
    )
    return rekeyed.merge(series, left_on=key.value, right_on=column, how="inner").drop(
        columns=[column] if column != key.value else []
    )


def build_cases(
    index_files: pd.DataFrame,
    labels: pd.DataFrame | None,
    protocol: Protocol,
    root: Path,
    *,
    references: Mapping[str, Mapping[str, Path]] | None = None,
) -> list[CaseSpec]:
    """One case per image series, joined with its labels row and reference SEGs.

    Parameters
    ----------
    index_files : DataFrame
        The test set's DICOM index (``workbench.dicom.index`` FILE_COLUMNS).
    labels : DataFrame or None
        ``reference/labels.csv`` (``case_id`` read as text).
    protocol : Protocol
        Names the join key, the labels column and the segmentation readers.
    root : Path
        The test-set folder; index paths are relative to it.
    references : mapping, optional
        ``{series_instance_uid: {reader name: path}}`` of the readers' reference
        segmentations identified by content
        (:func:`workbench.dicom.references.find_reference_files`); reader names are
        matched case-insensitively. Without it, DICOM SEG files of the index that
        reference the series are taken, by file name.

    Returns
    -------
    list of CaseSpec
        Sorted by case id. A case without a labels row, without its reference
        label, without a reader's SEG, or whose study holds several image series
        when labels are keyed by study, carries its exclusion reason.
    """
    reference = protocol.reference_standard
    key = reference.labels_key
    labels = labels if labels is not None else pd.DataFrame()
    index_column = _INDEX_COLUMN[key]
    by_key = _label_rows(labels, key.value)
    modality = index_files["modality"].fillna("").astype(str)
    images = index_files[~modality.isin(_NON_IMAGE_MODALITIES)]
    segs = index_files[modality == "SEG"]
    readers = list(reference.segmentation.readers) if reference.segmentation else []
    detection = reference.detection
    if detection is not None and detection.source is DetectionSource.SEG_COMPONENTS:
        readers = list(detection.readers)  # reference lesions are the SEG's components
    series_per_key: dict[str, int] = {}
    if key in (LabelsKey.STUDY_INSTANCE_UID, LabelsKey.ACCESSION_NUMBER) and (
        index_column in images.columns
    ):
        per = images.drop_duplicates("series_instance_uid")[index_column].astype(str)
        series_per_key = per.value_counts().to_dict()
    cases: list[CaseSpec] = []
    for series_uid, group in images.groupby("series_instance_uid", sort=True):
        header = _header(group)
        join_value = _clean(group[index_column].iloc[0]) if index_column in group.columns else None
        label = by_key.get(str(join_value), {}) if join_value is not None else {}
        patient = _clean(group["patient_id"].iloc[0]) if "patient_id" in group else None
        case_id = str(label.get("case_id") or patient or series_uid)
        seg_paths: dict[str, Path] = {}
        if references is not None:
            found = references.get(str(series_uid), {})
            for reader in readers:
                path = found.get(reader.lower())
                if path is not None:
                    seg_paths[reader] = Path(path)
        elif "referenced_series_uid" in segs:
            for rel in segs.loc[segs["referenced_series_uid"] == series_uid, "path"]:
                seg_paths[Path(str(rel)).stem] = root / str(rel)
        exclusion = None
        if not label:
            exclusion = (
                f"no row in reference/labels.csv for this series (joined on {key.value})"
                if join_value is not None
                else f"the series has no {index_column} to join labels.csv on {key.value}"
            )
        elif series_per_key.get(str(join_value), 1) > 1:
            exclusion = (
                f"its {key.value} has several image series; key labels.csv by "
                "series_instance_uid to choose one"
            )
        elif reference.labels_column and label.get(reference.labels_column) is None:
            exclusion = f"reference label '{reference.labels_column}' missing"
        elif readers and any(r not in seg_paths for r in readers):
            missing = [r for r in readers if r not in seg_paths]
            exclusion = f"reference segmentation by {', '.join(missing)} missing"
        series_modality = str(group["modality"].iloc[0])
        if protocol.modalities and series_modality not in protocol.modalities:
            exclusion = (
                f"modality {series_modality} is not among the protocol's "
                f"{', '.join(protocol.modalities)}"
            )
        attributes = {**header, **{k: v for k, v in label.items()}}
        cluster = protocol.cluster_by
        if cluster and attributes.get(cluster) is None and cluster in group.columns:
            attributes[cluster] = _clean(group[cluster].iloc[0])  # e.g. the DICOM PatientID
        cases.append(
            CaseSpec(
                case_id=case_id,
                series_uid=str(series_uid),
                image_paths=tuple(root / str(p) for p in sorted(group["path"])),
                seg_paths=seg_paths,
                attributes=attributes,
                exclusion=exclusion,
            )
        )
    return sorted(cases, key=lambda c: c.case_id)
