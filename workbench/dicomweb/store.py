"""Store instances with STOW-RS (PS3.18 10.5), idempotently.

Before storing, QIDO-RS (PS3.18 10.6) lists the SOP Instance UIDs the server
already holds in each series concerned; instances already there are not sent
again. With deterministic UIDs this makes a repeated export add nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from workbench.dicomweb.connection import DicomWebServer, describe_failure
from workbench.dicomweb.retrieve import search_all
from workbench.errors import DicomWebError

__all__ = ["StoreOutcome", "existing_instances", "store_instances"]

Progress = Callable[[int, int, str], None]

_SOP_UID = "00080018"
_FAILED_SOP = "FailedSOPSequence"


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What :func:`store_instances` did.

    Parameters
    ----------
    stored : tuple of str
        SOP Instance UIDs sent and accepted now.
    already_present : tuple of str
        SOP Instance UIDs the server held before (not sent again).
    """

    stored: tuple[str, ...]
    already_present: tuple[str, ...]


def existing_instances(server: DicomWebServer, study_uid: str, series_uid: str) -> set[str]:
    """SOP Instance UIDs the server holds in a series (empty when it has no such series)."""
    try:
        found = search_all(
            server.client().search_for_instances,
            _SOP_UID,
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            fields=["SOPInstanceUID"],
        )
    except Exception as exc:
        response = getattr(exc, "response", None)
        if response is not None and response.status_code == 404:
            return set()
        raise describe_failure(server, exc, f"the instances of series {series_uid}") from exc
    out: set[str] = set()
    for item in found:
        values = item.get(_SOP_UID, {}).get("Value") or []
        if values:
            out.add(str(values[0]))
    return out


def as_part10(ds: Dataset) -> Dataset:
    """``ds`` as read back from a complete PS3.10 file (preamble, 'DICM', full file meta).

    STOW-RS sends DICOM files (PS3.18 10.5.1.2); writing and reading once fills
    in File Meta Information Group Length and Version wherever they are missing.
    """
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def store_instances(
    server: DicomWebServer,
    datasets: Sequence[Dataset],
    *,
    progress: Progress | None = None,
) -> StoreOutcome:
    """Send the datasets the server does not hold yet, one STOW-RS request per instance.

    Parameters
    ----------
    server : DicomWebServer
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
        The server is unreachable or refuses an instance (named in the message).
    """
    # Per series, not per study: the series written by an export are small, and a QIDO-RS
    # answer costs the server time in proportion to the instances it lists.
    series = sorted({(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) for ds in datasets})
    present: set[str] = set()
    for study_uid, series_uid in series:
        present |= existing_instances(server, study_uid, series_uid)
    stored: list[str] = []
    already: list[str] = []
    total = len(datasets)
    for i, ds in enumerate(datasets, start=1):
        sop = str(ds.SOPInstanceUID)
        label = f"{ds.get('Modality', '?')} instance {sop} of study {ds.StudyInstanceUID}"
        if sop in present:
            already.append(sop)
        else:
            try:
                answer = server.client().store_instances([as_part10(ds)])
            except Exception as exc:
                raise describe_failure(server, exc, f"storing {label}") from exc
            failed = answer.get(_FAILED_SOP) if answer is not None else None
            if failed:
                reason = failed[0].get("FailureReason", "?")
                raise DicomWebError(
                    f"{server.public_url} refused {label} (failure reason {reason})."
                )
            stored.append(sop)
            present.add(sop)
        if progress is not None:
            progress(i, total, "storing")
    return StoreOutcome(stored=tuple(stored), already_present=tuple(already))
