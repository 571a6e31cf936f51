"""DICOM SEG identified by its content (referenced series, segments, reader), not its name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from workbench.dicom.seg import identify_seg, read_seg_mask, write_seg
from workbench.dicom.synth import generate_test_set
from workbench.dicom.volume import load_series
from workbench.errors import SegmentationError


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seg_identify")
    generate_test_set(root, n_cases=1, seed=4, matrix=64, slices=(10, 10), workers=1)
    return next((root / "cases").iterdir())


def test_reader_segs_are_identified_whatever_their_file_names(case: Path, tmp_path: Path) -> None:
    ct = pydicom.dcmread(next((case / "CT").glob("*.dcm")), stop_before_pixels=True)
    found = {}
    for index, seg in enumerate(sorted((case / "SEG").glob("*.dcm"))):
        anonymous = tmp_path / f"{index:08x}.bin"  # the name says nothing
        shutil.copy(seg, anonymous)
        identity = identify_seg(anonymous)
        found[identity.reader] = identity
        assert identity.referenced_series_uid == ct.SeriesInstanceUID
        assert identity.frame_of_reference_uid == ct.FrameOfReferenceUID
        assert identity.segment_labels == {1: "Lesion"}
        assert identity.algorithm_types == {1: "MANUAL"} and identity.algorithm_names == ()
    assert sorted(found) == ["Reader1^Synthetic", "Reader2^Synthetic"]
    dataset = pydicom.dcmread(case / "SEG" / "reader2.dcm")
    assert identify_seg(dataset).reader == "Reader2^Synthetic"


def test_automatic_seg_names_its_algorithm(case: Path, tmp_path: Path) -> None:
    paths = sorted((case / "CT").glob("*.dcm"))
    volume = load_series(paths)
    mask = read_seg_mask(case / "SEG" / "reader1.dcm", volume)
    out = write_seg(
        mask, paths, tmp_path / "pred.dcm", algorithm_name="liver-net", algorithm_version="2"
    )
    identity = identify_seg(out)
    assert identity.reader is None
    assert identity.algorithm_types == {1: "AUTOMATIC"}
    assert identity.algorithm_names == ("liver-net",)
    assert identity.referenced_series_uids == (volume.series_instance_uid,)


def test_other_objects_are_not_segs(case: Path) -> None:
    with pytest.raises(SegmentationError, match=r"Expected SOP Class Segmentation Storage .* CT"):
        identify_seg(next((case / "CT").glob("*.dcm")))
    with pytest.raises(SegmentationError, match="Found 1.2.840.10008.5.1.4.1.1.481.3"):
        identify_seg(pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True))
