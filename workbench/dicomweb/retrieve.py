"""Query (QIDO-RS) and retrieve (WADO-RS) instances byte for byte, resumably.

Studies are found with QIDO-RS (PS3.18 10.6) and listed instance by instance;
each instance is retrieved with WADO-RS (PS3.18 10.4) asking for
``multipart/related; type="application/dicom"; transfer-syntax=*``, i.e. in the
transfer syntax the server stores it in, and written exactly as received.

Files are content-addressed: ``dicom/<sha[:2]>/<sha256>.dcm`` under the
destination folder, written to a temporary name, flushed and renamed, so a file
under its final name is always complete. A retrieval that stops half-way (server
down, timeout, killed process) is resumed by running it again: every file
already present is re-hashed against its name and its SOP Instance UID read,
and only the missing instances are fetched.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from workbench.dicomweb.connection import DicomWebServer, describe_failure
from workbench.errors import DicomWebError

__all__ = [
    "InstanceRef",
    "RetrievalOutcome",
    "list_study_instances",
    "parse_query",
    "retrieve_instances",
    "search_studies",
]

Progress = Callable[[int, int, str], None]

#: Accept header of WADO-RS instance retrieval: any transfer syntax, as stored (PS3.18 8.7.3.5).
ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'

#: Folder of the retrieved files below the destination.
DICOM_FOLDER = "dicom"

_INCOMING = ".incoming"
_SHA_NAME = re.compile(r"^[0-9a-f]{64}\.dcm$")

# QIDO-RS attribute tags (PS3.18 Table 10.6.3-3/-5).
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_SOP_CLASS = "00080016"
_AVAILABLE_TS = "00083002"
_N_STUDY_INSTANCES = "00201208"


@dataclass(frozen=True, slots=True)
class InstanceRef:
    """One instance found by QIDO-RS.

    Parameters
    ----------
    study_uid, series_uid, sop_uid : str
    sop_class_uid : str or None
    transfer_syntax_uid : str or None
        Available Transfer Syntax UID (0008,3002) when the server reports it: the
        syntax the instance is stored in, checked against what is received.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str | None = None
    transfer_syntax_uid: str | None = None

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


def list_study_instances(server: DicomWebServer, study_uid: str) -> list[InstanceRef]:
    """Every instance of a study (QIDO-RS), checked against the study's instance count.

    Raises
    ------
    DicomWebError
        The study is unknown, the server fails, or it lists fewer instances than
        its Number of Study Related Instances (partial results).
    """
    client = server.client()
    what = f"study {study_uid}"
    try:
        studies = client.search_for_studies(
            search_filters={"StudyInstanceUID": study_uid},
            fields=["NumberOfStudyRelatedInstances"],
        )
        if not studies:
            raise DicomWebError(f"{server.public_url} has no study {study_uid}.")
        found = search_all(
            client.search_for_instances,
            _SOP_UID,
            study_instance_uid=study_uid,
            fields=["AvailableTransferSyntaxUID", "SOPClassUID"],
        )
    except Exception as exc:
        raise describe_failure(server, exc, what) from exc
    expected = _value(studies[0], _N_STUDY_INSTANCES)
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
        )
    if not refs:
        raise DicomWebError(f"{server.public_url} lists no instances in study {study_uid}.")
    if expected is not None and int(expected) != len(refs):
        raise DicomWebError(
            f"{server.public_url} lists {len(refs)} instance(s) of study {study_uid}, "
            f"expected {int(expected)} (Number of Study Related Instances): partial results; "
            "nothing was imported."
        )
    return sorted(refs.values(), key=lambda r: (r.series_uid, r.sop_uid))


def _boundary(content_type: str) -> bytes:
    match = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    if not match:
        raise DicomWebError(
            f"Expected a multipart/related answer with a boundary, found {content_type!r}."
        )
    return match.group(1).encode("ascii")


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/related`` body (RFC 2387, PS3.18 8.7.1.2) into (headers, payload)."""
    delimiter = b"--" + _boundary(content_type)
    parts: list[tuple[dict[str, str], bytes]] = []
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # close delimiter
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise DicomWebError("A multipart part has no header/body separator.")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts


def _transfer_syntax_param(content_type: str) -> str | None:
    match = re.search(r'transfer-syntax="?([0-9.]+)"?', content_type, flags=re.IGNORECASE)
    return match.group(1) if match else None


def _get_parts(server: DicomWebServer, url: str, what: str) -> list[tuple[dict[str, str], bytes]]:
    try:
        response = server.session().get(
            url, headers={"Accept": ACCEPT_AS_STORED}, timeout=server.timeout
        )
        response.raise_for_status()
    except Exception as exc:
        raise describe_failure(server, exc, what) from exc
    content_type = response.headers.get("Content-Type", "")
    if content_type.lower().startswith("application/dicom"):
        return [({"content-type": content_type}, response.content)]
    return split_multipart(response.content, content_type)


def _checked_payload(
    server: DicomWebServer, ref: InstanceRef, headers: dict[str, str], data: bytes
) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) != len(data):
        raise DicomWebError(
            f"{server.public_url} sent {len(data)} of {declared} bytes of {ref.label} "
            "(truncated); run the command again to resume."
        )
    _check_instance(server, ref, data, _transfer_syntax_param(headers.get("content-type", "")))
    return data


def fetch_instance(server: DicomWebServer, ref: InstanceRef) -> bytes:
    """The bytes of one instance as the server stores it (WADO-RS, PS3.18 10.4.1.1.3).

    Raises
    ------
    DicomWebError
        The server fails, sends another instance, not DICOM, a truncated file,
        or another transfer syntax than the one it reports the instance in.
    """
    url = f"{server.url}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"
    parts = _get_parts(server, url, ref.label)
    if len(parts) != 1:
        raise DicomWebError(
            f"{server.public_url} sent {len(parts)} parts for {ref.label}; expected 1."
        )
    return _checked_payload(server, ref, *parts[0])


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
    first = refs[0]
    what = f"series {first.series_uid} of study {first.study_uid}"
    url = f"{server.url}/studies/{first.study_uid}/series/{first.series_uid}"
    by_sop = {ref.sop_uid: ref for ref in refs}
    out: dict[str, bytes] = {}
    for headers, data in _get_parts(server, url, what):
        sop = _sop_of(data)
        ref = by_sop.get(sop or "")
        if ref is None:
            raise DicomWebError(
                f"{server.public_url} sent an instance ({sop or 'not DICOM'}) that QIDO-RS did "
                f"not list for {what}."
            )
        out[ref.sop_uid] = _checked_payload(server, ref, headers, data)
    missing = sorted(set(by_sop) - set(out))
    if missing:
        raise DicomWebError(
            f"{server.public_url} sent {len(out)} of {len(by_sop)} instances of {what} "
            f"(missing e.g. instance {missing[0]}): partial results; run the command again "
            "to resume."
        )
    return out


def _sop_of(data: bytes) -> str | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), specific_tags=["SOPInstanceUID"])
        return str(ds.file_meta.MediaStorageSOPInstanceUID)
    except Exception:  # the full check of the instance reports what is wrong
        return None


def _check_instance(
    server: DicomWebServer, ref: InstanceRef, data: bytes, declared_ts: str | None
) -> None:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.get("PixelData")  # forces reading to the end: a truncated file fails here
        sop = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") or ds.SOPInstanceUID)
        ts = str(ds.file_meta.TransferSyntaxUID)
    except (InvalidDicomError, AttributeError, EOFError, ValueError, OSError, KeyError) as exc:
        raise DicomWebError(
            f"{server.public_url} sent an invalid DICOM file for {ref.label}: {exc}"
        ) from exc
    if sop != ref.sop_uid or str(ds.get("SOPInstanceUID", sop)) != ref.sop_uid:
        raise DicomWebError(
            f"{server.public_url} sent SOP Instance {sop} when asked for {ref.label}."
        )
    stored = ref.transfer_syntax_uid
    if stored and ts != stored:
        raise DicomWebError(
            f"{server.public_url} transcoded {ref.label} from its stored transfer syntax "
            f"{stored} to {ts}; the workbench imports only the PACS's originals."
        )
    if declared_ts and declared_ts != ts:
        raise DicomWebError(
            f"{server.public_url} declared transfer syntax {declared_ts} for {ref.label} but "
            f"sent {ts}."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def scan_retrieved(dest: str | Path) -> tuple[dict[str, str], int]:
    """Verify the files already under ``dest/dicom``: ``({sop_uid: relpath}, n_removed)``.

    A file whose SHA-256 is not its name, or that is not DICOM, is removed (it
    will be fetched again).
    """
    root = Path(dest)
    found: dict[str, str] = {}
    removed = 0
    base = root / DICOM_FOLDER
    if not base.is_dir():
        return found, 0
    for path in sorted(base.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        ok = bool(_SHA_NAME.match(path.name)) and _sha256(path) == path.stem
        sop = None
        if ok:
            try:
                sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            except Exception:  # any parse failure: the file is fetched again
                ok = False
        if not ok or sop is None or sop in found:
            path.unlink()
            removed += 1
            continue
        found[sop] = rel
    return found, removed


def _store(dest: Path, ref: InstanceRef, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    rel = f"{DICOM_FOLDER}/{digest[:2]}/{digest}.dcm"
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = dest / _INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    partial = incoming / f"{ref.sop_uid}.part"
    # No fsync per file: a file damaged by a crash fails the hash-against-name check of the
    # next run and is fetched again, and the import re-hashes every file before recording it.
    partial.write_bytes(data)
    os.replace(partial, target)
    return rel


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
        Parallel requests.
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    RetrievalOutcome

    Raises
    ------
    DicomWebError
        The first failure, naming the instance and its study; what was fetched
        before it stays and is reused by the next call.
    """
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / _INCOMING, ignore_errors=True)
    present, removed = scan_retrieved(root)
    wanted = {ref.sop_uid for ref in instances}
    for sop in sorted(set(present) - wanted):
        (root / present.pop(sop)).unlink()
        removed += 1
    todo = [ref for ref in instances if ref.sop_uid not in present]
    total = len(wanted)
    skipped = total - len(todo)
    files = {sop: rel for sop, rel in present.items() if sop in wanted}
    n_bytes = 0
    done = skipped
    if progress is not None:
        progress(done, total, f"{skipped} already here" if skipped else "retrieving")

    # Whole series in one request where nothing of it is here yet; otherwise instance by
    # instance (what an interrupted retrieval left to do).
    listed: dict[str, int] = {}
    for ref in instances:
        listed[ref.series_uid] = listed.get(ref.series_uid, 0) + 1
    by_series: dict[str, list[InstanceRef]] = {}
    for ref in todo:
        by_series.setdefault(ref.series_uid, []).append(ref)
    units: list[list[InstanceRef]] = []
    for series_uid, refs in by_series.items():
        if len(refs) == listed[series_uid] and len(refs) > 1:
            units.append(refs)
        else:
            units.extend([ref] for ref in refs)

    def work(unit: list[InstanceRef]) -> list[tuple[str, str, int]]:
        if len(unit) == 1:
            payloads = {unit[0].sop_uid: fetch_instance(server, unit[0])}
        else:
            payloads = fetch_series(server, unit)
        return [
            (ref.sop_uid, _store(root, ref, payloads[ref.sop_uid]), len(payloads[ref.sop_uid]))
            for ref in unit
        ]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: set[Future[list[tuple[str, str, int]]]] = set()
        queue = iter(units)
        failure: BaseException | None = None

        def refill() -> None:
            for ref in _take(queue, max(1, workers) * 2 - len(pending)):
                pending.add(pool.submit(work, ref))

        refill()
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                error = future.exception()
                if error is not None:
                    failure = failure or error
                    continue
                for sop, rel, size in future.result():
                    files[sop] = rel
                    n_bytes += size
                    done += 1
                    if progress is not None:
                        progress(done, total, "retrieving")
            if failure is not None:
                wait(pending)
                break
            refill()
    shutil.rmtree(root / _INCOMING, ignore_errors=True)
    if failure is not None:
        if isinstance(failure, DicomWebError):
            raise failure
        raise describe_failure(server, failure, "the retrieval") from failure
    return RetrievalOutcome(
        files=files,
        n_fetched=len(todo),
        n_skipped=skipped,
        n_bytes_fetched=n_bytes,
        n_removed=removed,
    )


def _take(items: Iterable[list[InstanceRef]], n: int) -> list[list[InstanceRef]]:
    out: list[list[InstanceRef]] = []
    if n <= 0:
        return out
    for item in items:
        out.append(item)
        if len(out) >= n:
            break
    return out
