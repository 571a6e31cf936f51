"""Index records read straight from the bytes equal those read with pydicom.

The index reads a complete file in a plain encoding without pydicom
(``workbench.dicom._raw`` and ``_RawHeader``) and leaves every other file to
pydicom. Both must give the same record, field for field, and the same
verdict: this is checked on every file of pydicom's test data and the
``pydicom-data`` package (other vendors' and tools' DICOM in every transfer
syntax, with truncated and non-DICOM files among them), on the malformed-input
corpus and on phantoms, clean and with defects.
"""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.uid import ImplicitVRLittleEndian

from tests.malformed.generate_corpus import clean_slice, write_dicom_corpus
from workbench.dicom import _raw
from workbench.dicom.index import _index_data, _raw_record
from workbench.dicom.synth import SynthSummary

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def real_files() -> list[Path]:
    data_store = pytest.importorskip("data_store", reason="pydicom-data (dev extra) not installed")
    return _files(PYDICOM_FILES) + _files(Path(data_store.__file__).parent / "data")


def _compare(files: list[Path], root: Path) -> tuple[list[str], list[str]]:
    """Files whose records differ, and files read without pydicom."""
    differ, raw = [], []
    for path in files:
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        digest = hashlib.sha256(data).hexdigest()
        if _index_data(rel, data, digest) != _index_data(rel, data, digest, raw=False):
            differ.append(rel)
        if _raw_record(rel, data, digest) is not None:
            raw.append(rel)
    return differ, raw


def test_real_files_give_the_same_record_either_way(real_files: list[Path]) -> None:
    differ, raw = _compare(real_files, Path("/"))
    assert differ == []
    names = {Path(p).name for p in raw}
    # Explicit and implicit VR little endian, big endian, JPEG, JPEG 2000, RLE, other vendors.
    assert {
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle.dcm",
        "rtplan.dcm",
    } <= names
    assert len(raw) > len(real_files) // 2, (len(raw), len(real_files))
    # Left to pydicom: deflated, no preamble, truncated, not DICOM, functional groups.
    for name in (
        "image_dfl.dcm",
        "no_meta.dcm",
        "MR_truncated.dcm",
        "README.txt",
        "emri_small_jpeg_2k_lossless_too_short.dcm",
        "eCT_Supplemental.dcm",
    ):
        assert name in {p.name for p in real_files} and name not in names, name


def test_malformed_corpus_and_phantoms_give_the_same_record_either_way(
    tmp_path: Path, synthetic_test_set: SynthSummary, defective_test_set: SynthSummary
) -> None:
    corpus = tmp_path / "corpus"
    write_dicom_corpus(corpus)
    differ, raw = _compare(_files(corpus), corpus)
    assert differ == []
    assert raw
    for summary in (synthetic_test_set, defective_test_set):
        differ, raw = _compare(_files(summary.root), summary.root)
        assert differ == []
        ct = [p for p in raw if "/CT/" in p]
        assert len(ct) >= 40, len(ct)  # every clean CT slice is read without pydicom


def test_located_values_are_pydicoms_raw_values(real_files: list[Path]) -> None:
    """Every top-level element the raw reader locates holds pydicom's raw bytes."""
    walked = 0
    for path in real_files:
        data = path.read_bytes()
        try:
            header = _raw.read_header(data)
        except (_raw.NotWalked, _raw.Truncated):
            continue
        walked += 1
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        assert set(header.elements) == {int(t) for t in ds._dict}, path.name
        for tag, (vr, offset, length) in header.elements.items():
            elem = ds._dict[tag]  # type: ignore[index]
            if length == _raw.UNDEFINED:
                continue  # a sequence pydicom has parsed
            if isinstance(elem, RawDataElement):
                assert (elem.value or b"") == data[offset : offset + length], (path.name, tag)
                if header.explicit:
                    assert elem.VR == vr.decode(), (path.name, tag)
        meta = ds.file_meta
        assert str(meta.TransferSyntaxUID) == header.transfer_syntax
        assert header.little == (header.transfer_syntax != _raw.EXPLICIT_VR_BE)
    assert walked > 100


def test_what_the_raw_reader_refuses() -> None:
    ct = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    header = _raw.read_header(ct)
    assert header.explicit and header.little
    with pytest.raises(_raw.Truncated):
        _raw.read_header(ct[:-1])
    with pytest.raises(_raw.NotWalked, match="DICM"):
        _raw.read_header(ct[128:])
    with pytest.raises(_raw.NotWalked, match="deflated"):
        _raw.read_header((PYDICOM_FILES / "image_dfl.dcm").read_bytes())
    _, data_set_start = _raw.read_file_meta(ct)
    meta_only = ct[:data_set_start]
    with pytest.raises(_raw.NotWalked, match="no data elements"):
        _raw.read_header(meta_only)


def _slice(*, implicit: bool = False, **values: object) -> bytes:
    """A clean slice of the malformed-input corpus, changed by ``values`` (None removes)."""
    ds = clean_slice()
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return out.getvalue()


def _with_sequence_item(data: bytes, item_content: bytes) -> bytes:
    """``data`` with a sequence of undefined length holding one item of defined length."""
    _, start = _raw.read_file_meta(data)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, len(item_content)) + item_content
    sequence = struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
    end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return data[:start] + sequence + item + end + data[start:]


@pytest.mark.parametrize(
    "case",
    [
        "garbage in an item of defined length",
        "an element running past its item",
        "a character set of VR US",
        "a first element whose implicit length looks like a VR",
        "a multi-valued transfer syntax",
    ],
)
def test_what_pydicom_reads_otherwise_is_left_to_it(case: str) -> None:
    """Malformed in ways only a full parse sees: the raw reader must not decide."""
    if case == "garbage in an item of defined length":
        data = _with_sequence_item(_slice(), b"\x08\x00\x16\x00zz\xff\xff" + b"\x01" * 8)
    elif case == "an element running past its item":
        content = struct.pack("<HH2sH", 0x0008, 0x1150, b"UI", 4) + b"1.2\0"
        data = _with_sequence_item(_slice(), content + struct.pack("<HH2sH", 8, 0x1155, b"UI", 64))
    elif case == "a character set of VR US":
        data = _slice(SpecificCharacterSet=None)
        _, start = _raw.read_file_meta(data)
        charset = struct.pack("<HH2sHH", 0x0008, 0x0005, b"US", 2, 100)
        data = data[:start] + charset + data[start:]
    elif case == "a first element whose implicit length looks like a VR":
        # The first element's length bytes read "TO".
        data = _slice(implicit=True, SpecificCharacterSet=None, ImageType="A" * 0x4F54)
    else:
        data = _slice().replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.1\\9", 1)
    digest = hashlib.sha256(data).hexdigest()
    assert _raw_record("x.dcm", data, digest) is None
    assert _index_data("x.dcm", data, digest) == _index_data("x.dcm", data, digest, raw=False)


def test_a_sound_item_of_defined_length_is_walked() -> None:
    content = struct.pack("<HH2sH", 0x0008, 0x1150, b"UI", 4) + b"1.2\0"
    data = _with_sequence_item(_slice(), content)
    digest = hashlib.sha256(data).hexdigest()
    assert _raw_record("x.dcm", data, digest) is not None
    assert _index_data("x.dcm", data, digest) == _index_data("x.dcm", data, digest, raw=False)
