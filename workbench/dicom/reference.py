"""The reference segmentation of a case from its readers' masks: one rule for every reader.

The run service (per-case metrics) and the adjudication viewer (overlays) both
build the reference mask here, so the mask a reviewer sees is the mask the
metrics were computed against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["combine_reader_masks"]


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
