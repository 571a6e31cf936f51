"""DIMSE (PS3.7, PS3.4 Annexes B and C): query with C-FIND, retrieve with C-GET, store with C-STORE.

For a PACS that offers no DICOMweb, :func:`retrieve_studies_dimse` lists each
study's instances with a Study Root C-FIND at IMAGE level and brings them with
C-GET on the same kind of association the workbench opens itself (no C-MOVE:
the PACS needs to know the workbench's AE title, not a port to call back). The
files land as a DICOMweb retrieval leaves them (content-addressed under
``dicom/<sha[:2]>/<sha>.dcm``, resumable, indexed while they arrive), so the
import that follows is the folder import.

Transfer syntax: each storage SOP class of a study is offered with every
transfer syntax of :data:`OFFERED_TRANSFER_SYNTAXES`, each in a presentation
context of its own, so the PACS can send every instance in the syntax it
stores it in instead of converting it. The data set is kept as the PACS sent
it; the File Meta Information is written by the workbench (DIMSE carries none),
and a PACS may re-encode a data set for the network (explicit instead of
undefined sequence lengths, trailing padding dropped), so unlike a WADO-RS
retrieval the files need not be byte-identical to the PACS's own.

Every instance is checked (a DICOM data set of the study asked for, SOP
Instance UID in the C-STORE command and data set alike, listed by the C-FIND,
not twice, in the Available Transfer Syntax UID the C-FIND reports where the
PACS reports it) and each retrieval must bring exactly the instances listed.

Results go back with :func:`store_instances_dimse`: an IMAGE-level C-FIND per
series lists what the PACS already holds, and only the other instances are sent
(C-STORE), so that a repeated export with the same UIDs adds nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID

from workbench.dicom.index import FolderIndexer
from workbench.dicomweb.retrieve import (
    _INCOMING,
    InstanceRef,
    Progress,
    RetrievalOutcome,
    StudyRetrieval,
    _Destination,
    _identify,
    _Payload,
    _prepare,
    _Received,
    _run,
    _Tally,
)
from workbench.dicomweb.store import StoreOutcome, as_part10
from workbench.errors import DicomWebError

__all__ = [
    "OFFERED_TRANSFER_SYNTAXES",
    "DimseNode",
    "echo_dimse",
    "find_studies_dimse",
    "list_study_instances_dimse",
    "retrieve_studies_dimse",
    "search_studies_dimse",
    "store_instances_dimse",
]

#: Study Root Query/Retrieve Information Model - FIND and - GET (PS3.4 C.6.2).
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
#: Verification SOP Class (C-ECHO, PS3.4 Annex A).
VERIFICATION = "1.2.840.10008.1.1"

#: Transfer syntaxes offered for every storage SOP class of a C-GET, each in its own
#: presentation context: the uncompressed and deflated ones, JPEG, JPEG-LS, JPEG 2000,
#: JPEG XL, HTJ2K and RLE (PS3.5 Table A-1); not the video ones.
OFFERED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component Lossless Only
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
)

#: An association carries at most 128 presentation contexts (PS3.8 9.3.2.2: odd IDs
#: 1-255); one is the C-GET's, the others hold this many SOP classes.
_CLASSES_PER_ASSOCIATION = 127 // len(OFFERED_TRANSFER_SYNTAXES)

#: C-FIND / C-GET statuses (PS3.4 C.4.1.1.4, C.4.3.1.4).
_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000
_CANCELLED = 0xFE00
#: Message ID of a C-FIND request, named again by its C-CANCEL.
_FIND_MESSAGE = 1
_WARNING = 0xB000
#: Our answer to a C-STORE sub-operation we refuse: "Cannot understand" (PS3.4 B.2.3).
_CANNOT_UNDERSTAND = 0xC000

_RESUME = "run the command again to resume"
_UID = re.compile(r"(?=[0-9.]{1,64}\Z)[0-9]+(\.[0-9]+)*\Z")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default repertoire, no backslash
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _valid_host(host: str) -> bool:
    """A DNS host name (RFC 1123) or an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST_NAME.match(host))
    return True


@dataclass(frozen=True, slots=True)
class DimseNode:
    """A DICOM node (PACS) reached over DIMSE.

    Parameters
    ----------
    host : str
    port : int
    called_ae : str
        The PACS's AE title.
    calling_ae : str, default "WORKBENCH"
        The workbench's AE title; the PACS must know it (and allow it C-FIND and
        C-GET).
    timeout : float, default 60.0
        Seconds to wait for the connection, the association and each message (a
        PACS fetching from its archive may take a while per study).
    """

    host: str
    port: int
    called_ae: str
    calling_ae: str = "WORKBENCH"
    timeout: float = 60.0

    def __post_init__(self) -> None:
        for what, title in (("called", self.called_ae), ("calling", self.calling_ae)):
            if not _AE_TITLE.match(title) or not title.strip():
                raise DicomWebError(
                    f"Expected a {what} AE title of 1-16 printable characters without '\\', "
                    f"found {title!r}."
                )
        if not self.host or not 0 < self.port < 65536:
            raise DicomWebError(f"Expected a host and a port 1-65535, found {self.address!r}.")

    @classmethod
    def parse(
        cls, address: str, *, calling_ae: str = "WORKBENCH", timeout: float = 60.0
    ) -> DimseNode:
        """A node from ``"AE@HOST:PORT"`` (e.g. ``"ORTHANC@pacs.example.org:4242"``).

        Raises
        ------
        DicomWebError
            The address is not of that form.
        """
        match = re.fullmatch(r"([^@]+)@(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})", address.strip())
        host = match.group(2).strip("[]") if match else ""
        if not match or not _valid_host(host):
            raise DicomWebError(
                f"Expected a DICOM node as AE@HOST:PORT with a host name or IP address "
                f"(e.g. ORTHANC@pacs.example.org:4242, an IPv6 address in brackets), "
                f"found {address!r}."
            )
        return cls(
            host=host,
            port=int(match.group(3)),
            called_ae=match.group(1).strip(),
            calling_ae=calling_ae.strip(),
            timeout=timeout,
        )

    @property
    def address(self) -> str:
        """``AE@HOST:PORT`` (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.called_ae}@{host}:{self.port}"

    @property
    def public_url(self) -> str:
        """``dicom://AE@HOST:PORT``, as messages and records name the node."""
        return f"dicom://{self.address}"


# --------------------------------------------------------------------------- associations


@contextmanager
def _association(
    node: DimseNode,
    contexts: Sequence[tuple[str, Sequence[str]]],
    *,
    what: str,
    scp_classes: Sequence[str] = (),
    on_store: Callable[[Any], int] | None = None,
    hint: str = "",
) -> Iterator[Any]:
    """An established association with ``node`` proposing ``contexts``; released after.

    ``hint`` ends the message of a failure to associate (e.g. how to resume).
    """
    from pynetdicom import AE, build_role, evt

    ae = AE(ae_title=node.calling_ae)
    ae.connection_timeout = node.timeout
    ae.acse_timeout = node.timeout
    ae.dimse_timeout = node.timeout
    ae.network_timeout = node.timeout
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    roles: list[Any] = [build_role(uid, scp_role=True) for uid in scp_classes]
    handlers: list[Any] = [(evt.EVT_C_STORE, on_store)] if on_store is not None else []
    assoc = ae.associate(
        node.host,
        node.port,
        ae_title=node.called_ae,
        ext_neg=roles or None,
        evt_handlers=handlers or None,
    )
    if not assoc.is_established:
        ae.shutdown()
        unreachable = _unreachable(node)
        if unreachable:
            raise DicomWebError(
                f"Cannot reach the DICOM node {node.public_url} for {what}: {unreachable}; "
                f"check that it runs and that host and port are right{hint}."
            )
        how = "rejected" if assoc.is_rejected else "did not accept (aborted or no answer)"
        raise DicomWebError(
            f"{node.public_url} {how} the association from AE title {node.calling_ae!r} for "
            f"{what}: the PACS must know that AE title, and {node.called_ae!r} must be its "
            f"own{hint}."
        )
    try:
        yield assoc
    except BaseException:
        if assoc.is_established:
            assoc.abort()
        raise
    else:
        if assoc.is_established:
            assoc.release()
    finally:
        ae.shutdown()


def _unreachable(node: DimseNode) -> str | None:
    """Why a TCP connection to the node fails, or None when it succeeds."""
    try:
        with socket.create_connection((node.host, node.port), timeout=node.timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _lost(
    assoc: Any, node: DimseNode, operation: str, what: str, *, since: float, after: str = ""
) -> str:
    """The message of an operation that ended without a final status.

    ``since`` is when the last message of the operation arrived (``time.monotonic``):
    a silence as long as the node's timeout is a timeout (pynetdicom then aborts the
    association itself), not a refusal.
    """
    if time.monotonic() - since >= 0.9 * node.timeout:
        return (
            f"{node.public_url} did not answer the {operation} for {what}{after} within "
            f"{node.timeout:g} s (a slow PACS can be given more time: --dimse-timeout on "
            "the command line)"
        )
    deadline = time.monotonic() + 1.0
    while not assoc.is_aborted and assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)  # an A-ABORT that just arrived is still being handled
    unreachable = _unreachable(node)
    if unreachable:
        return (
            f"Lost the connection to the DICOM node {node.public_url} during the {operation} "
            f"for {what}{after} (now: {unreachable})"
        )
    if assoc.is_aborted:
        task = {"C-FIND": "query", "C-ECHO": "verify", "C-STORE": "store"}.get(
            operation, "retrieve"
        )
        return (
            f"{node.public_url} aborted the {operation} for {what}{after}: it may not allow "
            f"AE title {node.calling_ae!r} to {task} ({operation}); its log says why"
        )
    return f"{node.public_url} stopped answering the {operation} for {what}{after}"


def _status_text(status: Dataset) -> str:
    code = int(status.get("Status", -1))
    comment = _printable(str(status.get("ErrorComment", "") or ""))
    return f"status 0x{code:04X}" + (f" ({comment})" if comment else "")


def _printable(text: str, limit: int = 200) -> str:
    """``text`` from a remote node on one line: no control characters, spaces collapsed."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def _find(
    assoc: Any, node: DimseNode, query: Dataset, what: str, *, limit: int | None = None
) -> list[Dataset]:
    """The answers of one C-FIND on an open association.

    With ``limit``, a C-CANCEL (PS3.7 9.3.2.3) asks the PACS to stop once that many
    answers have arrived; answers it sends after that are not kept.
    """
    found: list[Dataset] = []
    since = time.monotonic()
    cancelled = False
    for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND, msg_id=_FIND_MESSAGE):
        if not status:
            raise DicomWebError(_lost(assoc, node, "C-FIND", what, since=since) + ".")
        since = time.monotonic()
        code = int(status.Status)
        if code in _PENDING:
            if identifier is not None and not cancelled:
                found.append(identifier)
            if limit is not None and len(found) >= limit and not cancelled:
                assoc.send_c_cancel(_FIND_MESSAGE, query_model=STUDY_ROOT_FIND)
                cancelled = True
        elif code == _CANCELLED:
            break
        elif code != _SUCCESS:
            raise DicomWebError(
                f"{node.public_url} refused the C-FIND for {what}: {_status_text(status)}."
            )
    return found


_FIND_CONTEXT = [(STUDY_ROOT_FIND, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])]


def _study_query(filters: dict[str, str], return_keys: Sequence[str]) -> Dataset:
    """A STUDY-level C-FIND identifier: ``filters`` to match, ``return_keys`` empty."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    terms = [(key, value, True) for key, value in filters.items()]
    terms += [(key, "", False) for key in return_keys]
    matched_tags: set[int] = set()
    for key, value, matched in terms:
        number = int(key, 16) if re.fullmatch(r"[0-9A-Fa-f]{8}", key) else tag_for_keyword(key)
        if number is None:
            raise DicomWebError(f"Query key {key!r} is not a DICOM attribute keyword or tag.")
        tag = Tag(number)
        if not matched and tag in matched_tags:
            continue  # a filter on it is returned too
        if matched:
            matched_tags.add(tag)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = ""
        if tag == 0x00080052 or tag.group < 0x0008 or vr in ("", "SQ") or tag.is_private:
            raise DicomWebError(
                f"Query key {key!r} cannot be {'matched' if matched else 'returned'} by a "
                "STUDY-level C-FIND (a private, sequence or Query/Retrieve Level attribute); "
                "use e.g. ModalitiesInStudy, StudyDate, AccessionNumber."
            )
        if tag != 0x0020000D or value:
            query[tag] = DataElement(tag, vr, value)
    return query


def find_studies_dimse(
    node: DimseNode,
    filters: dict[str, str],
    *,
    return_keys: Sequence[str] = (),
    limit: int | None = None,
) -> list[Dataset]:
    """The studies matching ``filters``, with ``return_keys`` (a Study Root C-FIND at STUDY level).

    Parameters
    ----------
    node : DimseNode
    filters : dict
        ``{keyword or 8-digit tag: value}`` as :func:`~workbench.dicomweb.parse_query`
        gives them; DICOM matching (PS3.4 C.2.2.2): ranges ``A-B``, wildcards ``*``,
        a Study Instance UID exactly.
    return_keys : sequence of str
        Keywords or tags asked for in each answer (e.g. ``StudyDate``,
        ``NumberOfStudyRelatedInstances``); the PACS may leave optional ones empty.
    limit : int, optional
        At most this many studies: the first the PACS answers (a C-CANCEL stops
        the query there, as a QIDO-RS ``limit`` would).

    Returns
    -------
    list of pydicom.dataset.Dataset
        One identifier per study (answers without a Study Instance UID and repeats
        dropped), in Study Instance UID order.

    Raises
    ------
    DicomWebError
        The node is unreachable, refuses the association or the query, or a key
        cannot be used at STUDY level.
    """
    query = _study_query(filters, return_keys)
    what = "the study query " + ("&".join(f"{k}={v}" for k, v in filters.items()) or "(all)")
    with _association(node, _FIND_CONTEXT, what=what) as assoc:
        found = _find(assoc, node, query, what, limit=limit)
    by_uid: dict[str, Dataset] = {}
    for item in found:
        uid = str(item.get("StudyInstanceUID", "") or "")
        if uid and uid not in by_uid:
            by_uid[uid] = item
    studies = [by_uid[uid] for uid in sorted(by_uid)]
    return studies if limit is None else studies[:limit]


def search_studies_dimse(
    node: DimseNode, filters: dict[str, str], *, limit: int | None = None
) -> list[str]:
    """Study Instance UIDs matching ``filters`` (a Study Root C-FIND at STUDY level).

    Parameters
    ----------
    node : DimseNode
    filters : dict
        As :func:`find_studies_dimse`.
    limit : int, optional
        At most this many studies (the first the PACS answers), in UID order.

    Raises
    ------
    DicomWebError
        The node is unreachable, refuses the association or the query.
    """
    found = find_studies_dimse(node, filters, limit=limit)
    return [str(item.StudyInstanceUID) for item in found]


def echo_dimse(node: DimseNode) -> float:
    """Verify the node (C-ECHO, PS3.7 9.1.5): seconds from connecting to its answer.

    Raises
    ------
    DicomWebError
        The node is unreachable, refuses the association (e.g. an unknown calling
        AE title) or answers the C-ECHO with a failure status.
    """
    started = time.monotonic()
    what = "a C-ECHO (verification)"
    with _association(node, [(VERIFICATION, ["1.2.840.10008.1.2"])], what=what) as assoc:
        status = assoc.send_c_echo()
        if not status:
            raise DicomWebError(_lost(assoc, node, "C-ECHO", what, since=started) + ".")
        if int(status.Status) != _SUCCESS:
            raise DicomWebError(
                f"{node.public_url} answered the C-ECHO with {_status_text(status)}."
            )
    return time.monotonic() - started


def _list_study(assoc: Any, node: DimseNode, study_uid: str) -> list[InstanceRef]:
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    query.SOPClassUID = ""
    query.AvailableTransferSyntaxUID = ""
    what = f"the instances of study {study_uid}"
    refs: dict[str, InstanceRef] = {}
    for item in _find(assoc, node, query, what):
        sop = str(item.get("SOPInstanceUID", "") or "")
        series = str(item.get("SeriesInstanceUID", "") or "")
        sop_class = str(item.get("SOPClassUID", "") or "")
        study = str(item.get("StudyInstanceUID", "") or "")
        if study and study != study_uid:
            raise DicomWebError(
                f"{node.public_url} answered the C-FIND for {what} with an instance of study "
                f"{_printable(study, 64)}."
            )
        if not all(_UID.match(uid) for uid in (sop, series, sop_class)):
            named = ", ".join(_printable(uid, 64) or "(none)" for uid in (sop, series, sop_class))
            raise DicomWebError(
                f"{node.public_url} listed an instance of study {study_uid} without a valid SOP "
                f"Instance, Series Instance and SOP Class UID (found {named}); the workbench "
                "needs all three to retrieve it."
            )
        # Available Transfer Syntax UID (VM 1-n): checked on arrival when it names one.
        reported = item.get("AvailableTransferSyntaxUID")
        values = [str(v) for v in reported] if isinstance(reported, MultiValue) else [reported]
        single = str(values[0] or "") if len(values) == 1 else ""
        stored_as = single if _UID.match(single) else None
        refs[sop] = InstanceRef(
            study_uid=study_uid,
            series_uid=series,
            sop_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax_uid=stored_as,
        )
    if not refs:
        raise DicomWebError(f"{node.public_url} has no study {study_uid} (C-FIND found none).")
    n = len(refs)
    return sorted(
        (dataclasses.replace(r, n_study_instances=n) for r in refs.values()),
        key=lambda r: (r.series_uid, r.sop_uid),
    )


def list_study_instances_dimse(node: DimseNode, study_uids: Sequence[str]) -> list[InstanceRef]:
    """Every instance of the studies (Study Root C-FIND at IMAGE level), on one association.

    Raises
    ------
    DicomWebError
        A study the node does not hold, an instance listed without its UIDs, or
        an unreachable or refusing node.
    """
    for uid in study_uids:
        if not _UID.match(uid):
            raise DicomWebError(
                f"Expected a Study Instance UID (digits and dots, at most 64 characters), found "
                f"{_printable(uid, 80)!r}."
            )
    refs: list[InstanceRef] = []
    with _association(node, _FIND_CONTEXT, what="listing the studies' instances") as assoc:
        for uid in study_uids:
            refs.extend(_list_study(assoc, node, uid))
    seen: dict[str, str] = {}
    for ref in refs:
        other = seen.setdefault(ref.sop_uid, ref.study_uid)
        if other != ref.study_uid:
            raise DicomWebError(
                f"{node.public_url} holds SOP Instance {ref.sop_uid} in study {other} and in "
                f"study {ref.study_uid}; a test set cannot hold both (import the studies "
                "separately)."
            )
    return refs


# --------------------------------------------------------------------------- retrieval


@dataclass(frozen=True, slots=True)
class _GetUnit:
    """One C-GET: a whole study, or listed instances of one series."""

    what: str
    study_uid: str
    series_uid: str | None
    expected: dict[str, InstanceRef]
    classes: tuple[str, ...]

    def identifier(self) -> Dataset:
        query = Dataset()
        query.StudyInstanceUID = self.study_uid
        if self.series_uid is None:
            query.QueryRetrieveLevel = "STUDY"
        else:
            query.QueryRetrieveLevel = "IMAGE"
            query.SeriesInstanceUID = self.series_uid
            query.SOPInstanceUID = sorted(self.expected)
        return query


def _plan(listed: Sequence[InstanceRef], todo: Sequence[InstanceRef]) -> list[_GetUnit]:
    """C-GETs for ``todo``: the whole study where all of it is missing and its SOP classes
    fit one association, else the missing instances of each series, by groups of classes."""
    missing = {ref.sop_uid for ref in todo}
    by_study: dict[str, list[InstanceRef]] = {}
    for ref in listed:
        by_study.setdefault(ref.study_uid, []).append(ref)
    units: list[_GetUnit] = []
    for study_uid, refs in by_study.items():
        wanted = [ref for ref in refs if ref.sop_uid in missing]
        if not wanted:
            continue
        classes = sorted({ref.sop_class_uid or "" for ref in refs})
        groups = [
            tuple(classes[i : i + _CLASSES_PER_ASSOCIATION])
            for i in range(0, len(classes), _CLASSES_PER_ASSOCIATION)
        ]
        if len(wanted) == len(refs) and len(groups) == 1:
            units.append(
                _GetUnit(
                    f"study {study_uid}",
                    study_uid,
                    None,
                    {ref.sop_uid: ref for ref in refs},
                    groups[0],
                )
            )
            continue
        for group in groups:
            by_series: dict[str, dict[str, InstanceRef]] = {}
            for ref in wanted:
                if ref.sop_class_uid in group:
                    by_series.setdefault(ref.series_uid, {})[ref.sop_uid] = ref
            for series_uid, expected in by_series.items():
                units.append(
                    _GetUnit(
                        f"{len(expected)} instance(s) of series {series_uid} of study {study_uid}",
                        study_uid,
                        series_uid,
                        expected,
                        group,
                    )
                )
    return units


class _Receiver:
    """Checks and stores the C-STORE sub-operations of one C-GET.

    Called by pynetdicom for each instance, one at a time, in the thread that
    runs the C-GET. After the first
    problem every further instance is refused unread (the C-GET still runs to its
    end, and nothing more is written).
    """

    def __init__(
        self, node: DimseNode, unit: _GetUnit, dest: _Destination, on_stored: Callable[[], None]
    ) -> None:
        self.node = node
        self.unit = unit
        self.dest = dest
        self.on_stored = on_stored
        self.received: dict[str, _Received] = {}
        self.problem: DicomWebError | None = None

    def __call__(self, event: Any) -> int:
        if self.problem is not None:
            return _CANNOT_UNDERSTAND
        try:
            self._store(event)
        except DicomWebError as exc:
            self.problem = exc
            return _CANNOT_UNDERSTAND
        except Exception as exc:  # a write that fails, an unreadable data set...
            self.problem = DicomWebError(
                f"Could not store an instance of {self.unit.what} from {self.node.public_url}: "
                f"{type(exc).__name__}: {_printable(str(exc))}"
            )
            return _CANNOT_UNDERSTAND
        return _SUCCESS

    def _store(self, event: Any) -> None:
        node, unit = self.node, self.unit
        announced = _printable(str(event.request.AffectedSOPInstanceUID or ""), 64)
        data = event.encoded_dataset()
        digest = hashlib.sha256(data).hexdigest()
        payload = _Payload({}, len(data), digest, data, None)
        identity = _identify(node.public_url, f"instance {announced} of {unit.what}", payload)
        sop = _printable(identity.sop_uid, 64)
        ref = unit.expected.get(identity.sop_uid)
        if identity.sop_uid != announced:
            raise DicomWebError(
                f"{node.public_url} sent SOP Instance {sop} (data set) as {announced} (C-STORE "
                f"command) in {unit.what}."
            )
        if ref is None:
            raise DicomWebError(
                f"{node.public_url} sent an instance ({sop}) that its C-FIND did not list for "
                f"{unit.what}."
            )
        if identity.study_uid != unit.study_uid:
            study = _printable(identity.study_uid or "(none)", 64)
            raise DicomWebError(
                f"{node.public_url} sent instance {sop} of study {study} when asked for "
                f"{unit.what}."
            )
        if ref.transfer_syntax_uid and identity.transfer_syntax_uid != ref.transfer_syntax_uid:
            raise DicomWebError(
                f"{node.public_url} transcoded {ref.label} from its stored transfer syntax "
                f"{ref.transfer_syntax_uid} to {identity.transfer_syntax_uid}; the workbench "
                "imports only the PACS's originals."
            )
        if identity.sop_uid in self.received:
            raise DicomWebError(f"{node.public_url} sent {ref.label} twice in {unit.what}.")
        rel = self.dest.store(payload)
        stored = dataclasses.replace(
            ref,
            sop_class_uid=identity.sop_class_uid or ref.sop_class_uid,
            transfer_syntax_uid=identity.transfer_syntax_uid,
        )
        self.received[identity.sop_uid] = _Received(stored, len(data), rel, None)
        self.on_stored()


def _get_unit(
    node: DimseNode, unit: _GetUnit, dest: _Destination, on_stored: Callable[[], None]
) -> list[_Received]:
    """Run one C-GET, storing what it brings; exactly the expected instances must arrive."""
    receiver = _Receiver(node, unit, dest, on_stored)
    contexts = [(STUDY_ROOT_GET, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])]
    contexts += [(uid, [ts]) for uid in unit.classes for ts in OFFERED_TRANSFER_SYNTAXES]
    resume = "; " + _RESUME
    final: Dataset | None = None
    with _association(
        node,
        contexts,
        what=f"retrieving {unit.what}",
        scp_classes=unit.classes,
        on_store=receiver,
        hint=resume,
    ) as assoc:
        since = time.monotonic()
        for status, _ in assoc.send_c_get(unit.identifier(), STUDY_ROOT_GET):
            if receiver.problem is not None:
                assoc.abort()  # stop the PACS sending the rest of what will be refused
                break
            if not status:
                after = f" after {len(receiver.received)} instance(s)"
                lost = _lost(assoc, node, "C-GET", unit.what, since=since, after=after)
                raise DicomWebError(lost + resume + ".")
            since = time.monotonic()
            if int(status.Status) not in _PENDING:
                final = status
    if receiver.problem is not None:
        raise receiver.problem
    if final is None:
        raise DicomWebError(
            f"{node.public_url} ended the C-GET of {unit.what} without a final status{resume}."
        )
    code = int(final.Status)
    if code not in (_SUCCESS, _WARNING):
        raise DicomWebError(
            f"{node.public_url} refused the C-GET of {unit.what}: {_status_text(final)}; "
            f"{len(receiver.received)} instance(s) arrived and are kept{resume}."
        )
    missing = sorted(set(unit.expected) - set(receiver.received))
    if missing:
        failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
        detail = f", {failed} sub-operation(s) failed" if failed else ""
        raise DicomWebError(
            f"{node.public_url} sent {len(receiver.received)} of {len(unit.expected)} "
            f"instance(s) of {unit.what}{detail} (missing e.g. instance {missing[0]}): partial "
            f"results{resume}."
        )
    return list(receiver.received.values())


def _resumable(exc: DicomWebError) -> DicomWebError:
    """``exc`` saying how to go on: every retrieval failure leaves a resumable folder."""
    text = str(exc)
    return exc if _RESUME in text else DicomWebError(f"{text.rstrip('.')}; {_RESUME}.")


def retrieve_studies_dimse(
    node: DimseNode,
    study_uids: Sequence[str],
    dest: str | Path,
    *,
    workers: int = 2,
    progress: Progress | None = None,
    indexer: FolderIndexer | None = None,
) -> StudyRetrieval:
    """Retrieve whole studies into ``dest`` with C-FIND and C-GET; resume.

    Each study's instances are listed (C-FIND at IMAGE level); a study of which
    nothing is here is asked for in one C-GET, one partly here instance by
    instance (IMAGE-level C-GETs per series, only what is missing). Files
    already here are verified (hash against name) and kept; files of other
    studies or instances not listed are removed.

    Parameters
    ----------
    node : DimseNode
    study_uids : sequence of str
    dest : str or Path
        Destination folder (created); files go to ``dicom/<sha[:2]>/<sha>.dcm``.
    workers : int, default 2
        C-GET associations under way at once (threads).
    progress : callable, optional
        ``progress(done, total, message)``.
    indexer : FolderIndexer, optional
        Processes that index the retrieved files as they are written.

    Returns
    -------
    StudyRetrieval
        The instances as listed (with the transfer syntax each arrived in) and
        the outcome.

    Raises
    ------
    DicomWebError
        An unknown study, an unreachable or refusing node, partial results or an
        invalid instance: one line naming the study or instance. What was
        retrieved before it stays and is reused by the next call.
    """
    uids = list(dict.fromkeys(str(uid).strip() for uid in study_uids if str(uid).strip()))
    if not uids:
        raise DicomWebError("Expected at least one Study Instance UID; found none.")
    root = Path(dest)
    present, removed = _prepare(root, workers)
    try:
        listed = list_study_instances_dimse(node, uids)
    except DicomWebError as exc:
        raise _resumable(exc) from exc
    wanted = {ref.sop_uid: ref for ref in listed}
    files: dict[str, str] = {}
    for sop, item in sorted(present.items()):
        ref = wanted.get(sop)
        if ref is not None and item.identity.study_uid == ref.study_uid:
            files[sop] = item.rel
        else:
            (root / item.rel).unlink()
            removed += 1
    todo = [ref for ref in listed if ref.sop_uid not in files]
    n_skipped = len(files)
    tally = _Tally(files, len(listed), progress)
    try:
        with _Destination(root, indexer) as into:
            _run(
                lambda unit: _get_unit(node, unit, into, tally.stored),
                _plan(listed, todo),
                workers=workers,
                tally=tally,
                describe=lambda exc: DicomWebError(
                    f"Retrieving from {node.public_url} failed: {type(exc).__name__}: "
                    f"{_printable(str(exc))}"
                ),
            )
    except DicomWebError as exc:
        raise _resumable(exc) from exc
    finally:
        shutil.rmtree(root / _INCOMING, ignore_errors=True)
    arrived = {ref.sop_uid: ref for ref in tally.refs}
    instances = tuple(arrived.get(ref.sop_uid, ref) for ref in listed)
    return StudyRetrieval(
        instances=instances,
        outcome=RetrievalOutcome(
            files={ref.sop_uid: tally.files[ref.sop_uid] for ref in instances},
            n_fetched=len(tally.files) - n_skipped,
            n_skipped=n_skipped,
            n_bytes_fetched=tally.n_bytes,
            n_removed=removed,
        ),
    )


# --------------------------------------------------------------------------- store


#: C-STORE statuses that mean stored (PS3.4 B.2.3): success and the warnings
#: "coercion of data elements", "elements discarded", "data set does not match SOP class".
_STORED = (_SUCCESS, 0xB000, 0xB006, 0xB007)


def _series_instances(assoc: Any, node: DimseNode, study_uid: str, series_uid: str) -> set[str]:
    """SOP Instance UIDs the node holds in a series (IMAGE-level C-FIND)."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = series_uid
    query.SOPInstanceUID = ""
    found = _find(assoc, node, query, f"the instances of series {series_uid}")
    return {str(item.get("SOPInstanceUID", "") or "") for item in found} - {""}


def store_instances_dimse(
    node: DimseNode,
    datasets: Sequence[Dataset],
    *,
    progress: Progress | None = None,
) -> StoreOutcome:
    """Send the data sets the node does not hold yet with C-STORE, on one association.

    An IMAGE-level C-FIND per series first lists what the node holds; those
    instances are not sent again. Each data set is sent in its own transfer
    syntax (one presentation context per SOP class and transfer syntax).

    Parameters
    ----------
    node : DimseNode
        The PACS must accept C-STORE from ``node.calling_ae`` (and allow it C-FIND).
    datasets : sequence of pydicom.Dataset
        Complete instances with file meta information.
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    StoreOutcome

    Raises
    ------
    DicomWebError
        The node is unreachable, refuses the association, the query or an
        instance (named in the message, with the status the node gave).
    """
    series = sorted({(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) for ds in datasets})
    what = f"the export of {len(datasets)} instances"
    present: set[str] = set()
    with _association(node, _FIND_CONTEXT, what=what) as assoc:
        for study_uid, series_uid in series:
            present |= _series_instances(assoc, node, study_uid, series_uid)
    already = [str(ds.SOPInstanceUID) for ds in datasets if str(ds.SOPInstanceUID) in present]
    missing = [as_part10(ds) for ds in datasets if str(ds.SOPInstanceUID) not in present]
    total = len(datasets)
    if progress is not None and already:
        progress(len(already), total, "storing")
    stored: list[str] = []
    if not missing:
        return StoreOutcome(stored=(), already_present=tuple(already))
    contexts = sorted(
        {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in missing}
    )
    classes = ", ".join(sorted({UID(sop_class).name for sop_class, _ in contexts}))
    with _association(
        node,
        [(sop_class, [syntax]) for sop_class, syntax in contexts],
        what=what,
        hint=f"; or it accepts none of the SOP classes sent ({classes})",
    ) as assoc:
        for ds in missing:
            sop = str(ds.SOPInstanceUID)
            label = f"{ds.get('Modality', '?')} instance {sop} of study {ds.StudyInstanceUID}"
            since = time.monotonic()
            try:
                status = assoc.send_c_store(ds)
            except ValueError as exc:  # no accepted presentation context for it
                raise DicomWebError(
                    f"{node.public_url} did not accept {ds.SOPClassUID.name} in "
                    f"{ds.file_meta.TransferSyntaxUID.name} for {label}: {exc}."
                ) from exc
            if not status:
                raise DicomWebError(_lost(assoc, node, "C-STORE", label, since=since) + ".")
            if int(status.Status) not in _STORED:
                raise DicomWebError(f"{node.public_url} refused {label}: {_status_text(status)}.")
            stored.append(sop)
            if progress is not None:
                progress(len(already) + len(stored), total, "storing")
    return StoreOutcome(stored=tuple(stored), already_present=tuple(already))
