"""Study-level intake and the fast paths of retrieval.

The reader that identifies and checks every received file without a full parse is
held against pydicom on the real files of pydicom and pydicom-data; the streaming
multipart reader against every way of cutting an answer into chunks; study-level
retrieval against a fake PACS with each fault, and against a real Orthanc (byte for
byte, one request per study, resumed after damage).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import DATA_ROOT, get_external_sources
from pydicom.uid import generate_uid

from workbench.dicom.index import FolderIndexer, index_folder
from workbench.dicomweb import (
    Credentials,
    DicomWebServer,
    list_study_instances,
    retrieve_instances,
)
from workbench.dicomweb import retrieve as retrieve_module
from workbench.dicomweb.retrieve import (
    _AnswerEnded,
    _Destination,
    _Malformed,
    _NotWalked,
    _Payload,
    _read_identity,
    _read_parts,
    _Truncated,
    retrieve_studies,
)
from workbench.errors import DicomWebError

BOUNDARY = "wb-speed-boundary"
#: pydicom test files that are cut short on purpose (pydicom reads them without a word).
KNOWN_TRUNCATED = {
    "MR_truncated.dcm",
    "rtplan_truncated.dcm",
    "emri_small_jpeg_2k_lossless_too_short.dcm",
}
#: Files of one study in every encoding the reader follows: explicit and implicit VR little
#: endian, explicit VR big endian, JPEG 2000 and RLE (encapsulated, undefined length).
ENCODINGS = (
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pydicom_identity(data: bytes) -> tuple[str, str, str | None, str | None] | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.get("PixelData")
        sop = str(ds.SOPInstanceUID)
    except Exception:
        return None
    return (
        sop,
        str(ds.file_meta.TransferSyntaxUID),
        ds.get("StudyInstanceUID"),
        ds.get("SeriesInstanceUID"),
    )


def real_files() -> list[Path]:
    """Every file of pydicom's test data and of the pydicom-data package, as installed."""
    folders = [Path(DATA_ROOT) / "test_files"]
    folders += [Path(source.data_path) for source in get_external_sources().values()]
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file())


def test_reader_agrees_with_pydicom_on_real_files() -> None:
    walked: set[str] = set()
    truncated: set[str] = set()
    paths = real_files()
    assert len(paths) > 200  # pydicom's ~170 files and pydicom-data's
    for path in paths:
        data = path.read_bytes()
        expected = pydicom_identity(data)
        try:
            found = _read_identity(data)
        except _Truncated:
            truncated.add(path.name)
            continue
        except _NotWalked:
            continue  # left to pydicom, which then decides
        assert expected is not None, f"{path.name}: accepted, but pydicom cannot read it"
        got = (found.sop_uid, found.transfer_syntax_uid, found.study_uid, found.series_uid)
        assert got == expected, path.name
        walked.add(found.transfer_syntax_uid)
    assert truncated == KNOWN_TRUNCATED
    # Every family of encodings was read by the fast reader, not left to pydicom.
    assert {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5",
    } <= walked


@pytest.mark.parametrize("name", ENCODINGS)
def test_reader_finds_every_cut_inside_the_pixel_data(name: str) -> None:
    data = Path(str(get_testdata_file(name))).read_bytes()
    assert _read_identity(data).sop_uid == pydicom_identity(data)[0]  # type: ignore[index]
    ds = pydicom.dcmread(io.BytesIO(data))
    start = len(data) - len(ds.PixelData)  # the value is the last thing in these files
    rng = random.Random(name)
    cuts = {start + 1, len(data) - 1, *(rng.randrange(start + 1, len(data)) for _ in range(25))}
    for cut in sorted(cuts):
        with pytest.raises(_Truncated):
            _read_identity(data[:cut])


def multipart(
    parts: list[bytes],
    *,
    headers: list[str] | None = None,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    close: bool = True,
    padding: bytes = b"",
) -> bytes:
    out = preamble
    for k, data in enumerate(parts):
        head = headers[k] if headers else "Content-Type: application/dicom\r\n"
        out += f"--{BOUNDARY}".encode() + padding + b"\r\n" + head.encode() + b"\r\n" + data
        out += b"\r\n"
    if close:
        out += f"--{BOUNDARY}--".encode() + epilogue
    return out


def chunked(body: bytes, sizes: list[int]) -> list[bytes]:
    out, at, k = [], 0, 0
    while at < len(body):
        size = sizes[k % len(sizes)]
        out.append(body[at : at + size])
        at, k = at + size, k + 1
    return out


def test_multipart_reader_is_independent_of_chunking() -> None:
    rng = random.Random(7)
    tricky = [
        b"",
        b"\r\n",
        f"x--{BOUNDARY}".encode(),  # a boundary not at a line start is content
        f"x\n--{BOUNDARY}\r-{BOUNDARY}".encode(),
        bytes(rng.randrange(256) for _ in range(5000)),
        b"\r\n--" + BOUNDARY.encode()[:-1],
    ]
    body = multipart(tricky, preamble=b"a preamble\r\n", epilogue=b"\r\nan epilogue", padding=b" ")
    for sizes in ([1], [2], [3], [7], [64], [4096], [len(body)], [1, 50, 3, 900]):
        parts = list(_read_parts(chunked(body, sizes), BOUNDARY.encode()))
        assert [p.data for p in parts] == tricky, sizes
        assert [p.sha256 for p in parts] == [sha256(p) for p in tricky]
        assert all(p.headers["content-type"] == "application/dicom" for p in parts)
    # The closing boundary may end the stream with or without a line break.
    for tail in (b"", b"\r\n"):
        assert [p.data for p in _read_parts([multipart([b"x"]) + tail], BOUNDARY.encode())] == [
            b"x"
        ]


def test_multipart_reader_refuses_unfinished_or_malformed_answers() -> None:
    body = multipart([b"one", b"two"], close=False)
    with pytest.raises(_AnswerEnded) as ended:
        list(_read_parts(chunked(body, [5]), BOUNDARY.encode()))
    assert ended.value.n_parts == 1  # the second part may be incomplete: it is not given out
    cut = multipart([b"one", b"two"])[:-10]
    with pytest.raises(_AnswerEnded):
        list(_read_parts([cut], BOUNDARY.encode()))
    with pytest.raises(_Malformed, match="after a boundary"):
        list(_read_parts([multipart([b"one"], padding=b"junk")], BOUNDARY.encode()))


def test_large_parts_are_spooled_to_disk_and_hashed_as_they_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieve_module, "SPILL_BYTES", 1000)
    big, small = random.Random(3).randbytes(50_000), b"small"
    body = multipart([big, small])
    parts = list(_read_parts(chunked(body, [777]), BOUNDARY.encode(), _Destination(tmp_path)))
    assert parts[0].data is None and parts[0].path is not None
    assert parts[0].path.read_bytes() == big and parts[0].sha256 == sha256(big)
    assert parts[1].data == small and parts[1].path is None


# --------------------------------------------------------------------------- a fake PACS


def study_of(study_uid: str, names: tuple[str, ...] = ENCODINGS) -> list[bytes]:
    """pydicom's real files made into one study (UIDs rewritten, encodings kept)."""
    out = []
    for name in names:
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study_uid, name, "series"])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[study_uid, name, "sop"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


class FakePacs:
    """QIDO-RS and WADO-RS over files in memory, counting requests; ``answer`` injects faults."""

    def __init__(self, studies: dict[str, list[bytes]], delay: float = 0.0) -> None:
        self.files = {uids(data): data for datas in studies.values() for data in datas}
        self.counts = {study: len(datas) for study, datas in studies.items()}
        self.gets: list[str] = []
        self.study_queries: list[str] = []
        self.delay = delay
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.answer: Callable[[str, list[bytes]], bytes] = lambda url, parts: multipart(parts)

    # requests.Session
    def get(self, url: str, **kw: Any) -> requests.Response:
        with self.lock:
            self.gets.append(url)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            path = url.split("/dicom-web/", 1)[1].split("/")
            keys = sorted(self.files)
            wanted = [k for k in keys if k[0] == path[1]]
            if len(path) >= 4:
                wanted = [k for k in wanted if k[1] == path[3]]
            if len(path) >= 6:
                wanted = [k for k in wanted if k[2] == path[5]]
            response = requests.Response()
            response.status_code = 200 if wanted else 404
            response.raw = io.BytesIO(self.answer(url, [self.files[k] for k in wanted]))
            response.headers["Content-Type"] = (
                f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
            )
            response.url = url
            return response
        finally:
            with self.lock:
                self.active -= 1

    #: Whether a QIDO-RS query may name several studies (UID list matching, PS3.18 8.3.4.1).
    list_matching = False
    #: Whether study queries report Number of Study Related Instances (0020,1208).
    report_counts = True

    # dicomweb_client.DICOMwebClient
    def search_for_studies(self, search_filters: dict[str, str], **kw: Any) -> list[Any]:
        self.study_queries.append(search_filters["StudyInstanceUID"])
        asked = search_filters["StudyInstanceUID"]
        wanted = asked.split(",") if self.list_matching else [asked]
        return [
            {"0020000D": {"vr": "UI", "Value": [uid]}}
            | (
                {"00201208": {"vr": "IS", "Value": [self.counts[uid]]}}
                if self.report_counts
                else {}
            )
            for uid in wanted
            if uid in self.counts
        ]

    def search_for_instances(
        self,
        study_instance_uid: str,
        limit: int | None = None,
        offset: int | None = None,
        **kw: Any,
    ) -> list[Any]:
        found = [
            {"0020000E": {"vr": "UI", "Value": [k[1]]}, "00080018": {"vr": "UI", "Value": [k[2]]}}
            for k in sorted(self.files)
            if k[0] == study_instance_uid
        ]
        start = offset or 0
        return found[start : start + (limit or len(found))]

    def wado(self) -> list[str]:
        return [url.split("/dicom-web/", 1)[1] for url in self.gets]


class PatchableServer(DicomWebServer):
    """A server whose ``session`` and ``client`` a test may replace (no ``__slots__``)."""


def server_for(monkeypatch: pytest.MonkeyPatch, pacs: FakePacs) -> Any:
    server = PatchableServer("http://127.0.0.1:9/dicom-web")
    monkeypatch.setattr(server, "session", lambda: pacs)
    monkeypatch.setattr(server, "client", lambda: pacs)
    return server


def stored(root: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in (root / "dicom").rglob("*.dcm")}
    assert all(name == f"{sha256(data)}.dcm" for name, data in files.items())
    return files


STUDY_A = generate_uid(entropy_srcs=["workbench-tests", "study A"])
STUDY_B = generate_uid(entropy_srcs=["workbench-tests", "study B"])


@pytest.fixture(scope="module")
def two_studies() -> dict[str, list[bytes]]:
    return {STUDY_A: study_of(STUDY_A), STUDY_B: study_of(STUDY_B, ENCODINGS[:2])}


def test_each_study_comes_in_one_request_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_studies: dict[str, list[bytes]]
) -> None:
    pacs = FakePacs(two_studies)
    seen: list[tuple[int, int]] = []
    got = retrieve_studies(
        server_for(monkeypatch, pacs),
        [STUDY_B, STUDY_A],
        tmp_path,
        progress=lambda done, total, message: seen.append((done, total)),
    )
    assert sorted(pacs.wado()) == sorted([f"studies/{STUDY_A}", f"studies/{STUDY_B}"])
    everything = [data for datas in two_studies.values() for data in datas]
    assert sorted(stored(tmp_path).values()) == sorted(everything)
    assert [ref.study_uid for ref in got.instances] == [STUDY_B] * 2 + [STUDY_A] * 5
    listed = {(r.study_uid, r.series_uid, r.sop_uid) for r in got.instances}
    assert listed == {uids(data) for data in everything}
    assert got.outcome.n_fetched == 7 and got.outcome.n_skipped == 0
    assert got.outcome.n_bytes_fetched == sum(map(len, everything))
    by_sop = {uids(data)[2]: data for data in everything}
    for sop, rel in got.outcome.files.items():
        assert (tmp_path / rel).read_bytes() == by_sop[sop]
    # The total is known once the count query answers, which runs beside the retrieval.
    assert seen[-1] == (7, 7)
    assert all(done <= total for done, total in seen)
    assert not (tmp_path / ".incoming").exists()
    # Everything there: verified, nothing asked for but the counts.
    pacs.gets.clear()
    again = retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A, STUDY_B], tmp_path)
    assert pacs.gets == [] and again.outcome.n_skipped == 7 and again.outcome.n_fetched == 0
    assert set(again.instances) == set(got.instances)


def test_indexer_processes_index_what_is_retrieved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_studies: dict[str, list[bytes]]
) -> None:
    pacs = FakePacs(two_studies)
    monkeypatch.setattr(retrieve_module, "_INDEX_BATCH", 1)  # a batch per file
    with FolderIndexer(workers=2) as indexer:
        got = retrieve_studies(
            server_for(monkeypatch, pacs), [STUDY_A, STUDY_B], tmp_path, indexer=indexer
        )
        records = indexer.results()
        by_indexer = index_folder(tmp_path, indexer=indexer)
    everything = [data for datas in two_studies.values() for data in datas]
    assert sorted(stored(tmp_path).values()) == sorted(everything)
    assert set(records) == set(got.outcome.files.values())
    assert not list(tmp_path.rglob(".incoming*"))
    # The records made from the bytes written are those of reading the files back.
    read_back = index_folder(tmp_path, workers=1)
    for frame in ("files", "unreadable", "other_files", "skipped"):
        assert getattr(by_indexer, frame).equals(getattr(read_back, frame))
    assert by_indexer.hashes == read_back.hashes


def test_a_write_that_fails_fails_the_retrieval(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_studies: dict[str, list[bytes]]
) -> None:
    def disk_full(target: str, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(retrieve_module, "_write_file", disk_full)
    pacs = FakePacs(two_studies)
    with (
        FolderIndexer(workers=1) as indexer,
        pytest.raises(DicomWebError, match="No space left on device"),
    ):
        retrieve_studies(
            server_for(monkeypatch, pacs), [STUDY_A, STUDY_B], tmp_path, indexer=indexer
        )
    assert stored(tmp_path) == {}


def test_a_file_whose_write_fails_is_removed(tmp_path: Path) -> None:
    target = tmp_path / "ab.dcm"
    with pytest.raises(TypeError):
        retrieve_module._write_file(str(target), object())  # type: ignore[arg-type]
    assert not target.exists()


def test_files_left_half_written_are_removed_on_resume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_studies: dict[str, list[bytes]]
) -> None:
    pacs = FakePacs({STUDY_A: two_studies[STUDY_A]})
    folder = tmp_path / "dicom" / "ab"
    folder.mkdir(parents=True)
    (folder / ".incoming-123-4.part").write_bytes(two_studies[STUDY_A][0][:100])
    done = retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path)
    assert done.outcome.n_fetched == 5 and done.outcome.n_removed == 0
    assert not list(tmp_path.rglob(".incoming*"))
    assert sorted(stored(tmp_path).values()) == sorted(two_studies[STUDY_A])


def drop_last(url: str, parts: list[bytes]) -> bytes:
    return multipart(parts[:-1])


def twice(url: str, parts: list[bytes]) -> bytes:
    return multipart(parts + parts[:1])


def cut_answer(url: str, parts: list[bytes]) -> bytes:
    return multipart(parts)[:-200]


def declared_other_syntax(url: str, parts: list[bytes]) -> bytes:
    head = 'Content-Type: application/dicom; transfer-syntax="1.2.840.10008.1.2.4.50"\r\n'
    return multipart(parts, headers=[head] * len(parts))


def truncated_file(url: str, parts: list[bytes]) -> bytes:
    return multipart([parts[0][:-10], *parts[1:]])


def not_dicom(url: str, parts: list[bytes]) -> bytes:
    return multipart([b"not a DICOM file", *parts[1:]])


def short_content_length(url: str, parts: list[bytes]) -> bytes:
    head = f"Content-Type: application/dicom\r\nContent-Length: {len(parts[0]) + 5}\r\n"
    return multipart(parts, headers=[head] + ["Content-Type: application/dicom\r\n"] * 4)


@pytest.mark.parametrize("list_matching", [True, False])
def test_study_counts_take_one_query_where_the_server_matches_uid_lists(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    two_studies: dict[str, list[bytes]],
    list_matching: bool,
) -> None:
    pacs = FakePacs(two_studies)
    pacs.list_matching = list_matching
    got = retrieve_studies(server_for(monkeypatch, pacs), [STUDY_B, STUDY_A], tmp_path)
    assert got.outcome.n_fetched == 7
    if list_matching:
        assert pacs.study_queries == [f"{STUDY_B},{STUDY_A}"]
    else:  # the list query answers nothing: each study is asked for on its own
        assert pacs.study_queries[0] == f"{STUDY_B},{STUDY_A}"
        assert sorted(pacs.study_queries[1:]) == sorted([STUDY_A, STUDY_B])
    unknown = generate_uid(entropy_srcs=["workbench-tests", "no such study"])
    with pytest.raises(DicomWebError, match=f"has no study {unknown}"):
        retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A, unknown], tmp_path / "x")


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (drop_last, f"sent 4 instance\\(s\\) of study {STUDY_A}, expected 5 .*partial results"),
        (twice, "sent instance .* of study .* twice in the instances of study"),
        (
            cut_answer,
            f"Cannot reach the DICOMweb server .* to finish the instances of study {STUDY_A}",
        ),
        (declared_other_syntax, "declared transfer syntax 1.2.840.10008.1.2.4.50 .* but sent"),
        (not_dicom, "invalid DICOM file for part 1 of the instances of study"),
        (short_content_length, "bytes of part 1 of the instances of study .*truncated"),
    ],
)
@pytest.mark.parametrize("in_processes", [False, True], ids=["here", "indexer"])
def test_study_faults_are_one_line_naming_the_study(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    two_studies: dict[str, list[bytes]],
    fault: Callable[[str, list[bytes]], bytes],
    message: str,
    in_processes: bool,
) -> None:
    pacs = FakePacs({STUDY_A: two_studies[STUDY_A]})
    pacs.answer = fault
    with (
        FolderIndexer(workers=2) if in_processes else contextlib.nullcontext() as indexer,
        pytest.raises(DicomWebError, match=message) as failure,
    ):
        retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path, indexer=indexer)
    assert "\n" not in str(failure.value)
    # Whatever was stored before the fault is complete and under its own hash.
    assert set(stored(tmp_path).values()) <= set(two_studies[STUDY_A])
    assert not (tmp_path / ".incoming").exists()


def test_studies_are_counted_while_they_arrive_and_checked_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_studies: dict[str, list[bytes]]
) -> None:
    pacs = FakePacs(two_studies, delay=0.05)
    pacs.list_matching = True
    reports: list[tuple[int, int]] = []
    got = retrieve_studies(
        server_for(monkeypatch, pacs),
        [STUDY_A, STUDY_B],
        tmp_path,
        progress=lambda done, total, message: reports.append((done, total)),
    )
    assert pacs.study_queries == [f"{STUDY_A},{STUDY_B}"]  # one count query for both
    assert {ref.n_study_instances for ref in got.instances} == {5, 2}
    assert reports[-1] == (7, 7) and all(done <= total for done, total in reports)


@pytest.mark.parametrize("fault", [None, drop_last], ids=["whole", "one-missing"])
def test_a_server_without_counts_is_checked_against_its_listing(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    two_studies: dict[str, list[bytes]],
    fault: Callable[[str, list[bytes]], bytes] | None,
) -> None:
    pacs = FakePacs({STUDY_A: two_studies[STUDY_A]})
    pacs.report_counts = False
    if fault is None:
        got = retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path)
        assert got.outcome.n_fetched == 5
        assert sorted(stored(tmp_path).values()) == sorted(two_studies[STUDY_A])
        return
    pacs.answer = fault
    with pytest.raises(DicomWebError, match="sent 4 instance.*expected 5 .its QIDO-RS instance"):
        retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path)
    # What came is kept, and the next run fetches only the missing instance.
    pacs.answer = lambda url, parts: multipart(parts)
    again = retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path)
    assert again.outcome.n_skipped == 4 and again.outcome.n_fetched == 1
    assert sorted(stored(tmp_path).values()) == sorted(two_studies[STUDY_A])


def test_a_file_the_server_holds_cut_short_is_kept_as_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_studies: dict[str, list[bytes]]
) -> None:
    # The answer is whole (closing boundary, no Content-Length to miss): the file is how the
    # PACS holds it, so it is kept byte for byte and indexing reports it, as for a folder.
    pacs = FakePacs({STUDY_A: two_studies[STUDY_A]})
    pacs.answer = truncated_file
    done = retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path)
    sent = [pacs.files[key] for key in sorted(pacs.files)]  # the fake's order
    assert done.outcome.n_fetched == 5
    assert sorted(stored(tmp_path).values()) == sorted([sent[0][:-10], *sent[1:]])
    with pytest.raises(_Truncated):
        _read_identity(sent[0][:-10])


def test_another_studys_instance_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_studies: dict[str, list[bytes]]
) -> None:
    pacs = FakePacs(two_studies)
    pacs.answer = lambda url, parts: multipart(two_studies[STUDY_B][:1] + parts[1:])
    with pytest.raises(DicomWebError, match=f"of study {STUDY_B} when asked for .*{STUDY_A}"):
        retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path)
    with pytest.raises(DicomWebError, match="has no study 1.2.3.4"):
        retrieve_studies(server_for(monkeypatch, pacs), ["1.2.3.4"], tmp_path)


@pytest.mark.parametrize("in_processes", [False, True], ids=["here", "indexer"])
def test_partly_retrieved_study_fetches_only_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    two_studies: dict[str, list[bytes]],
    in_processes: bool,
) -> None:
    pacs = FakePacs({STUDY_A: two_studies[STUDY_A]})
    pacs.answer = drop_last
    with (
        FolderIndexer(workers=2) if in_processes else contextlib.nullcontext() as indexer,
        pytest.raises(DicomWebError, match="partial results"),
    ):
        retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path, indexer=indexer)
    # What arrived before the failure is written (by the indexer's processes, too).
    assert len(stored(tmp_path)) == 4
    pacs.answer = lambda url, parts: multipart(parts)
    pacs.gets.clear()
    done = retrieve_studies(server_for(monkeypatch, pacs), [STUDY_A], tmp_path)
    missing = uids(sorted(pacs.files.items())[-1][1])
    assert pacs.wado() == [f"studies/{missing[0]}/series/{missing[1]}/instances/{missing[2]}"]
    assert done.outcome.n_skipped == 4 and done.outcome.n_fetched == 1
    assert sorted(stored(tmp_path).values()) == sorted(two_studies[STUDY_A])


def test_requests_run_at_once_but_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    studies = {
        uid: study_of(uid, ENCODINGS[:1])
        for uid in (generate_uid(entropy_srcs=["workbench-tests", str(k)]) for k in range(6))
    }
    pacs = FakePacs(studies, delay=0.2)
    retrieve_studies(server_for(monkeypatch, pacs), list(studies), tmp_path, workers=2)
    assert len(pacs.wado()) == 6 and pacs.max_active == 2


def test_a_listed_study_is_retrieved_in_one_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_studies: dict[str, list[bytes]]
) -> None:
    pacs = FakePacs(two_studies)
    server = server_for(monkeypatch, pacs)
    refs = list_study_instances(server, STUDY_A) + list_study_instances(server, STUDY_B)
    assert {ref.n_study_instances for ref in refs} == {5, 2}
    outcome = retrieve_instances(server, refs, tmp_path)
    assert sorted(pacs.wado()) == sorted([f"studies/{STUDY_A}", f"studies/{STUDY_B}"])
    assert outcome.n_fetched == 7 and len(stored(tmp_path)) == 7
    # A listing that does not hold the whole study is retrieved series by series instead.
    pacs.gets.clear()
    part = [ref for ref in refs if ref.study_uid == STUDY_A][:2]
    retrieve_instances(server, part, tmp_path / "part")
    assert all("/series/" in url for url in pacs.wado()) and len(pacs.wado()) == 2


# --------------------------------------------------------------------------- a real Orthanc


def test_study_level_intake_from_orthanc_is_byte_for_byte_and_resumable(
    orthanc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness

    synth = harness.synth(tmp_path / "synth", n_cases=2, seed=29)
    files = sorted(synth.rglob("*.dcm")) + [Path(str(get_testdata_file("JPEG2000.dcm")))]
    with requests.Session() as session:
        session.auth = (orthanc.user, orthanc.password)
        for path in files:
            session.post(f"{orthanc.rest}/instances", data=path.read_bytes(), timeout=30)
    studies = sorted({uids(p.read_bytes())[0] for p in files})
    server = DicomWebServer(
        orthanc.url, credentials=Credentials(user=orthanc.user, password=orthanc.password)
    )
    urls: list[str] = []
    real_get = requests.Session.get

    def counting_get(self: requests.Session, url: str, **kw: Any) -> requests.Response:
        urls.append(url)
        return real_get(self, url, **kw)

    monkeypatch.setattr(requests.Session, "get", counting_get)
    dest = tmp_path / "intake"
    done = retrieve_studies(server, studies, dest)
    wado = [u for u in urls if "/instances" not in u and "/studies?" not in u and "/studies/" in u]
    assert len(wado) == len(studies)  # one WADO-RS request per study
    # Other modules store files of the same real study (JPEG-LL.dcm shares JPEG2000.dcm's)
    # in the run's shared Orthanc: whole studies bring those too.
    listed = [r for uid in studies for r in list_study_instances(server, uid)]
    uploaded = Counter(p.read_bytes() for p in files)
    assert not uploaded - Counter(stored(dest).values())  # each uploaded file byte for byte
    assert len(stored(dest)) == len(listed)
    assert [(r.study_uid, r.series_uid, r.sop_uid) for r in done.instances] == [
        (r.study_uid, r.series_uid, r.sop_uid) for r in listed
    ]
    # Damage and losses of an interrupted run: only those are fetched again.
    paths = sorted((dest / "dicom").rglob("*.dcm"))
    for path in paths[:3]:
        path.unlink()
    paths[3].write_bytes(paths[3].read_bytes()[:500])
    urls.clear()
    again = retrieve_studies(server, studies, dest)
    assert again.outcome.n_fetched == 4 and again.outcome.n_skipped == len(listed) - 4
    assert again.outcome.n_removed == 1
    assert not uploaded - Counter(stored(dest).values()) and len(stored(dest)) == len(listed)
    assert not any(u.rstrip("/").endswith(tuple(studies)) for u in urls)  # no whole study again


def _payload(data: bytes) -> _Payload:
    return _Payload({}, len(data), hashlib.sha256(data).hexdigest(), data, None)


def test_the_writer_holds_a_bounded_number_of_bytes_and_writes_everything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(retrieve_module, "_WRITE_QUEUE_BYTES", 100)
    write = _Destination._write
    held: list[int] = []

    def slow_write(self: _Destination, rel: str, payload: _Payload) -> None:
        held.append(self._queued_bytes)
        time.sleep(0.01)
        write(self, rel, payload)

    monkeypatch.setattr(_Destination, "_write", slow_write)
    datas = [bytes([i]) * 60 for i in range(10)]
    with _Destination(tmp_path) as dest:
        rels = [dest.store(_payload(data)) for data in datas]
    assert max(held) <= 100  # one 60-byte part at a time: the receiving thread waited
    assert [(tmp_path / rel).read_bytes() for rel in rels] == datas
    with pytest.raises(RuntimeError, match="outside"):
        dest.store(_payload(b"c"))  # a closed destination takes nothing more


def test_a_writer_that_fails_otherwise_reports_it_and_never_hangs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(retrieve_module, "_WRITE_QUEUE_BYTES", 100)

    def broken(self: _Destination, rel: str, payload: _Payload) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(_Destination, "_write", broken)
    # Raised by a later store, which does not hang, and again on leaving.
    with pytest.raises(DicomWebError, match="unexpected"), _Destination(tmp_path) as dest:
        dest.store(_payload(b"a" * 60))
        with pytest.raises(DicomWebError, match="Could not write .*: unexpected"):
            for _ in range(20):
                dest.store(_payload(b"b" * 60))
                time.sleep(0.01)
    assert not list(tmp_path.rglob("*.dcm"))
