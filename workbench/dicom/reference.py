"""The reference segmentation of a case from its readers' masks: one rule for every reader.

The run service (per-case metrics) and the adjudication viewer (overlays) both
build the reference mask here, so the mask a reviewer sees is the mask the
metrics were computed against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["combine_reader_masks", "read_structure_mask", "reference_structures"]


def reference_structures(path: str | Path, source: str) -> tuple[str | int, ...]:
    """The structures a reference file holds, as a protocol names them.

    Parameters
    ----------
    path : str or Path
        A reader's reference file.
    source : {"seg", "rtstruct", "nifti"}
        Its format (the protocol's ``reference_standard.segmentation.source``).

    Returns
    -------
    tuple
        SEG (Segmentation Storage or Label Map Segmentation Storage): the Segment
        Labels, a label map's background segment 0 left out; RTSTRUCT: the ROI names;
        NIfTI/NRRD: the label
        values other than 0 that occur in the map (an absent value is a missing
        structure, since a label map cannot say "drawn, but empty").

    Raises
    ------
    SegmentationError
        The file cannot be read as its format.
    """
    if source == "seg":
        from workbench.dicom.seg import identify_seg

        return tuple(identify_seg(path).segment_labels.values())
    if source == "rtstruct":
        from workbench.dicom.rtstruct import identify_rtstruct

        return tuple(roi.name for roi in identify_rtstruct(path).rois)
    from workbench.dicom.nifti_reference import read_label_image

    values = np.unique(np.asarray(read_label_image(path).data))
    return tuple(int(v) for v in values.tolist() if v != 0)


def read_structure_mask(
    path: str | Path, volume: Any, source: str, reference: str | int | None
) -> np.ndarray:
    """One reader's mask of one structure, on ``volume``'s ``(z, y, x)`` grid.

    Parameters
    ----------
    path : str or Path
        The reader's reference file.
    volume : Volume
        The image series it references.
    source : {"seg", "rtstruct", "nifti"}
        The file's format.
    reference : str, int or None
        The structure: a SEG Segment Label, an RTSTRUCT ROI name or a NIfTI/NRRD
        label value. ``None``: SEG the union of all segments, RTSTRUCT its only
        closed ROI, NIfTI every non-zero voxel.

    Returns
    -------
    ndarray of bool

    Raises
    ------
    SegmentationError
        The file does not hold the structure (the message names what it holds), or
        ``reference`` is ``None`` and an RTSTRUCT holds several ROIs.
    """
    from workbench.errors import SegmentationError

    target = Path(path)
    if source == "rtstruct":
        from workbench.dicom.rtstruct import rasterize_rtstruct

        names = [str(reference)] if reference is not None else None
        masks = rasterize_rtstruct(target, volume, roi_names=names)
        if reference is None and len(masks) != 1:
            raise SegmentationError(
                f"{target.name} holds ROIs {sorted(masks)}; name the one to use in the protocol "
                "(reference_standard.segmentation.roi)."
            )
        return np.asarray(
            masks[str(reference)] if reference is not None else next(iter(masks.values()))
        )
    if source == "nifti":
        from workbench.dicom.nifti_reference import read_reference_mask

        if isinstance(reference, str):
            raise SegmentationError(
                f"{target.name}: a NIfTI/NRRD structure is a label value (integer). Found "
                f"{reference!r}."
            )
        return read_reference_mask(target, volume, label=reference)
    from workbench.dicom.seg import read_seg_mask

    return read_seg_mask(
        target, volume, segment_label=None if reference is None else str(reference)
    )


def combine_reader_masks(
    masks: Sequence[np.ndarray], readers: Sequence[str], rule: str
) -> np.ndarray:
    """The reference mask from the readers' masks by the protocol's rule.

    Parameters
    ----------
    masks : sequence of ndarray of bool
        One mask per reader, aligned with the same volume.
    readers : sequence of str
        The readers' names (``reader1``...), in the order of ``masks``.
    rule : str
        ``majority`` (a voxel is lesion where at least half of the readers marked it;
        with two readers their union), ``union``, ``intersection`` or a reader's name.

    Returns
    -------
    ndarray of bool

    Raises
    ------
    ValueError
        No masks, or ``rule`` names a reader that is not listed.
    """
    if not masks:
        raise ValueError("Expected at least one reader mask; found none.")
    readers = list(readers)
    if rule not in ("majority", "union", "intersection"):
        if rule not in readers:
            raise ValueError(f"Rule {rule!r} names no listed reader; readers are {readers}.")
        return np.asarray(masks[readers.index(rule)], dtype=bool)
    stack = np.stack(masks).astype(np.uint8)
    if rule == "union":
        return np.asarray(stack.any(axis=0))
    if rule == "intersection":
        return np.asarray(stack.all(axis=0))
    return np.asarray(stack.sum(axis=0) * 2 >= len(masks))
