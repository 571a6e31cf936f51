"""What a misbehaving DICOMweb server gets: transcoding, truncation, partial and invalid answers.

The server's answers are built here (a stub HTTP session) so that each fault is
exact; the real-server behaviour is covered in ``test_dicomweb.py``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from workbench.dicomweb import DicomWebServer, InstanceRef, list_study_instances
from workbench.dicomweb.retrieve import fetch_instance, fetch_series, parse_query
from workbench.errors import DicomWebError

CT = Path(str(get_testdata_file("CT_small.dcm")))
BOUNDARY = "wb-test-boundary"


def multipart(parts: list[bytes], *, content_length: int | None = None) -> bytes:
    out = b""
    for data in parts:
        length = len(data) if content_length is None else content_length
        out += (
            (
                f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n"
                f"Content-Length: {length}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


class StubSession:
    """Answers every GET with the same prepared response."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body, self.status = body, status

    def get(self, url: str, **kw: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = self.status
        response.raw = io.BytesIO(self.body)
        response.headers["Content-Type"] = (
            f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        )
        response.url = url
        return response


class PatchableServer(DicomWebServer):
    """A server whose ``session`` and ``client`` a test may replace (no ``__slots__``)."""


def server_answering(monkeypatch: pytest.MonkeyPatch, body: bytes, status: int = 200) -> Any:
    server = PatchableServer("http://127.0.0.1:9/dicom-web")
    monkeypatch.setattr(server, "session", lambda: StubSession(body, status))
    return server


def ref_of(path: Path, **kw: Any) -> InstanceRef:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return InstanceRef(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), **kw
    )


def test_instance_as_stored_is_returned_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    data = CT.read_bytes()
    assert fetch_instance(server_answering(monkeypatch, multipart([data])), ref_of(CT)) == data


def test_transcoded_instance_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = ref_of(CT, transfer_syntax_uid="1.2.840.10008.1.2.4.91")
    with pytest.raises(DicomWebError, match="transcoded .* from its stored transfer syntax"):
        fetch_instance(server_answering(monkeypatch, multipart([CT.read_bytes()])), ref)


def test_server_that_cannot_send_as_stored_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    server = server_answering(monkeypatch, b"", status=406)
    with pytest.raises(DicomWebError, match="only transcodes"):
        fetch_instance(server, ref_of(CT))


def test_truncated_and_invalid_instances_name_the_instance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = CT.read_bytes()
    ref = ref_of(CT)
    short = multipart([data[:-100]], content_length=len(data))
    with pytest.raises(DicomWebError, match=f"truncated.*|{ref.sop_uid}"):
        fetch_instance(server_answering(monkeypatch, short), ref)
    with pytest.raises(DicomWebError, match=f"invalid DICOM file for instance {ref.sop_uid}"):
        fetch_instance(server_answering(monkeypatch, multipart([b"not dicom at all"])), ref)
    other = Path(str(get_testdata_file("MR_small.dcm")))
    with pytest.raises(DicomWebError, match="sent SOP Instance"):
        fetch_instance(server_answering(monkeypatch, multipart([other.read_bytes()])), ref)


def test_series_with_a_missing_instance_is_partial(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = ref_of(CT)
    ghost = InstanceRef(ref.study_uid, ref.series_uid, "1.2.3.4.5.6.7")
    server = server_answering(monkeypatch, multipart([CT.read_bytes()]))
    with pytest.raises(DicomWebError, match="sent 1 of 2 instances .* partial results"):
        fetch_series(server, [ref, ghost])


class StubClient:
    def __init__(self, n_listed: int, n_declared: int) -> None:
        self.n_listed, self.n_declared = n_listed, n_declared

    def search_for_studies(self, **kw: Any) -> list[dict[str, Any]]:
        return [{"00201208": {"vr": "IS", "Value": [self.n_declared]}}]

    def search_for_instances(self, limit: int | None = None, **kw: Any) -> list[dict[str, Any]]:
        return [
            {
                "0020000E": {"vr": "UI", "Value": ["1.2.3"]},
                "00080018": {"vr": "UI", "Value": [f"1.2.3.{i}"]},
            }
            for i in range(self.n_listed)
        ]


def test_study_listing_shorter_than_its_instance_count_is_partial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = PatchableServer("http://127.0.0.1:9/dicom-web")
    monkeypatch.setattr(server, "client", lambda: StubClient(n_listed=3, n_declared=5))
    with pytest.raises(DicomWebError, match="lists 3 instance.* expected 5 .*partial results"):
        list_study_instances(server, "1.2")
    monkeypatch.setattr(server, "client", lambda: StubClient(n_listed=5, n_declared=5))
    assert len(list_study_instances(server, "1.2")) == 5


def test_query_terms_are_checked() -> None:
    assert parse_query("ModalitiesInStudy=CT&StudyDate=20240101-20241231") == {
        "ModalitiesInStudy": "CT",
        "StudyDate": "20240101-20241231",
    }
    with pytest.raises(DicomWebError, match="not a DICOM attribute keyword"):
        parse_query("Modality_In_Study=CT")
    with pytest.raises(DicomWebError, match="KEYWORD=VALUE"):
        parse_query("ModalitiesInStudy")


class FailingBody:
    """A streamed answer that sends ``head`` and then fails with ``error`` (as urllib3 does)."""

    def __init__(self, head: bytes, error: Exception) -> None:
        self.head, self.error = head, error

    def stream(self, amt: int, decode_content: bool = True) -> Any:
        yield self.head
        raise self.error

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ReadTimeoutError(None, "/dicom-web", "Read timed out."), "did not answer in time for"),
        (
            ProtocolError("Connection broken: IncompleteRead"),
            "Cannot reach the DICOMweb server .* for",
        ),
    ],
)
def test_answer_that_stalls_or_breaks_midway_names_the_instance(
    monkeypatch: pytest.MonkeyPatch, error: Exception, message: str
) -> None:
    data = CT.read_bytes()
    ref = ref_of(CT)
    session = StubSession(b"")
    real_get = session.get

    def get(url: str, **kw: Any) -> requests.Response:
        response = real_get(url, **kw)
        response.raw = FailingBody(multipart([data])[:5000], error)
        return response

    monkeypatch.setattr(session, "get", get)
    server = PatchableServer("http://127.0.0.1:9/dicom-web")
    monkeypatch.setattr(server, "session", lambda: session)
    with pytest.raises(DicomWebError, match=f"{message} instance {ref.sop_uid}") as failure:
        fetch_instance(server, ref)
    assert "\n" not in str(failure.value)
