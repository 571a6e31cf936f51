"""Query (QIDO-RS) and retrieve (WADO-RS) instances byte for byte, resumably.

Studies are found with QIDO-RS (PS3.18 10.6). Instances are retrieved with
WADO-RS (PS3.18 10.4) asking for
``multipart/related; type="application/dicom"; transfer-syntax=*``, i.e. in the
transfer syntax the server stores them in, and written exactly as received.

Two ways in:

- :func:`retrieve_studies` asks QIDO-RS only for each study's Number of Study
  Related Instances and retrieves the whole study in one WADO-RS request; the
  instance list is what the answer holds, checked part by part and against that
  number. This is the fast path: a server such as Orthanc reads every stored
  file to answer an instance-level QIDO-RS query, while it streams a study's
  files as they are.
- :func:`list_study_instances` then :func:`retrieve_instances` list every
  instance first (QIDO-RS) and retrieve what is listed, a whole study, a whole
  series or single instances per request.

Answers are read as a stream: each part (one instance) is hashed as it arrives,
kept in memory up to :data:`SPILL_BYTES` and beyond that spooled to disk, then
checked before it is stored: complete as sent (it ends at a boundary of an
answer that reaches its closing boundary, at its Content-Length when the server
gives one), DICOM, the SOP Instance asked for (file meta and data set agree), of
the requested study, in the transfer syntax the server declares. The attributes
are read straight from the bytes without a full parse; pydicom reads what that
reader does not follow.
Several requests run at once on a bounded pool of threads, each with its own
keep-alive HTTP session; one more thread writes the checked parts, holding at
most :data:`_WRITE_QUEUE_BYTES` of them in memory while they wait.

Files are content-addressed: ``dicom/<sha[:2]>/<sha256>.dcm`` under the
destination folder, written once checked (parts spooled to disk are renamed
into place). A retrieval that stops half-way (server down, timeout, killed
process) is resumed by running it again: every file already present is
re-hashed against its name and identified (a file cut short, whose hash is not
its name, is removed), and only what is missing is fetched. The import keeps
the destination apart (``<name>.partial``) until everything is retrieved.

Given a :class:`~workbench.dicom.index.FolderIndexer`, :func:`retrieve_studies`
hands the files it wrote (with the SHA-256 computed here) to its processes,
which index them while the next ones arrive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import mmap
import os
import queue
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from workbench.dicom import _raw
from workbench.dicom.index import FolderIndexer
from workbench.dicomweb.connection import DicomWebServer, describe_failure
from workbench.errors import DicomWebError

__all__ = [
    "InstanceRef",
    "RetrievalOutcome",
    "StudyRetrieval",
    "list_study_instances",
    "parse_query",
    "retrieve_instances",
    "retrieve_studies",
    "search_studies",
]

Progress = Callable[[int, int, str], None]

#: Accept header of WADO-RS instance retrieval: any transfer syntax, as stored (PS3.18 8.7.3.5).
ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'

#: Folder of the retrieved files below the destination.
DICOM_FOLDER = "dicom"

#: A part larger than this is spooled to disk while it arrives instead of kept in memory.
SPILL_BYTES = 32 << 20

_INCOMING = ".incoming"
#: Files being written next to their final name start with this (never a content address).
_TEMPORARY_PREFIX = ".incoming-"
_SHA_NAME = re.compile(r"^[0-9a-f]{64}\.dcm$")
_CHUNK = 1 << 18

# QIDO-RS attribute tags (PS3.18 Table 10.6.3-3/-5).
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_SOP_CLASS = "00080016"
_AVAILABLE_TS = "00083002"
_N_STUDY_INSTANCES = "00201208"


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """One instance found by QIDO-RS (or in a study-level WADO-RS answer).

    Parameters
    ----------
    study_uid, series_uid, sop_uid : str
    sop_class_uid : str or None
    transfer_syntax_uid : str or None
        Available Transfer Syntax UID (0008,3002) when the server reports it: the
        syntax the instance is stored in, checked against what is received.
    n_study_instances : int or None
        The study's Number of Study Related Instances (0020,1208) when it was
        listed; when a retrieval holds that many instances of the study it asks
        for the whole study in one request.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str | None = None
    transfer_syntax_uid: str | None = None
    n_study_instances: int | None = None

    @property
    def label(self) -> str:
        """``instance <sop> of study <study>`` for messages."""
        return f"instance {self.sop_uid} of study {self.study_uid}"


@dataclass(frozen=True, slots=True)
class RetrievalOutcome:
    """What :func:`retrieve_instances` left in the destination.

    Parameters
    ----------
    files : dict
        ``{sop_instance_uid: relative path}`` of every wanted instance.
    n_fetched : int
        Instances retrieved in this call.
    n_skipped : int
        Instances already present and verified (resumed retrieval).
    n_bytes_fetched : int
    n_removed : int
        Files dropped: damaged, or not among the wanted instances.
    """

    files: dict[str, str]
    n_fetched: int
    n_skipped: int
    n_bytes_fetched: int
    n_removed: int = 0


@dataclass(frozen=True, slots=True)
class StudyRetrieval:
    """What :func:`retrieve_studies` found and left in the destination.

    Parameters
    ----------
    instances : tuple of InstanceRef
        Every instance of the studies, study by study in the order asked, then
        by Series and SOP Instance UID (as :func:`list_study_instances`).
    outcome : RetrievalOutcome
        Files, and what was fetched now or found already retrieved.
    """

    instances: tuple[InstanceRef, ...]
    outcome: RetrievalOutcome


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or []
    return values[0] if values else None


def parse_query(query: str) -> dict[str, str]:
    """Parse ``"ModalitiesInStudy=CT&StudyDate=20240101-20241231"`` into QIDO-RS filters.

    Keys are attribute keywords or 8-digit tags (PS3.18 8.3.4).

    Raises
    ------
    DicomWebError
        A term is not ``key=value`` or the key is no DICOM keyword or tag.
    """
    from pydicom.datadict import tag_for_keyword

    filters: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in query.split("&"))):
        key, sep, value = term.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DicomWebError(
                f"Expected query terms KEYWORD=VALUE joined by '&', found {term!r}."
            )
        if tag_for_keyword(key) is None and not re.fullmatch(r"[0-9A-Fa-f]{8}", key):
            raise DicomWebError(
                f"Query key {key!r} is not a DICOM attribute keyword or tag "
                "(e.g. ModalitiesInStudy, StudyDate, 00080061)."
            )
        filters[key] = value.strip()
    if not filters:
        raise DicomWebError("Expected at least one query term such as 'ModalitiesInStudy=CT'.")
    return filters


#: QIDO-RS page size when paging through a server that limits its answers.
PAGE_SIZE = 1000


def search_all(
    search: Callable[..., list[dict[str, Any]]],
    key_tag: str,
    *,
    limit: int | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Every result of a QIDO-RS search, paging with ``offset`` (PS3.18 8.3.4.4).

    Paging stops at an empty or short page, or at a page that brings nothing
    new (servers that ignore ``offset`` would otherwise repeat forever).
    """
    results: list[dict[str, Any]] = []
    seen: set[str] = set()
    offset = 0
    while True:
        size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(results))
        if size <= 0:
            return results
        page = search(limit=size, offset=offset or None, **kwargs)
        new = [item for item in page if str(_value(item, key_tag)) not in seen]
        for item in new:
            seen.add(str(_value(item, key_tag)))
        results.extend(new)
        if len(page) < size or not new:
            return results
        offset += len(page)


def search_studies(
    server: DicomWebServer, filters: dict[str, str], *, limit: int | None = None
) -> list[str]:
    """Study Instance UIDs matching QIDO-RS ``filters`` (PS3.18 10.6), server order.

    Parameters
    ----------
    server : DicomWebServer
    filters : dict
        From :func:`parse_query`.
    limit : int, optional
        At most this many studies.

    Returns
    -------
    list of str
    """
    try:
        found = search_all(
            server.client().search_for_studies, _STUDY_UID, search_filters=filters, limit=limit
        )
    except Exception as exc:
        raise describe_failure(server, exc, f"the study query {filters}") from exc
    uids: list[str] = []
    for item in found:
        uid = _value(item, _STUDY_UID)
        if uid and uid not in uids:
            uids.append(str(uid))
    return uids[:limit] if limit is not None else uids


def _study_instance_count(server: DicomWebServer, study_uid: str) -> int | None:
    """The study's Number of Study Related Instances (QIDO-RS), None when not reported."""
    try:
        studies = server.client().search_for_studies(
            search_filters={"StudyInstanceUID": study_uid},
            fields=["NumberOfStudyRelatedInstances"],
        )
    except Exception as exc:
        raise describe_failure(server, exc, f"study {study_uid}") from exc
    if not studies:
        raise DicomWebError(f"{server.public_url} has no study {study_uid}.")
    expected = _value(studies[0], _N_STUDY_INSTANCES)
    try:
        return int(expected) if expected is not None else None
    except (TypeError, ValueError):
        return None


#: Studies asked for in one QIDO-RS request (UID list matching, PS3.18 8.3.4.1).
COUNT_BATCH = 40


def _study_instance_counts(
    server: DicomWebServer, study_uids: Sequence[str], workers: int
) -> dict[str, int | None]:
    """Number of Study Related Instances of every study, in few QIDO-RS requests.

    Studies are asked for in batches by UID list matching (``StudyInstanceUID=a,b,...``);
    a study a batch does not answer for (a server without list matching answers none, or
    a failing request) is asked for on its own, which names an unknown study.
    """
    counts: dict[str, int | None] = {}
    wanted = set(study_uids)

    def batch(uids: Sequence[str]) -> dict[str, int | None]:
        try:
            found = server.client().search_for_studies(
                search_filters={"StudyInstanceUID": ",".join(uids)},
                fields=["NumberOfStudyRelatedInstances"],
                limit=len(uids),
            )
        except Exception:
            return {}  # asked for one by one below, where a failure is reported
        out: dict[str, int | None] = {}
        for item in found:
            uid = _value(item, "0020000D")
            if uid is None or str(uid) not in wanted:
                continue
            expected = _value(item, _N_STUDY_INSTANCES)
            try:
                out[str(uid)] = int(expected) if expected is not None else None
            except (TypeError, ValueError):
                out[str(uid)] = None
        return out

    step = COUNT_BATCH
    batches = [list(study_uids[i : i + step]) for i in range(0, len(study_uids), step)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for answered in pool.map(batch, batches):
            counts.update(answered)
        missing = [uid for uid in study_uids if uid not in counts]
        for uid, count in zip(
            missing, pool.map(lambda uid: _study_instance_count(server, uid), missing), strict=True
        ):
            counts[uid] = count
    return {uid: counts[uid] for uid in study_uids}


def list_study_instances(server: DicomWebServer, study_uid: str) -> list[InstanceRef]:
    """Every instance of a study (QIDO-RS), checked against the study's instance count.

    Raises
    ------
    DicomWebError
        The study is unknown, the server fails, or it lists fewer instances than
        its Number of Study Related Instances (partial results).
    """
    expected = _study_instance_count(server, study_uid)
    try:
        found = search_all(
            server.client().search_for_instances,
            _SOP_UID,
            study_instance_uid=study_uid,
            fields=["AvailableTransferSyntaxUID", "SOPClassUID"],
        )
    except Exception as exc:
        raise describe_failure(server, exc, f"study {study_uid}") from exc
    refs: dict[str, InstanceRef] = {}
    for item in found:
        sop, series = _value(item, _SOP_UID), _value(item, _SERIES_UID)
        if not sop or not series:
            raise DicomWebError(
                f"{server.public_url} listed an instance of study {study_uid} without "
                "SOP Instance UID or Series Instance UID."
            )
        ts = _value(item, _AVAILABLE_TS)
        refs[str(sop)] = InstanceRef(
            study_uid=study_uid,
            series_uid=str(series),
            sop_uid=str(sop),
            sop_class_uid=str(_value(item, _SOP_CLASS) or "") or None,
            transfer_syntax_uid=str(ts) if ts else None,
            n_study_instances=expected,
        )
    if not refs:
        raise DicomWebError(f"{server.public_url} lists no instances in study {study_uid}.")
    if expected is not None and expected != len(refs):
        raise DicomWebError(
            f"{server.public_url} lists {len(refs)} instance(s) of study {study_uid}, "
            f"expected {expected} (Number of Study Related Instances): partial results; "
            "nothing was imported."
        )
    return sorted(refs.values(), key=lambda r: (r.series_uid, r.sop_uid))


# --------------------------------------------------------------------------- DICOM files
#
# What a retrieved file must be is read straight from its bytes (workbench.dicom._raw):
# the identifying attributes, and proof that the declared lengths end exactly at the end
# of the file. Encodings the reader does not follow are left to pydicom.

_Buffer = _raw.Buffer
_Truncated = _raw.Truncated
_NotWalked = _raw.NotWalked
_TAG_SOP_CLASS = 0x00080016
_TAG_SOP_INSTANCE = 0x00080018
_TAG_STUDY = 0x0020000D
_TAG_SERIES = 0x0020000E
_IDENTITY_TAGS = frozenset({_TAG_SOP_CLASS, _TAG_SOP_INSTANCE, _TAG_STUDY, _TAG_SERIES})


@dataclass(frozen=True, slots=True)
class _Identity:
    sop_uid: str
    meta_sop_uid: str | None
    transfer_syntax_uid: str
    study_uid: str | None
    series_uid: str | None
    sop_class_uid: str | None


def _read_identity(buf: _Buffer) -> _Identity:
    """Identify a DICOM file and check that it is complete, without a full parse.

    Raises ``_Truncated`` (incomplete) or ``_NotWalked`` (left to pydicom).
    """
    meta, pos = _raw.read_file_meta(buf)
    transfer_syntax, explicit, layout = _raw.data_set_encoding(buf, meta, pos)
    found: dict[int, bytes] = {}
    _raw.walk_dataset(buf, pos, explicit, layout, found, 0, in_item=False, wanted=_IDENTITY_TAGS)
    sop = _raw.text(found.get(_TAG_SOP_INSTANCE))
    if sop is None:
        raise _NotWalked("no SOP Instance UID in the data set")
    return _Identity(
        sop_uid=sop,
        meta_sop_uid=_raw.text(meta.get(0x0003)),
        transfer_syntax_uid=transfer_syntax,
        study_uid=_raw.text(found.get(_TAG_STUDY)),
        series_uid=_raw.text(found.get(_TAG_SERIES)),
        sop_class_uid=_raw.text(found.get(_TAG_SOP_CLASS)),
    )


def _identity_by_pydicom(source: bytes | Path) -> _Identity:
    ds = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)
    ds.get("PixelData")  # forces reading to the end
    meta_sop = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") or "") or None
    sop = str(ds.get("SOPInstanceUID", "") or "") or meta_sop
    if sop is None:
        raise ValueError("no SOP Instance UID")
    return _Identity(
        sop_uid=sop,
        meta_sop_uid=meta_sop,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        study_uid=str(ds.get("StudyInstanceUID", "") or "") or None,
        series_uid=str(ds.get("SeriesInstanceUID", "") or "") or None,
        sop_class_uid=str(ds.get("SOPClassUID", "") or "") or None,
    )


def _identify(sender: str, label: str, payload: _Payload) -> _Identity:
    """The identity of a file received from ``sender``; an invalid one is named with ``label``.

    A file that arrived whole (its part ended at a boundary, at its Content-Length)
    but whose own lengths run past its end is how the server holds it: it is
    identified by pydicom and kept byte for byte, and indexing the test set
    reports it as truncated, as for a folder import.
    """
    with payload.buffer() as buf:
        try:
            return _read_identity(buf)
        except (_Truncated, _NotWalked):
            pass
    source = payload.data if payload.data is not None else payload.path
    assert source is not None
    try:
        return _identity_by_pydicom(source)
    except (InvalidDicomError, AttributeError, EOFError, ValueError, OSError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise DicomWebError(f"{sender} sent an invalid DICOM file for {label}: {detail}") from exc


# --------------------------------------------------------------------------- multipart


class _Malformed(Exception):
    """The answer is not a well-formed multipart/related body."""


class _AnswerEnded(Exception):
    """The answer stopped before its closing boundary."""

    def __init__(self, n_parts: int) -> None:
        super().__init__(n_parts)
        self.n_parts = n_parts


@dataclass(frozen=True, slots=True)
class _Payload:
    """One received part: in memory (``data``) or spooled to ``path``."""

    headers: dict[str, str]
    size: int
    sha256: str
    data: bytes | None
    path: Path | None

    @contextmanager
    def buffer(self) -> Iterator[_Buffer]:
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        with self.path.open("rb") as handle:
            if self.size == 0:
                yield b""
                return
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                yield mapped


class _PartSink:
    """Collects one part while it arrives, hashing it; spools large parts to ``spool``."""

    def __init__(self, headers: dict[str, str], spool: _Destination | None) -> None:
        self.headers = headers
        self.spool = spool
        self.chunks: list[bytes] = []
        self.size = 0
        self.digest = hashlib.sha256()
        self.handle: Any = None
        self.path: Path | None = None

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        if self.handle is not None:
            self.handle.write(data)
            return
        self.chunks.append(data)
        if self.spool is not None and self.size > SPILL_BYTES:
            fd, name = self.spool.temporary()
            self.path = Path(name)
            self.handle = os.fdopen(fd, "wb")
            for chunk in self.chunks:
                self.handle.write(chunk)
            self.chunks = []

    def finish(self) -> _Payload:
        if self.handle is not None:
            self.handle.close()
            return _Payload(self.headers, self.size, self.digest.hexdigest(), None, self.path)
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return _Payload(self.headers, self.size, self.digest.hexdigest(), data, None)


def _boundary(content_type: str) -> bytes:
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    if not match:
        raise DicomWebError(
            f"Expected a multipart/related answer with a boundary, found {content_type!r}."
        )
    return match.group(1).strip().encode("ascii")


def _part_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _read_parts(
    chunks: Iterable[bytes], boundary: bytes, spool: _Destination | None = None
) -> Iterator[_Payload]:
    """The parts of a ``multipart/related`` stream (RFC 2046 5.1.1, PS3.18 8.7.1.2), in order.

    Holds at most one part (up to :data:`SPILL_BYTES`) and one chunk in memory.
    Raises ``_Malformed``, or ``_AnswerEnded`` when the stream stops before the
    closing boundary.
    """
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) - 1
    buf = bytearray(b"\r\n")  # the first boundary may open the body without a line break
    started = False  # past the first boundary (before it: the preamble, ignored)
    sink: _PartSink | None = None
    n_parts = 0
    for chunk in chunks:
        buf += chunk
        while True:
            if sink is None and started:
                # Part headers, up to the empty line.
                if buf.startswith(b"\r\n"):
                    raw_headers = b""
                    del buf[:2]
                else:
                    stop = buf.find(b"\r\n\r\n")
                    if stop < 0:
                        if len(buf) > 1 << 16:
                            raise _Malformed("a part's headers do not end")
                        break
                    raw_headers = bytes(buf[:stop])
                    del buf[: stop + 4]
                sink = _PartSink(_part_headers(raw_headers), spool)
            at = buf.find(delimiter)
            if at < 0:
                safe = len(buf) - keep
                if safe > 0:
                    if sink is not None:
                        sink.write(bytes(buf[:safe]))
                    del buf[:safe]
                break
            line_end = buf.find(b"\r\n", at + len(delimiter))
            if line_end < 0:
                if sink is not None and at > 0:
                    sink.write(bytes(buf[:at]))
                    del buf[:at]
                break
            if sink is not None:
                sink.write(bytes(buf[:at]))
                n_parts += 1
                yield sink.finish()
                sink = None
            rest = bytes(buf[at + len(delimiter) : line_end])
            del buf[: line_end + 2]
            if rest.startswith(b"--"):
                return  # closing boundary; the epilogue is ignored
            if rest.strip(b" \t"):
                raise _Malformed(f"unexpected text {rest[:40]!r} after a boundary")
            started = True
    # The closing boundary may end the stream without a line break.
    at = buf.find(delimiter)
    if at >= 0 and buf[at + len(delimiter) : at + len(delimiter) + 2] == b"--":
        if sink is not None:
            sink.write(bytes(buf[:at]))
            yield sink.finish()
        return
    raise _AnswerEnded(n_parts)


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/related`` body (RFC 2387, PS3.18 8.7.1.2) into (headers, payload).

    Raises
    ------
    DicomWebError
        No boundary in ``content_type``, a malformed body, or no closing boundary.
    """
    try:
        return [
            (part.headers, part.data or b"")
            for part in _read_parts([body], _boundary(content_type))
        ]
    except _Malformed as exc:
        raise DicomWebError(f"A multipart answer is malformed: {exc}.") from exc
    except _AnswerEnded as exc:
        raise DicomWebError(
            f"A multipart answer ends after {exc.n_parts} part(s) without its closing boundary."
        ) from exc


def _transfer_syntax_param(content_type: str) -> str | None:
    match = re.search(r'transfer-syntax="?([0-9.]+)"?', content_type, flags=re.IGNORECASE)
    return match.group(1) if match else None


# --------------------------------------------------------------------------- retrieval units


@dataclass(frozen=True, slots=True)
class _Unit:
    """One WADO-RS request: a study, a series or an instance.

    ``expected`` lists the instances it must bring exactly; when it is None (a
    study retrieved without an instance listing) the answer must hold
    ``expected_count`` distinct instances of ``study_uid``.
    """

    url: str
    what: str
    study_uid: str
    expected: Mapping[str, InstanceRef] | None
    expected_count: int | None = None


@dataclass(frozen=True, slots=True)
class _Received:
    """A checked instance: stored under ``rel``, or its bytes in ``data`` (nothing stored)."""

    ref: InstanceRef
    size: int
    rel: str | None
    data: bytes | None


def _instance_unit(server: DicomWebServer, ref: InstanceRef) -> _Unit:
    url = f"{server.url}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"
    return _Unit(url, ref.label, ref.study_uid, {ref.sop_uid: ref})


def _series_unit(server: DicomWebServer, refs: Sequence[InstanceRef]) -> _Unit:
    first = refs[0]
    url = f"{server.url}/studies/{first.study_uid}/series/{first.series_uid}"
    what = f"series {first.series_uid} of study {first.study_uid}"
    return _Unit(url, what, first.study_uid, {ref.sop_uid: ref for ref in refs})


def _study_unit(
    server: DicomWebServer, study_uid: str, refs: Sequence[InstanceRef] | None, count: int | None
) -> _Unit:
    url = f"{server.url}/studies/{study_uid}"
    what = f"the instances of study {study_uid}"
    expected = None if refs is None else {ref.sop_uid: ref for ref in refs}
    return _Unit(url, what, study_uid, expected, count)


@contextmanager
def _answer(server: DicomWebServer, unit: _Unit) -> Iterator[tuple[str, Iterator[bytes]]]:
    """Content type and body chunks of the WADO-RS answer to ``unit``."""
    try:
        response = server.session().get(
            unit.url, headers={"Accept": ACCEPT_AS_STORED}, timeout=server.timeout, stream=True
        )
    except Exception as exc:
        raise describe_failure(server, exc, unit.what) from exc
    try:
        try:
            response.raise_for_status()
        except Exception as exc:
            raise describe_failure(server, exc, unit.what) from exc
        yield response.headers.get("Content-Type", ""), response.iter_content(_CHUNK)
    finally:
        response.close()


def _single_part(
    chunks: Iterable[bytes], content_type: str, spool: _Destination | None
) -> Iterator[_Payload]:
    sink = _PartSink({"content-type": content_type}, spool)
    for chunk in chunks:
        sink.write(chunk)
    yield sink.finish()


def _accept(
    server: DicomWebServer, unit: _Unit, payload: _Payload, index: int, seen: Mapping[str, Any]
) -> InstanceRef:
    """The instance ``payload`` is, once checked against what ``unit`` asked for."""
    only = next(iter(unit.expected.values())) if unit.expected and len(unit.expected) == 1 else None
    label = only.label if only is not None else f"part {index} of {unit.what}"
    declared = payload.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) != payload.size:
        raise DicomWebError(
            f"{server.public_url} sent {payload.size} of {declared} bytes of {label} "
            "(truncated); run the command again to resume."
        )
    identity = _identify(server.public_url, label, payload)
    sop = identity.sop_uid
    listed = unit.expected.get(sop) if unit.expected is not None else None
    if unit.expected is not None and listed is None:
        if only is not None:
            raise DicomWebError(
                f"{server.public_url} sent SOP Instance {sop} when asked for {only.label}."
            )
        raise DicomWebError(
            f"{server.public_url} sent an instance ({sop}) that QIDO-RS did not list for "
            f"{unit.what}."
        )
    if identity.study_uid != unit.study_uid and (listed is None or identity.study_uid):
        raise DicomWebError(
            f"{server.public_url} sent instance {sop} of study {identity.study_uid or '(none)'} "
            f"when asked for {unit.what}."
        )
    if listed is not None:
        ref = listed
    elif identity.series_uid:
        ref = InstanceRef(
            study_uid=unit.study_uid,
            series_uid=identity.series_uid,
            sop_uid=sop,
            sop_class_uid=identity.sop_class_uid,
            transfer_syntax_uid=identity.transfer_syntax_uid,
            n_study_instances=unit.expected_count,
        )
    else:
        raise DicomWebError(
            f"{server.public_url} sent instance {sop} of study {unit.study_uid} without a "
            "Series Instance UID."
        )
    if identity.meta_sop_uid is not None and identity.meta_sop_uid != sop:
        raise DicomWebError(
            f"{server.public_url} sent SOP Instance {identity.meta_sop_uid} (file meta) / {sop} "
            f"(data set) when asked for {ref.label}."
        )
    if sop in seen:
        raise DicomWebError(f"{server.public_url} sent {ref.label} twice in {unit.what}.")
    ts = identity.transfer_syntax_uid
    stored = ref.transfer_syntax_uid
    if stored and ts != stored:
        raise DicomWebError(
            f"{server.public_url} transcoded {ref.label} from its stored transfer syntax "
            f"{stored} to {ts}; the workbench imports only the PACS's originals."
        )
    declared_ts = _transfer_syntax_param(payload.headers.get("content-type", ""))
    if declared_ts and declared_ts != ts:
        raise DicomWebError(
            f"{server.public_url} declared transfer syntax {declared_ts} for {ref.label} but "
            f"sent {ts}."
        )
    return ref


#: Files the writing thread hands to the indexer's processes at once, at most.
_INDEX_BATCH = 64
#: Bytes of parts received and not yet written before a receiving thread waits for the
#: writer (a larger part still passes alone).
_WRITE_QUEUE_BYTES = 64 << 20


class _Destination:
    """Where checked parts go: ``dicom/<sha[:2]>/<sha>.dcm`` under ``root``, via ``.incoming``.

    Every part is written under its final name by one thread of the destination's
    own: creating files in a folder tree goes no faster from two threads (the file
    system serialises it, and the waiting threads spin on a core that the server
    and the indexer need), while the receiving threads go on reading and checking
    the next parts. With an ``indexer``, that thread hands what it wrote (path and
    SHA-256) to the indexer's processes in batches, whenever it has nothing left to
    write, and they index them while the next ones arrive.

    Use it as a context manager: leaving waits until every part stored is written
    (what was stored before a failure stays, complete, for the next run). A write
    that fails (a full disk) is raised by the next :meth:`store` and on leaving;
    parts not yet written then are not written.
    """

    def __init__(self, root: Path, indexer: FolderIndexer | None = None) -> None:
        self.root = root
        self.incoming = root / _INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.indexer = indexer
        self._folders: set[str] = set()
        self._names = itertools.count()
        self._queue: queue.Queue[tuple[str, _Payload] | None] = queue.Queue()
        self._queued_bytes = 0
        self._room = threading.Condition()
        self._failure: DicomWebError | None = None
        self._writer: threading.Thread | None = None
        self._open = threading.Lock()

    def __enter__(self) -> _Destination:
        # A daemon: a destination left unclosed does not keep the process alive (what it
        # had not written is fetched again by the next run).
        writer = threading.Thread(target=self._write_all, name="workbench-writer", daemon=True)
        writer.start()
        self._writer = writer
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(raise_failure=kind is None)

    def temporary(self) -> tuple[int, str]:
        """A new file under ``.incoming``, open for writing (descriptor, name)."""
        name = os.path.join(self.incoming, f"{threading.get_ident()}-{next(self._names)}.part")
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name

    def store(self, payload: _Payload) -> str:
        """Queue a checked part for writing under its content address; its relative path."""
        if self._failure is not None:
            raise self._failure
        rel = f"{DICOM_FOLDER}/{payload.sha256[:2]}/{payload.sha256}.dcm"
        size = _held(payload)
        with self._room:
            while self._queued_bytes and self._queued_bytes + size > _WRITE_QUEUE_BYTES:
                self._room.wait()
            self._queued_bytes += size
        with self._open:
            if self._writer is None:
                with self._room:
                    self._queued_bytes -= size
                raise RuntimeError("store() outside the destination's with block")
            self._queue.put((rel, payload))
        return rel

    def close(self, *, raise_failure: bool = True) -> None:
        """Wait until every stored part is written and handed to the indexer."""
        with self._open:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._queue.put(None)  # after every part stored before
        if writer is not None:
            writer.join()
        if raise_failure and self._failure is not None:
            raise self._failure

    def _write_all(self) -> None:
        """The writing thread: write what is queued until told to stop, never dying early.

        After a failure nothing more is written, but the queue is still emptied, so
        that no receiving thread waits for room forever.
        """
        written: list[tuple[str, str | None]] = []
        while True:
            if written and (self._queue.empty() or len(written) >= _INDEX_BATCH):
                self._hand_over(written)
                written = []
            item = self._queue.get()
            if item is None:
                self._hand_over(written)
                return
            rel, payload = item
            try:
                if self._failure is None:
                    self._write(rel, payload)
                    written.append((rel, payload.sha256))
            except Exception as exc:  # a full disk, a folder that cannot be made...
                self._failure = DicomWebError(
                    f"Could not write {self.root / rel}: {exc}; what was written before "
                    "stays, and the next run resumes from it."
                )
            finally:
                with self._room:
                    self._queued_bytes -= _held(payload)
                    self._room.notify_all()

    def _write(self, rel: str, payload: _Payload) -> None:
        folder = rel.split("/")[1]
        if folder not in self._folders:
            (self.root / DICOM_FOLDER / folder).mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        target = os.path.join(self.root, rel)
        if payload.path is not None:
            os.replace(payload.path, target)
        else:
            # Written under its final name, without fsync per file: a file cut short by a
            # crash fails the hash-against-name check of the next run and is fetched again.
            _write_file(target, payload.data or b"")

    def _hand_over(self, written: list[tuple[str, str | None]]) -> None:
        if written and self.indexer is not None and self._failure is None:
            try:
                self.indexer.add(self.root, written)
            except Exception as exc:  # the indexer's processes are gone
                self._failure = DicomWebError(
                    f"Could not hand the files written under {self.root} to the indexer: "
                    f"{type(exc).__name__}: {exc}; run the command again to resume."
                )


def _held(payload: _Payload) -> int:
    """Bytes of a part held in memory (none when it was spooled to a file)."""
    return len(payload.data) if payload.data is not None else 0


def _write_file(target: str, data: bytes) -> None:
    """Write ``data`` to ``target``, removing what was written if the write fails."""
    try:
        with open(target, "wb") as handle:
            handle.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise


def _fetch_unit(
    server: DicomWebServer,
    unit: _Unit,
    dest: _Destination | None,
    on_stored: Callable[[], None] | None = None,
) -> list[_Received]:
    """Retrieve, check and (with ``dest``) store every instance of ``unit``, as they arrive.

    ``on_stored()`` is called (from this thread) after each stored instance. What
    was stored before a failure stays: it is complete and verified, and the next
    run skips it.
    """
    received: dict[str, _Received] = {}
    try:
        with _answer(server, unit) as (content_type, chunks):
            if content_type.lower().startswith("application/dicom"):
                parts = _single_part(chunks, content_type, dest)
            else:
                parts = _read_parts(chunks, _boundary(content_type), dest)
            for index, payload in enumerate(parts, start=1):
                ref = _accept(server, unit, payload, index, received)
                if dest is None:
                    received[ref.sop_uid] = _Received(ref, payload.size, None, payload.data)
                    continue
                received[ref.sop_uid] = _Received(ref, payload.size, dest.store(payload), None)
                if on_stored is not None:
                    on_stored()
    except DicomWebError:
        raise
    except _Malformed as exc:
        raise DicomWebError(
            f"{server.public_url} sent a malformed multipart answer for {unit.what}: {exc}."
        ) from exc
    except _AnswerEnded as exc:
        raise DicomWebError(
            f"Cannot reach the DICOMweb server {server.public_url} to finish {unit.what}: its "
            f"answer stopped after {exc.n_parts} complete part(s) (connection lost); check "
            "that it runs, then run the command again to resume."
        ) from exc
    except Exception as exc:
        raise describe_failure(server, exc, unit.what) from exc
    if unit.expected is not None:
        missing = sorted(set(unit.expected) - set(received))
        if missing:
            if len(unit.expected) == 1:
                raise DicomWebError(
                    f"{server.public_url} sent no instance for {unit.what}; expected 1."
                )
            raise DicomWebError(
                f"{server.public_url} sent {len(received)} of {len(unit.expected)} instances of "
                f"{unit.what} (missing e.g. instance {missing[0]}): partial results; run the "
                "command again to resume."
            )
    elif unit.expected_count is not None and len(received) != unit.expected_count:
        raise _short_study(server, unit.study_uid, len(received), unit.expected_count)
    return list(received.values())


def fetch_instance(server: DicomWebServer, ref: InstanceRef) -> bytes:
    """The bytes of one instance as the server stores it (WADO-RS, PS3.18 10.4.1.1.3).

    Raises
    ------
    DicomWebError
        The server fails, sends another instance, not DICOM, a truncated file,
        or another transfer syntax than the one it reports the instance in.
    """
    (got,) = _fetch_unit(server, _instance_unit(server, ref), None)
    return got.data or b""


def fetch_series(server: DicomWebServer, refs: Sequence[InstanceRef]) -> dict[str, bytes]:
    """The bytes of every instance of one series in one request (WADO-RS, PS3.18 10.4.1.1.2).

    Parameters
    ----------
    server : DicomWebServer
    refs : sequence of InstanceRef
        Every instance of the series, as listed by QIDO-RS.

    Returns
    -------
    dict
        ``{sop_instance_uid: bytes}``, each checked as in :func:`fetch_instance`.

    Raises
    ------
    DicomWebError
        As :func:`fetch_instance`, or the server sends another set of instances.
    """
    return {
        got.ref.sop_uid: got.data or b""
        for got in _fetch_unit(server, _series_unit(server, refs), None)
    }


# --------------------------------------------------------------------------- the destination


@dataclass(frozen=True, slots=True)
class _Present:
    rel: str
    identity: _Identity


def _check_present(path: Path) -> _Identity | None:
    """The identity of a retrieved file whose SHA-256 is its name; None when damaged."""
    if not _SHA_NAME.match(path.name):
        return None
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                return None
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                if hashlib.sha256(mapped).hexdigest() != path.stem:
                    return None
                try:
                    return _read_identity(mapped)
                except (_Truncated, _NotWalked):
                    pass
        return _identity_by_pydicom(path)
    except Exception:  # any read or parse failure: the file is fetched again
        return None


def _scan(root: Path, *, workers: int) -> tuple[dict[str, _Present], int]:
    base = root / DICOM_FOLDER
    if not base.is_dir():
        return {}, 0
    paths = []
    for path in sorted(base.rglob("*")):
        if path.name.startswith(_TEMPORARY_PREFIX):
            # Left by an earlier version that wrote to temporary names, as under .incoming.
            path.unlink(missing_ok=True)
        elif path.is_file():
            paths.append(path)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        identities = list(pool.map(_check_present, paths))
    found: dict[str, _Present] = {}
    removed = 0
    for path, identity in zip(paths, identities, strict=True):
        if identity is None or identity.sop_uid in found:
            path.unlink()
            removed += 1
            continue
        found[identity.sop_uid] = _Present(path.relative_to(root).as_posix(), identity)
    return found, removed


def scan_retrieved(dest: str | Path) -> tuple[dict[str, str], int]:
    """Verify the files already under ``dest/dicom``: ``({sop_uid: relpath}, n_removed)``.

    A file whose SHA-256 is not its name, or that is not DICOM, is removed (it
    will be fetched again).
    """
    found, removed = _scan(Path(dest), workers=2)
    return {sop: present.rel for sop, present in found.items()}, removed


def _plan(
    server: DicomWebServer, listed: Sequence[InstanceRef], todo: Sequence[InstanceRef]
) -> list[_Unit]:
    """Requests for ``todo``: a whole study where nothing of it is here and ``listed`` holds all
    of it, else a whole series where nothing of it is here, else instance by instance."""
    missing = {ref.sop_uid for ref in todo}
    by_study: dict[str, list[InstanceRef]] = {}
    for ref in listed:
        by_study.setdefault(ref.study_uid, []).append(ref)
    units: list[_Unit] = []
    for study_uid, refs in by_study.items():
        wanted = [ref for ref in refs if ref.sop_uid in missing]
        if not wanted:
            continue
        counts = {ref.n_study_instances for ref in refs}
        if len(wanted) == len(refs) and counts == {len(refs)}:
            units.append(_study_unit(server, study_uid, refs, len(refs)))
            continue
        by_series: dict[str, list[InstanceRef]] = {}
        for ref in refs:
            by_series.setdefault(ref.series_uid, []).append(ref)
        for series in by_series.values():
            series_missing = [ref for ref in series if ref.sop_uid in missing]
            if len(series_missing) == len(series) > 1:
                units.append(_series_unit(server, series))
            else:
                units.extend(_instance_unit(server, ref) for ref in series_missing)
    return units


class _Tally:
    """Files, counts and progress of one retrieval.

    Worker threads only count the parts they store (:meth:`stored`); the calling
    thread records finished requests (:meth:`add`) and reports progress
    (:meth:`report`), so that ``progress`` is only ever called from it.
    """

    def __init__(self, files: dict[str, str], total: int, progress: Progress | None) -> None:
        self.files = files
        self.total = total
        self.n_bytes = 0
        self.refs: list[InstanceRef] = []
        self.progress = progress
        self._here = len(files)
        self._stored = 0
        self._reported = -1
        self._lock = threading.Lock()
        self.report(f"{self._here} already here" if self._here else "retrieving")

    def stored(self) -> None:
        with self._lock:
            self._stored += 1

    def add(self, received: list[_Received]) -> None:
        for got in received:
            assert got.rel is not None
            self.files[got.ref.sop_uid] = got.rel
            self.refs.append(got.ref)
            self.n_bytes += got.size

    def count(self, n_more: int) -> None:
        """Add the instances of studies counted while the retrieval runs to the total.

        Progress is reported once a total is known (never more done than the total).
        """
        self.total += n_more
        self._reported = -1

    def report(self, message: str = "retrieving") -> None:
        with self._lock:
            done = self._here + self._stored
        if self.progress is not None and done != self._reported and 0 < self.total >= done:
            self._reported = done
            self.progress(done, self.total, message)


#: Seconds between progress reports while requests are under way.
_REPORT_EVERY = 0.2


def _run(
    fetch: Callable[[Any], list[_Received]],
    units: Sequence[Any],
    *,
    workers: int,
    tally: _Tally,
    describe: Callable[[BaseException], DicomWebError],
    counts: Callable[[], dict[str, int | None]] | None = None,
) -> dict[str, int | None]:
    """Run ``fetch(unit)`` for ``units`` on ``workers`` threads, that many requests at once.

    ``fetch`` returns the instances it stored (counting each with
    ``tally.stored``); ``describe`` turns a failure that is not a
    :class:`DicomWebError` into one.

    ``counts``, when given, runs first on one of the threads (the count queries
    of studies retrieved without them) while the others start on ``units``; its
    result is returned, and it sets the progress total once known. The first
    failure stops new requests; those under way finish (what they store stays
    for the next run), then it is raised, a failed ``counts`` first (it names an
    unknown study more precisely than the retrieval's answer).
    """
    size = max(1, workers)
    failure: BaseException | None = None
    queue = iter(units)
    counted: dict[str, int | None] = {}
    with ThreadPoolExecutor(max_workers=size) as pool:
        pending: set[Future[Any]] = set()
        counting = pool.submit(counts) if counts is not None else None
        if counting is not None:
            pending.add(counting)

        def refill() -> None:
            while len(pending) < size:
                unit = next(queue, None)
                if unit is None:
                    return
                pending.add(pool.submit(fetch, unit))

        refill()
        while pending:
            finished, pending = wait(pending, _REPORT_EVERY, return_when=FIRST_COMPLETED)
            for future in finished:
                error = future.exception()
                if error is not None:
                    failure = failure or error
                elif future is counting:
                    counted = future.result()
                    tally.count(sum(count or 0 for count in counted.values()))
                else:
                    tally.add(future.result())
            if failure is not None:
                wait(pending)
                break
            tally.report()
            refill()
    if counting is not None and counting.done() and counting.exception() is not None:
        failure = counting.exception()
    if failure is not None:
        if isinstance(failure, DicomWebError):
            raise failure
        raise describe(failure) from failure
    tally.report()
    return counted


def _prepare(root: Path, workers: int) -> tuple[dict[str, _Present], int]:
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / _INCOMING, ignore_errors=True)
    return _scan(root, workers=workers)


def retrieve_instances(
    server: DicomWebServer,
    instances: Sequence[InstanceRef],
    dest: str | Path,
    *,
    workers: int = 2,
    progress: Progress | None = None,
) -> RetrievalOutcome:
    """Retrieve ``instances`` into ``dest`` byte for byte; resume what is there.

    Parameters
    ----------
    server : DicomWebServer
    instances : sequence of InstanceRef
        From :func:`list_study_instances`.
    dest : str or Path
        Destination folder (created); files go to ``dicom/<sha[:2]>/<sha>.dcm``.
    workers : int, default 2
        Requests under way at once (threads).
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    RetrievalOutcome

    Raises
    ------
    DicomWebError
        The first failure, naming the instance, series or study; what was
        fetched before it stays and is reused by the next call.
    """
    root = Path(dest)
    present, removed = _prepare(root, workers)
    wanted = {ref.sop_uid: ref for ref in instances}
    for sop in sorted(set(present) - set(wanted)):
        (root / present.pop(sop).rel).unlink()
        removed += 1
    todo = [ref for sop, ref in wanted.items() if sop not in present]
    tally = _Tally({sop: p.rel for sop, p in present.items()}, len(wanted), progress)
    try:
        units = _plan(server, list(wanted.values()), todo)
        with _Destination(root) as into:
            _run(
                lambda unit: _fetch_unit(server, unit, into, tally.stored),
                units,
                workers=workers,
                tally=tally,
                describe=lambda exc: describe_failure(server, exc, "the retrieval"),
            )
    finally:
        shutil.rmtree(root / _INCOMING, ignore_errors=True)
    return RetrievalOutcome(
        files={sop: tally.files[sop] for sop in wanted},
        n_fetched=len(todo),
        n_skipped=len(wanted) - len(todo),
        n_bytes_fetched=tally.n_bytes,
        n_removed=removed,
    )


def retrieve_studies(
    server: DicomWebServer,
    study_uids: Sequence[str],
    dest: str | Path,
    *,
    workers: int = 2,
    progress: Progress | None = None,
    indexer: FolderIndexer | None = None,
) -> StudyRetrieval:
    """Retrieve whole studies into ``dest`` byte for byte, one request per study; resume.

    Per study, one WADO-RS request (PS3.18 10.4.1.1.1) brings all of its
    instances; every part is checked (complete, of that study, SOP Instance UID
    in file meta and data set alike, the transfer syntax the server declares, no
    instance twice) and their number must match the study's Number of Study
    Related Instances, which QIDO-RS gives while the first studies arrive (one
    of the ``workers`` asks; where the server does not report it, the study's
    instance listing is the measure). A study of which ``dest`` already holds as
    many verified instances as the server counts is not asked for again; one
    partly retrieved by an interrupted run is listed instance by instance (as
    :func:`list_study_instances`) and only what is missing is fetched.

    Parameters
    ----------
    server : DicomWebServer
    study_uids : sequence of str
        Study Instance UIDs.
    dest : str or Path
        Destination folder (created); files go to ``dicom/<sha[:2]>/<sha>.dcm``.
    workers : int, default 2
        Requests under way at once (threads).
    progress : callable, optional
        ``progress(done, total, message)``.
    indexer : FolderIndexer, optional
        Processes that index the retrieved files as they are written, recording
        the SHA-256 this retrieval computed over them. Files found already
        retrieved are not handed to it.

    Returns
    -------
    StudyRetrieval
        The instances found, as :func:`list_study_instances` would list them,
        and the outcome.

    Raises
    ------
    DicomWebError
        An unknown study, a failing server, partial results or an invalid or
        transcoded instance: one line naming the study or instance. What was
        fetched before it stays and is reused by the next call.
    """
    uids = list(dict.fromkeys(str(uid).strip() for uid in study_uids if str(uid).strip()))
    if not uids:
        raise DicomWebError("Expected at least one Study Instance UID; found none.")
    root = Path(dest)
    present, removed = _prepare(root, workers)
    here: dict[str, dict[str, _Present]] = {}
    for sop, item in sorted(present.items()):
        study = item.identity.study_uid
        if study in uids:
            here.setdefault(study, {})[sop] = item
        else:
            (root / item.rel).unlink()
            removed += 1
    # A study of which nothing is here is retrieved while its count is asked for, and the
    # count checked once both are done; one partly here needs its count first.
    fresh = [uid for uid in uids if uid not in here]
    counts = _study_instance_counts(server, list(here), workers) if here else {}
    refs: dict[str, list[InstanceRef]] = {}
    files: dict[str, str] = {}
    units: list[_Unit] = [_study_unit(server, uid, None, None) for uid in fresh]
    total = 0
    for uid in here:
        count, have = counts[uid], here[uid]
        complete = all(item.identity.series_uid for item in have.values())
        if count and len(have) == count and complete:
            refs[uid] = [_present_ref(uid, item, count) for item in have.values()]
            files.update((sop, item.rel) for sop, item in have.items())
            total += count
        else:
            listed = list_study_instances(server, uid)
            keep = {ref.sop_uid for ref in listed}
            for sop, item in have.items():
                if sop in keep:
                    files[sop] = item.rel
                else:
                    (root / item.rel).unlink()
                    removed += 1
            refs[uid] = listed
            todo = [ref for ref in listed if ref.sop_uid not in files]
            units.extend(_plan(server, listed, todo))
            total += len(listed)
    n_skipped = len(files)
    tally = _Tally(files, total, progress)
    try:
        with _Destination(root, indexer) as into:
            counted = _run(
                lambda unit: _fetch_unit(server, unit, into, tally.stored),
                units,
                workers=workers,
                tally=tally,
                describe=lambda exc: describe_failure(server, exc, "the retrieval"),
                counts=(lambda: _study_instance_counts(server, fresh, 1)) if fresh else None,
            )
    finally:
        shutil.rmtree(root / _INCOMING, ignore_errors=True)
    received: dict[str, list[InstanceRef]] = {}
    for ref in tally.refs:
        received.setdefault(ref.study_uid, []).append(ref)
    for uid in fresh:
        refs[uid] = _counted(server, uid, received.get(uid, []), counted.get(uid), tally)
    tally.report()
    instances: list[InstanceRef] = []
    for uid in uids:
        instances.extend(sorted(refs[uid], key=lambda r: (r.series_uid, r.sop_uid)))
    return StudyRetrieval(
        instances=tuple(instances),
        outcome=RetrievalOutcome(
            files={ref.sop_uid: tally.files[ref.sop_uid] for ref in instances},
            n_fetched=len(tally.files) - n_skipped,
            n_skipped=n_skipped,
            n_bytes_fetched=tally.n_bytes,
            n_removed=removed,
        ),
    )


def _counted(
    server: DicomWebServer,
    study_uid: str,
    received: list[InstanceRef],
    count: int | None,
    tally: _Tally,
) -> list[InstanceRef]:
    """Check what a whole-study request brought against the study's instance count.

    Where the server does not report the count, its instance listing (QIDO-RS) is
    the measure. What was stored stays either way (a resumed run lists the study).
    """
    if count is None:
        listed = {ref.sop_uid for ref in list_study_instances(server, study_uid)}
        tally.count(len(listed))
        if {ref.sop_uid for ref in received} != listed:
            raise _short_study(
                server, study_uid, len(received), len(listed), "its QIDO-RS instance listing"
            )
        return received
    if len(received) != count:
        raise _short_study(server, study_uid, len(received), count)
    return [dataclasses.replace(ref, n_study_instances=count) for ref in received]


def _short_study(
    server: DicomWebServer,
    study_uid: str,
    n_received: int,
    expected: int,
    measure: str = "Number of Study Related Instances",
) -> DicomWebError:
    """The one-line error of a whole-study answer that brought another number of instances."""
    return DicomWebError(
        f"{server.public_url} sent {n_received} instance(s) of study {study_uid}, expected "
        f"{expected} ({measure}): partial results; run the command again to resume."
    )


def _present_ref(study_uid: str, item: _Present, count: int) -> InstanceRef:
    identity = item.identity
    return InstanceRef(
        study_uid=study_uid,
        series_uid=identity.series_uid or "",
        sop_uid=identity.sop_uid,
        sop_class_uid=identity.sop_class_uid,
        transfer_syntax_uid=identity.transfer_syntax_uid,
        n_study_instances=count,
    )
