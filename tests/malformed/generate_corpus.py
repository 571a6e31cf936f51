"""Generate the malformed-input corpus of the reliability suite.

Nothing here is a hand-made binary: every case is derived by code from a small,
valid CT slice written with pydicom (or from a valid protocol, model or PDF),
then broken in one precise way. Each case names the entry point it is fed to and
the error it must produce (a regular expression over the message or reason).

Run it by hand to look at the files::

    python tests/malformed/generate_corpus.py /tmp/corpus

The tests call :func:`write_dicom_corpus`, :func:`protocol_cases` and
:func:`model_cases` directly.
"""

from __future__ import annotations

import io
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

__all__ = [
    "DicomCase",
    "DICOM_CASES",
    "ProtocolCase",
    "protocol_cases",
    "MODEL_CASE_NAMES",
    "clean_slice",
    "write_dicom_corpus",
    "write_series",
]

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_UID_ROOT = "1.2.826.0.1.3680043.8.498.7777."
MARKER_NAME = "PWNED-marker"


def _uid(*parts: int) -> str:
    return _UID_ROOT + ".".join(str(p) for p in parts)


def clean_slice(
    index: int = 0,
    *,
    series: int = 1,
    rows: int = 16,
    columns: int = 16,
    z_spacing: float = 2.5,
    patient: str = "ANON^CORPUS",
) -> Dataset:
    """A small valid CT Image Storage slice (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_STORAGE
    meta.MediaStorageSOPInstanceUID = _uid(series, index + 1)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _UID_ROOT + "1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(series, 0, 1)
    ds.SeriesInstanceUID = _uid(series, 0, 2)
    ds.FrameOfReferenceUID = _uid(series, 0, 3)
    ds.Modality = "CT"
    ds.Manufacturer = "CorpusScanner"
    ds.ManufacturerModelName = "C1"
    ds.PatientName = patient
    ds.PatientID = "CORPUS-1"
    ds.PatientSex = "F"
    ds.PatientAge = "050Y"
    ds.PatientIdentityRemoved = "YES"
    ds.StudyDate = "20240101"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, index * z_spacing]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.8, 0.8]
    ds.SliceThickness = z_spacing
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    ds.PixelData = (np.arange(rows * columns, dtype=np.int16) + index).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_series(folder: Path, n: int = 4, **kw: object) -> list[Path]:
    """A valid small series of ``n`` slices in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i:04d}.dcm"
        path.write_bytes(to_bytes(clean_slice(i, **kw)))  # type: ignore[arg-type]
        paths.append(path)
    return paths


def _pixel_offset(data: bytes) -> int:
    return data.rfind(b"\xe0\x7f\x10\x00")


# ----------------------------------------------------------------------- DICOM cases


@dataclass(frozen=True)
class DicomCase:
    """One malformed DICOM input.

    ``stage`` is where it must be caught: ``index`` (listed as unreadable with a
    reason matching ``expect``), ``load`` (``load_series`` raises ``error`` with a
    message matching ``expect``), ``quality`` (a finding whose check/message
    matches ``expect``) or ``skip`` (the walk skips it with that reason).
    """

    name: str
    stage: str
    expect: str
    make: Callable[[Path], None]
    error: str = "DicomReadError"


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    return make


def _series_then(mutate: Callable[[list[Path]], None], n: int = 4) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        mutate(write_series(folder, n))

    return make


def _edit(index: int, **changes: object) -> Callable[[list[Path]], None]:
    def mutate(paths: list[Path]) -> None:
        ds = pydicom.dcmread(paths[index])
        for key, value in changes.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.save_as(paths[index], enforce_file_format=True)

    return mutate


def _raw_edit(index: int, fn: Callable[[bytes], bytes]) -> Callable[[list[Path]], None]:
    def mutate(paths: list[Path]) -> None:
        paths[index].write_bytes(fn(paths[index].read_bytes()))

    return mutate


def _replace_text(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def fn(data: bytes) -> bytes:
        assert old in data, old
        return data.replace(old, new, 1)

    return fn


def _transfer_syntax_unsupported(paths: list[Path]) -> None:
    # Declares JPEG 2000 and carries encapsulated bytes that are not a codestream.
    from pydicom.encaps import encapsulate

    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\x00\x01not a jpeg2000 codestream" * 4])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)


def _enormous(paths: list[Path]) -> None:
    # 65535 x 65535 x 2 bytes declared (8 GiB) over 512 bytes of pixel data: the
    # element length is consistent, so only the declared matrix is absurd.
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.Rows = 65535
        ds.Columns = 65535
        ds.save_as(path, enforce_file_format=True)


def _duplicate_uid(paths: list[Path]) -> None:
    first = pydicom.dcmread(paths[0])
    second = pydicom.dcmread(paths[1])
    second.SOPInstanceUID = first.SOPInstanceUID
    second.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    second.save_as(paths[1], enforce_file_format=True)


def _same_position(paths: list[Path]) -> None:
    ds = pydicom.dcmread(paths[1])
    ds.ImagePositionPatient = list(pydicom.dcmread(paths[0]).ImagePositionPatient)
    ds.save_as(paths[1], enforce_file_format=True)


def _mixed_orientation(paths: list[Path]) -> None:
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    ds.save_as(paths[2], enforce_file_format=True)


def _deep_folders(folder: Path) -> None:
    deep = folder
    for level in range(40):
        deep = deep / f"d{level}"
    write_series(deep, 2)


def _link_loop(folder: Path) -> None:
    write_series(folder / "series", 2)
    os.symlink("..", folder / "series" / "up")  # a link back to an ancestor
    os.symlink(folder.resolve(), folder / "self")


def _odd_names(folder: Path) -> None:
    paths = write_series(folder / "odd name ü ✓ 'quote\" ;", 2)
    paths[0].rename(paths[0].with_name("slice\nwith newline.dcm"))
    paths[1].rename(paths[1].with_name("=cmd()|calc.dcm"))


def _non_utf8_name(folder: Path) -> None:
    paths = write_series(folder, 2)
    raw = os.fsencode(paths[1].parent) + b"/\xff\xfe-latin1-\xe9.dcm"
    os.rename(paths[1], raw)


def _non_utf8_header(paths: list[Path]) -> None:
    # Declares UTF-8 (ISO_IR 192) but carries Latin-1 bytes and control characters.
    _raw_edit(0, _replace_text(b"ANON^CORPUS", b"ANON\xe9\xff\x01^C\x1bRP"))(paths)


DICOM_CASES: list[DicomCase] = [
    DicomCase("empty", "index", r"not DICOM|empty|unreadable", _write("empty.dcm", b"")),
    DicomCase(
        "truncated_header",
        "index",
        r"unreadable DICOM header|truncated|not DICOM",
        lambda f: _write("trunc-header.dcm", to_bytes(clean_slice())[:180])(f),
    ),
    DicomCase(
        "truncated_pixel_data",
        "index",
        r"truncated: pixel data declares 512 bytes",
        lambda f: _write("trunc-pixels.dcm", to_bytes(clean_slice())[:-100])(f),
    ),
    DicomCase(
        "not_dicom",
        "index",
        r"not DICOM",
        _write("notes.dcm", b"This is a plain text file, not an image.\n" * 20),
    ),
    DicomCase(
        "preamble_only",
        "index",
        r"not DICOM|unreadable|truncated",
        _write("preamble.dcm", b"\x00" * 128 + b"DICM"),
    ),
    DicomCase(
        "random_bytes",
        "index",
        r"not DICOM|unreadable",
        _write("noise.dcm", np.random.default_rng(3).bytes(4096)),
    ),
    DicomCase(
        "missing_pixel_data",
        "load",
        r"pixel data|PixelData",
        _series_then(_edit(1, PixelData=None)),
    ),
    DicomCase(
        "rows_columns_inconsistent",
        "load",
        r"pixel data|Rows|Columns|size",
        _series_then(lambda paths: [_edit(i, Rows=32)(paths) for i in range(len(paths))]),
    ),
    DicomCase(
        "rows_differ_within_series",
        "load",
        r"Rows x Columns",
        _series_then(_edit(2, Rows=32)),
        error="GeometryError",
    ),
    DicomCase(
        "unparseable_geometry",
        "load",
        r"Orientation|Position|geometry|ImageOrientation",
        _series_then(
            _raw_edit(
                1, _replace_text(b"1.0\\0.0\\0.0\\0.0\\1.0\\0.0", b"x.y\\0.0\\0.0\\0.0\\1.0\\0.z")
            )
        ),
        error="GeometryError|DicomReadError",
    ),
    DicomCase(
        "degenerate_orientation",
        "load",
        r"degenerate",
        _series_then(_edit(0, ImageOrientationPatient=[0.0] * 6)),
        error="GeometryError",
    ),
    DicomCase(
        "duplicate_positions",
        "load",
        r"position|duplicate|spacing",
        _series_then(_same_position),
        error="GeometryError",
    ),
    DicomCase(
        "mixed_orientation",
        "load",
        r"orientation",
        _series_then(_mixed_orientation),
        error="GeometryError",
    ),
    DicomCase(
        "unsupported_transfer_syntax",
        "load",
        r"cannot decode the pixel data",
        _series_then(_transfer_syntax_unsupported, n=2),
    ),
    DicomCase(
        "enormous_declared_dimensions",
        "load",
        r"pixel data|Rows|Columns|size|large",
        _series_then(_enormous, n=2),
    ),
    DicomCase("duplicate_sop_uid", "quality", r"duplicate|unique", _series_then(_duplicate_uid)),
    DicomCase("deep_folders", "index_ok", r"d39/0001.dcm", _deep_folders),
    DicomCase("link_loop", "skip", r"loop|leaves", _link_loop),
    DicomCase("odd_characters_in_names", "index_ok", r"newline", _odd_names),
    DicomCase("non_utf8_file_name", "index_ok", r"latin1", _non_utf8_name),
    DicomCase("non_utf8_header_strings", "index_ok", r"0000.dcm", _series_then(_non_utf8_header)),
]


def write_dicom_corpus(out: Path) -> dict[str, Path]:
    """Write every :data:`DICOM_CASES` case into its own folder under ``out``."""
    folders = {}
    for case in DICOM_CASES:
        folder = out / case.name
        case.make(folder)
        folders[case.name] = folder
    return folders


# -------------------------------------------------------------------- protocol cases


@dataclass(frozen=True)
class ProtocolCase:
    """A protocol text and the error ``add_protocol_version`` must raise."""

    name: str
    text: str
    expect: str


def protocol_cases(valid_text: str) -> list[ProtocolCase]:
    """Broken variants of a valid protocol YAML text."""
    import yaml

    def changed(**edits: object) -> str:
        data = yaml.safe_load(valid_text)
        for dotted, value in edits.items():
            node = data
            keys = dotted.split("__")
            for key in keys[:-1]:
                node = node[int(key)] if key.isdigit() else node[key]
            last = keys[-1]
            if value is _DROP:
                del node[last]
            else:
                node[int(last) if last.isdigit() else last] = value
        return yaml.safe_dump(data, sort_keys=False)

    return [
        ProtocolCase(
            "yaml_syntax_error", valid_text.replace("title:", "title: [unclosed", 1), r"line"
        ),
        ProtocolCase("tab_indentation", valid_text.replace("\n  ", "\n\t", 1), r"line"),
        ProtocolCase("not_a_mapping", "- just\n- a list\n", r"mapping|object|dict"),
        ProtocolCase("empty_document", "", r"empty|mapping|nothing|found"),
        ProtocolCase("unknown_top_level_key", changed(surprise_key=1), r"surprise_key"),
        ProtocolCase("unknown_endpoint_key", changed(endpoints__0__colour="red"), r"colour"),
        ProtocolCase(
            "wrong_type_threshold", changed(endpoints__0__criterion__threshold="high"), r"threshold"
        ),
        ProtocolCase("wrong_type_endpoints", changed(endpoints="auc"), r"endpoints"),
        ProtocolCase("unknown_metric", changed(endpoints__0__metric="aucc"), r"metric|aucc"),
        ProtocolCase(
            "impossible_threshold",
            changed(endpoints__0__criterion__threshold=1.7),
            r"threshold|1\.7",
        ),
        ProtocolCase("impossible_ci_level", changed(endpoints__0__ci__level=1.5), r"level|1\.5"),
        ProtocolCase("negative_min_n", changed(strata__0__min_n=-3), r"min_n|-3"),
        ProtocolCase("missing_endpoints", changed(endpoints=_DROP), r"endpoints"),
        ProtocolCase("binary_garbage", "\x00\x01\x02\xff", r"line|YAML|mapping|character"),
    ]


class _Drop:
    pass


_DROP = _Drop()


# ----------------------------------------------------------------------- model files


def pickle_payload(marker: Path) -> bytes:
    """A pickle that would create ``marker`` when unpickled (it must never be)."""
    import pickle

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"state_dict": Exploit()})


def torch_save_payload(marker: Path) -> bytes:
    """A ``torch.save`` zip whose data.pkl runs code when loaded without weights_only."""
    import torch

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    torch.save({"model": Exploit()}, buffer)
    return buffer.getvalue()


def random_model_bytes() -> bytes:
    return np.random.default_rng(11).bytes(2048)


def pdf_from_elsewhere(path: Path, text: str = "Validation report VR-FAKE-1") -> Path:
    """A plain reportlab PDF that the workbench never built nor sealed."""
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    c.drawString(72, 720, text)
    c.showPage()
    c.save()
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "malformed-corpus")
    dicom = write_dicom_corpus(out / "dicom")
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "models" / "random.ts").write_bytes(random_model_bytes())
    (out / "models" / "exploit.pkl").write_bytes(pickle_payload(out / MARKER_NAME))
    pdf_from_elsewhere(out / "elsewhere.pdf")
    data = (out / "elsewhere.pdf").read_bytes()
    (out / "truncated.pdf").write_bytes(data[: len(data) // 2])
    print(f"wrote {len(dicom)} DICOM cases, 2 model files and 2 PDFs under {out}")
    _ = struct
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#: Model cases exercised by tests/reliability/test_malformed_models.py.
MODEL_CASE_NAMES = (
    "random_bytes",
    "pickle_exploit",
    "torch_save_exploit",
    "wrong_input_shape",
    "wrong_output_shape",
    "nan_output",
    "hangs",
    "exhausts_memory",
)
