"""DICOM Label Map Segmentation Storage (SOP Class 1.2.840.10008.5.1.4.1.1.66.7) as a reference.

The Label Map SEG is written by highdicom (``SegmentationType LABELMAP``) over a real
CT series: six slices built from pydicom's ``CT_small.dcm`` with fresh UIDs
(``tests/services/test_multiclass.py``), its structures defined by HU thresholds
(bone >= 200 HU, soft tissue -100 to 150 HU). The same label map written as a BINARY
SEG by :func:`workbench.dicom.seg.write_seg` is read side by side: both must give the
threshold masks voxel for voxel.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from workbench.dicom.index import index_folder
from workbench.dicom.reference import read_structure_mask, reference_structures
from workbench.dicom.references import find_reference_files
from workbench.dicom.seg import (
    LABEL_MAP_SEG_STORAGE,
    identify_seg,
    read_seg_mask,
    segment_number_of,
    write_seg,
)
from workbench.dicom.volume import Volume, load_series
from workbench.errors import SegmentationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))
from test_multiclass import _ct_case, _hu, _reference_labels  # noqa: E402

NAMES = ("Bone", "Soft tissue")


def _label_map_seg(ct_paths: list[Path], out: Path, *, names: tuple[str, ...] = NAMES) -> Path:
    """A reader's Label Map SEG made by highdicom, named by its SOP Instance UID."""
    sources = sorted(
        (pydicom.dcmread(p) for p in ct_paths), key=lambda d: float(d.ImagePositionPatient[2])
    )
    hu = np.stack([_hu(d, d.pixel_array) for d in sources])
    labels = _reference_labels(hu, with_soft=len(names) == 2)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.LABELMAP,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=i,
                segment_label=name,
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=codes.SCT.AnatomicalStructure,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
            for i, name in enumerate(names, start=1)
        ],
        series_instance_uid=hd.UID(),
        series_number=901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Hospital PACS",
        manufacturer_model_name="Segmentation editor",
        software_versions="1.0",
        device_serial_number="1",
        content_creator_name="Reader1^Test",
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{seg.SOPInstanceUID}.dcm"
    seg.save_as(path)
    return path


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Volume, np.ndarray]:
    """A real-CT series, its volume and the reference label map from HU thresholds."""
    root = tmp_path_factory.mktemp("labelmap") / "set"
    paths = _ct_case(root, "ct0", shift=5, manufacturer="GE")
    volume = load_series(paths)
    labels = _reference_labels(volume.array.astype(np.float64), with_soft=True)
    assert (labels == 1).any() and (labels == 2).any()
    return root, paths, volume, labels


def test_label_map_seg_is_identified(ct: tuple[Path, list[Path], Volume, np.ndarray]) -> None:
    root, paths, volume, _ = ct
    path = _label_map_seg(paths, root / "cases" / "ct0" / "SEG")
    assert str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID) == LABEL_MAP_SEG_STORAGE
    identity = identify_seg(path)
    assert identity.segmentation_type == "LABELMAP"
    # highdicom describes a background segment 0: it is no structure
    assert identity.segment_labels == {1: "Bone", 2: "Soft tissue"}
    assert identity.algorithm_types == {1: "MANUAL", 2: "MANUAL"}
    assert identity.reader == "Reader1^Test"
    assert identity.referenced_series_uid == volume.series_instance_uid
    with pytest.raises(SegmentationError, match="expected one segment labelled 'Background'"):
        segment_number_of(pydicom.dcmread(path, stop_before_pixels=True), "Background", path)


def test_label_values_map_to_segments_like_a_binary_seg(
    ct: tuple[Path, list[Path], Volume, np.ndarray], tmp_path: Path
) -> None:
    _, paths, volume, labels = ct
    label_map = _label_map_seg(paths, tmp_path / "labelmap")
    binary = write_seg(labels, paths, tmp_path / "binary.dcm", segment_labels=list(NAMES))
    for number, name in enumerate(NAMES, start=1):
        expected = labels == number
        for path in (label_map, binary):
            np.testing.assert_array_equal(read_seg_mask(path, volume, segment_label=name), expected)
            np.testing.assert_array_equal(
                read_seg_mask(path, volume, segment_number=number), expected
            )
    np.testing.assert_array_equal(read_seg_mask(label_map, volume), labels > 0)
    with pytest.raises(SegmentationError, match=r"expected segment 3, found segments \[1, 2\]"):
        read_seg_mask(label_map, volume, segment_number=3)


def test_label_map_frames_placed_by_position(
    ct: tuple[Path, list[Path], Volume, np.ndarray], tmp_path: Path
) -> None:
    """Without per-frame source references the frames are placed by plane position, and a
    frame's pixel values still select its segments."""
    _, paths, volume, labels = ct
    ds = pydicom.dcmread(_label_map_seg(paths, tmp_path / "labelmap"))
    for group in ds.PerFrameFunctionalGroupsSequence:
        del group.DerivationImageSequence
    stripped = tmp_path / "no-source-references.dcm"
    ds.save_as(stripped)
    np.testing.assert_array_equal(
        read_seg_mask(stripped, volume, segment_label="Bone"), labels == 1
    )
    np.testing.assert_array_equal(read_seg_mask(stripped, volume), labels > 0)


def test_label_map_seg_in_the_multi_structure_reference_path(
    ct: tuple[Path, list[Path], Volume, np.ndarray], tmp_path: Path
) -> None:
    """Found by content among the test set's files, its structures listed and read."""
    root, paths, volume, labels = ct
    folder = tmp_path / "set"
    shutil.copytree(root, folder)
    ct_paths = sorted((folder / "cases" / "ct0" / "CT").glob("*.dcm"))
    for stale in (folder / "cases" / "ct0").glob("SEG/*.dcm"):
        stale.unlink()
    seg_path = _label_map_seg(ct_paths, folder / "cases" / "ct0" / "SEG")
    index = index_folder(folder, workers=1)
    found = find_reference_files(index.files, folder, "seg")
    assert found[volume.series_instance_uid]["reader1"] == seg_path
    assert reference_structures(seg_path, "seg") == NAMES
    for number, name in enumerate(NAMES, start=1):
        mask = read_structure_mask(seg_path, volume, "seg", name)
        np.testing.assert_array_equal(mask, labels == number)
    np.testing.assert_array_equal(read_structure_mask(seg_path, volume, "seg", None), labels > 0)

    bone_only = _label_map_seg(ct_paths, tmp_path / "bone-only", names=("Bone",))
    assert reference_structures(bone_only, "seg") == ("Bone",)
    with pytest.raises(SegmentationError, match=r"labelled 'Soft tissue'. Found 0 .*'Bone'"):
        read_structure_mask(bone_only, volume, "seg", "Soft tissue")


def test_fractional_seg_holds_every_voxel_above_zero(
    ct: tuple[Path, list[Path], Volume, np.ndarray], tmp_path: Path
) -> None:
    """A FRACTIONAL (probability) SEG: a voxel is in wherever its stored value is above 0,
    however small, as the module docstring states."""
    _, paths, volume, labels = ct
    sources = sorted(
        (pydicom.dcmread(p) for p in paths), key=lambda d: float(d.ImagePositionPatient[2])
    )
    probability = np.where(labels == 1, 0.9, np.where(labels == 2, 0.01, 0.0)).astype(np.float32)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=probability,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="Bone probability",
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=codes.SCT.AnatomicalStructure,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name="bone-net", family=codes.cid7162.ArtificialIntelligence, version="1"
                ),
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=902,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Hospital PACS",
        manufacturer_model_name="Segmentation editor",
        software_versions="1.0",
        device_serial_number="1",
        omit_empty_frames=False,
    )
    path = tmp_path / "fractional.dcm"
    seg.save_as(path)
    stored = np.asarray(pydicom.dcmread(path).pixel_array)
    assert set(np.unique(stored).tolist()) == {0, 3, 230}  # 0.01 and 0.9 of 255, rounded
    assert identify_seg(path).segmentation_type == "FRACTIONAL"
    np.testing.assert_array_equal(read_seg_mask(path, volume), labels > 0)
    # placed by position: the one segment is identified in the shared functional groups
    ds = pydicom.dcmread(path)
    assert "SegmentIdentificationSequence" in ds.SharedFunctionalGroupsSequence[0]
    for group in ds.PerFrameFunctionalGroupsSequence:
        del group.DerivationImageSequence
    ds.save_as(tmp_path / "no-source-references.dcm")
    np.testing.assert_array_equal(
        read_seg_mask(tmp_path / "no-source-references.dcm", volume), labels > 0
    )
