"""Indexing (synthetic and pydicom's real test files) and lock manifests."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from workbench.dicom.index import FILE_COLUMNS, DicomIndex, FolderIndexer, index_folder
from workbench.dicom.manifest import Manifest, build_manifest, canonical_json, verify_manifest
from workbench.dicom.synth import Defect, SynthSummary
from workbench.errors import DicomReadError, ManifestError


def test_index_synthetic_set(synthetic_test_set: SynthSummary) -> None:
    calls: list[tuple[int, int, str]] = []
    index = index_folder(synthetic_test_set.root, workers=2, progress=lambda *a: calls.append(a))
    files = index.files
    assert list(files.columns) == list(FILE_COLUMNS)
    assert len(files) == 4 * 40 + 4 * 2
    assert index.unreadable.empty and index.skipped.empty
    assert sorted(index.other_files["path"]) == ["dataset.json", "reference/labels.csv"]
    assert calls[-1][0] == calls[-1][1] == len(files) + 2
    ct = files[files["modality"] == "CT"]
    assert set(ct["kind"]) == {"image"}
    assert ct["image_orientation"].eq("1,0,0,0,1,0").all()
    row = ct[ct["path"] == "cases/case0002/CT/0005.dcm"].iloc[0]
    ds = pydicom.dcmread(synthetic_test_set.root / row["path"])
    assert (
        row["sha256"]
        == hashlib.sha256((synthetic_test_set.root / row["path"]).read_bytes()).hexdigest()
    )
    assert row["sop_instance_uid"] == ds.SOPInstanceUID
    assert row["image_position_z"] == pytest.approx(float(ds.ImagePositionPatient[2]))
    assert row["pixel_spacing_col"] == pytest.approx(float(ds.PixelSpacing[1]))
    assert row["rows"] == 128 and row["instance_number"] == 5
    assert row["patient_age"] == ds.PatientAge and row["patient_identity_removed"] == "YES"
    segs = files[files["kind"] == "segmentation"]
    assert len(segs) == 8 and set(segs["modality"]) == {"SEG"}
    assert set(segs["referenced_series_uid"]) == set(ct["series_instance_uid"])
    series = index.series()
    assert len(series) == 4 + 8 and series["n_files"].sum() == len(files)
    # Serial and parallel indexing agree.
    serial = index_folder(synthetic_test_set.root, workers=1)
    assert serial.files.equals(files)


def test_index_flags_defective_files(defective_test_set: SynthSummary) -> None:
    index = index_folder(defective_test_set.root, workers=2)
    reasons = dict(zip(index.unreadable["path"], index.unreadable["reason"], strict=True))
    (truncated,) = defective_test_set.files_with(Defect.TRUNCATED_FILE)
    (stray,) = defective_test_set.files_with(Defect.NON_DICOM_FILE)
    assert set(reasons) == {truncated, stray}
    assert reasons[truncated].startswith("truncated")
    assert reasons[stray].startswith("not DICOM")
    files = index.files.set_index("path")
    (wrong,) = defective_test_set.files_with(Defect.WRONG_MODALITY)
    assert files.loc[wrong, "modality"] == "MR"
    phi = defective_test_set.files_with(Defect.PHI_IN_HEADER)
    assert (files.loc[list(phi), "patient_name"] == "Novak^Maria^Elena").all()
    assert files["sop_instance_uid"].duplicated().sum() == 1


def test_symlinks_leaving_root_are_skipped(
    synthetic_test_set: SynthSummary, tmp_path: Path
) -> None:
    root = tmp_path / "set"
    shutil.copytree(synthetic_test_set.root / "cases" / "case0001" / "SEG", root / "SEG")
    outside = tmp_path / "outside.dcm"
    shutil.copy(synthetic_test_set.root / "cases" / "case0001" / "SEG" / "reader1.dcm", outside)
    os.symlink(outside, root / "escape.dcm")
    os.symlink("../", root / "parent")
    os.symlink(root / "SEG", root / "loop_inside")  # stays inside: followed once
    os.symlink(root / "missing", root / "broken")
    index = index_folder(root, workers=1)
    skipped = dict(zip(index.skipped["path"], index.skipped["reason"], strict=True))
    assert "leaves the test-set root" in skipped["escape.dcm"]
    assert "leaves the test-set root" in skipped["parent"]
    assert skipped["broken"] == "broken symbolic link"
    assert sorted(index.files["path"]) == ["SEG/reader1.dcm", "SEG/reader2.dcm"]
    with pytest.raises(DicomReadError, match="Expected a folder"):
        index_folder(tmp_path / "nope")


def test_pydicom_test_files_are_indexed_without_crashing(tmp_path: Path) -> None:
    data_dir = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]
    root = tmp_path / "real"
    shutil.copytree(data_dir, root, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    index = index_folder(root, workers=2)
    total = len(index.files) + len(index.unreadable) + len(index.other_files)
    assert total == sum(1 for p in root.rglob("*") if p.is_file())
    assert len(index.files) > 100
    files = index.files.set_index("path")
    assert files.loc["CT_small.dcm", "modality"] == "CT"
    assert files.loc["CT_small.dcm", "kind"] == "image"
    assert files.loc["CT_small.dcm", "rows"] == 128
    # Non-image objects are classified, not mistaken for images.
    assert {"image", "directory", "segmentation", "structured_report"} <= set(files["kind"])
    assert files.loc["dicomdirtests/DICOMDIR", "kind"] == "directory"
    assert files.loc["rtplan.dcm", "kind"] == "radiotherapy"
    # Files that are not DICOM, or are cut short, land in `unreadable` with a reason.
    reasons = dict(zip(index.unreadable["path"], index.unreadable["reason"], strict=True))
    assert reasons["README.txt"].startswith("not DICOM")
    assert reasons["MR_truncated.dcm"].startswith("truncated")
    assert "SC_rgb_jpeg.dcm" in files.index  # encapsulated pixel data without a VR is fine
    manifest = build_manifest(root, index)
    assert manifest.n_files == total
    assert verify_manifest(root, manifest).ok


def assert_same_index(got: DicomIndex, expected: DicomIndex) -> None:
    for frame in ("files", "unreadable", "other_files", "skipped"):
        pd.testing.assert_frame_equal(getattr(got, frame), getattr(expected, frame))
    assert got.hashes == expected.hashes


@pytest.mark.parametrize("source", ["defective", "pydicom"])
def test_files_indexed_while_written_match_a_folder_index(
    source: str, defective_test_set: SynthSummary, tmp_path: Path
) -> None:
    """Records made while a folder fills are those of indexing the folder afterwards."""
    if source == "defective":
        shutil.copytree(defective_test_set.root, tmp_path / "staging")
    else:
        data_dir = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(data_dir, tmp_path / "staging", symlinks=False, ignore=ignore)
    staging = tmp_path / "staging"
    rels = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    handed = rels[::2]  # the others are left for the folder index to read
    with FolderIndexer(workers=2) as indexer:
        for start in range(0, len(handed), 7):
            # The writer's digest where it has one (every other chunk), else computed.
            chunk = handed[start : start + 7]
            known = start % 14 == 0
            indexer.add(
                staging,
                [(rel, sha256_of(staging / rel) if known else None) for rel in chunk],
            )
        indexer.results()
        root = tmp_path / "final"
        os.replace(staging, root)  # the folder moves once the handed files are read
        got = index_folder(root, indexer=indexer)
    assert_same_index(got, index_folder(root, workers=2))
    assert len(got.unreadable) >= 2


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_digest_and_round_trip(synthetic_test_set: SynthSummary) -> None:
    index = index_folder(synthetic_test_set.root, workers=1)
    manifest = build_manifest(synthetic_test_set.root, index)
    assert set(manifest.entries) == set(index.files["path"]) | {
        "dataset.json",
        "reference/labels.csv",
    }
    expected = hashlib.sha256(canonical_json(dict(sorted(manifest.entries.items())))).hexdigest()
    assert manifest.digest == expected
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    tampered = manifest.to_json().replace(manifest.entries["dataset.json"], "0" * 64)
    with pytest.raises(ManifestError, match="does not match its entries"):
        Manifest.from_json(tampered)
    with pytest.raises(ManifestError, match=r"'\.\.'"):
        Manifest.from_entries({"../etc/passwd": "0" * 64})
    with pytest.raises(ManifestError, match="SHA-256"):
        Manifest.from_entries({"a.dcm": "xyz"})


def test_verify_manifest_detects_tampering(
    synthetic_test_set: SynthSummary, tmp_path: Path
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synthetic_test_set.root, root)
    manifest = build_manifest(root, index_folder(root, workers=1))
    assert verify_manifest(root, manifest).ok

    victim = root / "cases/case0002/CT/0010.dcm"
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0x01  # one bit of pixel data
    victim.write_bytes(bytes(data))
    (root / "cases/case0003/SEG/reader2.dcm").unlink()
    (root / "reference/notes.txt").write_text("added after lock")
    (root / "reference/labels.csv").write_text(
        (root / "reference/labels.csv").read_text().replace(",1,", ",0,", 1)
    )
    calls: list[tuple[int, int, str]] = []
    diff = verify_manifest(root, manifest, workers=2, progress=lambda *a: calls.append(a))
    assert not diff.ok
    assert diff.changed == ("cases/case0002/CT/0010.dcm", "reference/labels.csv")
    assert diff.removed == ("cases/case0003/SEG/reader2.dcm",)
    assert diff.added == ("reference/notes.txt",)
    assert "2 changed" in diff.summary() and calls[-1][0] == calls[-1][1]


def test_build_manifest_rejects_foreign_index(
    synthetic_test_set: SynthSummary, tmp_path: Path
) -> None:
    index = index_folder(synthetic_test_set.root, workers=1)
    with pytest.raises(ManifestError, match="Index was built for"):
        build_manifest(tmp_path, index)
