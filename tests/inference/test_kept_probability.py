"""Marks from a kept (sparse) probability map: the same marks as from the dense map."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import InferenceError
from workbench.inference.detection import marks_from_probability, marks_to_json
from workbench.inference.runner import (
    PROBABILITY_FLOOR,
    MarkRule,
    marks_from_kept_probability,
    read_kept_probability,
)


def _kept(path: Path, probability: np.ndarray, affine: np.ndarray) -> str:
    """A ``probability.npz`` in the runner's layout; returns its SHA-256."""
    flat = probability.astype(np.float32).ravel()
    index = np.flatnonzero(flat >= PROBABILITY_FLOOR)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        shape=np.asarray(probability.shape, dtype=np.int64),
        affine=affine,
        floor=np.asarray(PROBABILITY_FLOOR),
        index=index,
        value=flat[index],
    )
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@pytest.fixture
def probability() -> np.ndarray:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.0, 0.3, size=(12, 20, 20)).astype(np.float32)
    p[2:5, 3:8, 3:8] = rng.uniform(0.6, 0.95, size=(3, 5, 5))
    p[8:11, 12:18, 10:14] = rng.uniform(0.5, 0.7, size=(3, 6, 4))
    return p


def test_marks_equal_those_of_the_dense_map(probability: np.ndarray, tmp_path: Path) -> None:
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 100.0)
    sha = _kept(tmp_path / "probability.npz", probability, affine)
    dense, read_affine, floor = read_kept_probability(tmp_path / "probability.npz", sha)
    assert floor == PROBABILITY_FLOOR and np.array_equal(read_affine, affine)
    assert np.array_equal(dense >= 0.5, probability >= 0.5)
    for rule in (MarkRule(0.5, 1), MarkRule(0.55, 20), MarkRule(PROBABILITY_FLOOR, 1)):
        path, digest, n = marks_from_kept_probability(
            tmp_path / "probability.npz", sha, rule, tmp_path / "marks.json"
        )
        expected = marks_from_probability(
            probability, affine, threshold=rule.threshold, min_voxels=rule.min_voxels
        )
        assert path.read_bytes() == marks_to_json(expected)
        assert digest == hashlib.sha256(marks_to_json(expected)).hexdigest()
        assert n == len(json.loads(path.read_text())) == len(expected)
    assert n == 1  # at the floor the whole noisy volume is one component


def test_a_changed_map_or_a_threshold_below_the_floor_is_refused(
    probability: np.ndarray, tmp_path: Path
) -> None:
    sha = _kept(tmp_path / "probability.npz", probability, np.eye(4))
    with pytest.raises(InferenceError, match="below the kept map's floor"):
        marks_from_kept_probability(
            tmp_path / "probability.npz", sha, MarkRule(0.01, 1), tmp_path / "m.json"
        )
    data = bytearray((tmp_path / "probability.npz").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "probability.npz").write_bytes(bytes(data))
    with pytest.raises(InferenceError, match="no longer matches its recorded SHA-256"):
        read_kept_probability(tmp_path / "probability.npz", sha)
    with pytest.raises(ValueError, match="threshold must lie in"):
        MarkRule(0.0, 1)
