"""What a DIMSE retrieval or export refuses, against a PACS that misbehaves on purpose.

The PACS is a pynetdicom Query/Retrieve SCP on loopback whose C-FIND lists
what a test says and whose C-GET sends what it says (pydicom's real ``CT_small``
and ``MR_small``, with UIDs changed where a case needs it). Each case must fail
with one line naming the instance or study, and keep nothing it refused.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from workbench.dicomweb.dimse import DimseNode, retrieve_studies_dimse, store_instances_dimse
from workbench.errors import DicomWebError

JPEG2000 = "1.2.840.10008.1.2.4.91"


@dataclass
class FakePacs:
    """``listed``: the C-FIND's IMAGE-level answers; ``sent``: what the C-GET sends."""

    listed: list[Dataset] = field(default_factory=list)
    sent: list[Dataset] = field(default_factory=list)
    final: int | None = None  # a failure status to end the C-GET with instead
    any_study: bool = False  # the C-FIND answers with every listed instance, whatever is asked
    get_delay: float = 0.0  # seconds of silence before the C-GET sends anything
    store_status: int = 0x0000  # the answer to each C-STORE
    received: list[Dataset] = field(default_factory=list)  # what C-STORE brought

    def on_store(self, event: Any) -> int:
        if self.store_status in (0x0000, 0xB000):
            self.received.append(event.dataset)
        return self.store_status

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        wanted = event.identifier.StudyInstanceUID
        for item in self.listed:
            if item.StudyInstanceUID != wanted and not self.any_study:
                continue
            answer = Dataset()
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(answer, keyword, getattr(item, keyword))
            answer.SOPClassUID = item.SOPClassUID
            answer.QueryRetrieveLevel = "IMAGE"
            if "AvailableTransferSyntaxUID" in item:
                answer.AvailableTransferSyntaxUID = item.AvailableTransferSyntaxUID
            yield 0xFF00, answer

    def on_get(self, event: Any) -> Iterator[Any]:
        time.sleep(self.get_delay)
        yield len(self.sent)
        if self.final is not None:
            yield self.final, None
            return
        for item in self.sent:
            yield 0xFF00, item


@pytest.fixture
def fake_pacs() -> Iterator[tuple[FakePacs, DimseNode]]:
    fake = FakePacs()
    ae = AE(ae_title="FAKEPACS")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for storage in (CTImageStorage, MRImageStorage):
        ae.add_supported_context(storage, scu_role=True, scp_role=True)
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[
            (evt.EVT_C_FIND, fake.on_find),
            (evt.EVT_C_GET, fake.on_get),
            (evt.EVT_C_STORE, fake.on_store),
        ],
    )
    try:
        yield fake, DimseNode("127.0.0.1", server.server_address[1], "FAKEPACS", timeout=10.0)
    finally:
        server.shutdown()


def real(name: str, **changes: str) -> Dataset:
    ds = pydicom.dcmread(str(get_testdata_file(name)))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if "SOPInstanceUID" in changes:
        ds.file_meta.MediaStorageSOPInstanceUID = changes["SOPInstanceUID"]
    return ds


def stored(folder: Path) -> list[Path]:
    return sorted((folder / "dicom").rglob("*.dcm")) if (folder / "dicom").is_dir() else []


def test_a_well_behaved_fake_is_retrieved(
    fake_pacs: tuple[FakePacs, DimseNode], tmp_path: Path
) -> None:
    fake, node = fake_pacs
    ct = real("CT_small.dcm")
    fake.listed = fake.sent = [ct]
    done = retrieve_studies_dimse(node, [ct.StudyInstanceUID], tmp_path)
    assert done.outcome.n_fetched == 1 and len(stored(tmp_path)) == 1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("another study", "sent instance 1.2.3.4.5.6 of study 9.8.7 when asked for study"),
        ("not listed", r"sent an instance \(1.2.3.4.5.7\) that its C-FIND did not list"),
        ("one missing", r"sent 1 of 2 instance\(s\) of study .* partial results; run the command"),
        ("transcoded", f"transcoded instance .* from its stored transfer syntax {JPEG2000} to"),
        ("refused", "refused the C-GET of study .*: status 0xA701"),
        ("twice", "sent instance .* twice in study"),
        ("refused, then a good one", r"sent an instance \(1.2.3.4.5.7\) that its C-FIND did"),
        ("answer of another study", "answered the C-FIND .* with an instance of study 9.8.7"),
        ("no valid UID", r"without a valid SOP Instance.*\(found 1.2.x3, "),
    ],
)
def test_misbehaving_pacs_is_named_in_one_line_and_nothing_refused_is_kept(
    fake_pacs: tuple[FakePacs, DimseNode], tmp_path: Path, case: str, message: str
) -> None:
    fake, node = fake_pacs
    ct = real("CT_small.dcm")
    study = ct.StudyInstanceUID
    fake.listed, fake.sent = [ct], [ct]
    if case == "another study":
        stranger = real("CT_small.dcm", SOPInstanceUID="1.2.3.4.5.6", StudyInstanceUID="9.8.7")
        fake.listed = [ct, real("CT_small.dcm", SOPInstanceUID="1.2.3.4.5.6")]
        fake.sent = [stranger]
    elif case == "not listed":
        fake.sent = [real("CT_small.dcm", SOPInstanceUID="1.2.3.4.5.7")]
    elif case == "one missing":
        fake.listed = [ct, real("CT_small.dcm", SOPInstanceUID="1.2.3.4.5.8")]
    elif case == "transcoded":
        listed = copy.deepcopy(ct)
        listed.AvailableTransferSyntaxUID = JPEG2000
        fake.listed = [listed]
    elif case == "refused":
        fake.final = 0xA701
    elif case == "twice":
        fake.sent = [ct, ct]
    elif case == "refused, then a good one":
        fake.sent = [real("CT_small.dcm", SOPInstanceUID="1.2.3.4.5.7"), ct]
    elif case == "answer of another study":
        fake.listed, fake.any_study = [ct, real("CT_small.dcm", StudyInstanceUID="9.8.7")], True
    elif case == "no valid UID":
        fake.listed = [real("CT_small.dcm", SOPInstanceUID="1.2.x3")]
    with pytest.raises(DicomWebError, match=message) as failure:
        retrieve_studies_dimse(node, [study], tmp_path, workers=1)
    assert "\n" not in str(failure.value)
    assert "run the command again to resume" in str(failure.value)
    if case in ("another study", "not listed", "transcoded", "refused, then a good one"):
        assert stored(tmp_path) == []  # neither what was refused nor anything after it


def test_a_study_uid_that_is_no_uid_is_refused_before_any_query(
    fake_pacs: tuple[FakePacs, DimseNode], tmp_path: Path
) -> None:
    _, node = fake_pacs
    with pytest.raises(DicomWebError, match="Expected a Study Instance UID"):
        retrieve_studies_dimse(node, ["1.2.3\\4.5"], tmp_path)


def test_the_same_instance_in_two_studies_is_refused(
    fake_pacs: tuple[FakePacs, DimseNode], tmp_path: Path
) -> None:
    fake, node = fake_pacs
    ct = real("CT_small.dcm")
    twin = real("CT_small.dcm", StudyInstanceUID="1.2.3.99")
    fake.listed = [ct, twin]
    with pytest.raises(DicomWebError, match=f"holds SOP Instance {ct.SOPInstanceUID} in study"):
        retrieve_studies_dimse(node, [ct.StudyInstanceUID, "1.2.3.99"], tmp_path)


def test_a_transfer_syntax_reported_with_several_values_accepts_any_of_them(
    fake_pacs: tuple[FakePacs, DimseNode], tmp_path: Path
) -> None:
    fake, node = fake_pacs
    ct = real("CT_small.dcm")
    listed = copy.deepcopy(ct)
    listed.AvailableTransferSyntaxUID = [ct.file_meta.TransferSyntaxUID, JPEG2000]
    fake.listed, fake.sent = [listed], [ct]
    done = retrieve_studies_dimse(node, [ct.StudyInstanceUID], tmp_path)
    assert done.outcome.n_fetched == 1
    assert done.instances[0].transfer_syntax_uid == ct.file_meta.TransferSyntaxUID


def test_a_pacs_silent_for_longer_than_the_timeout_is_named_a_timeout(
    fake_pacs: tuple[FakePacs, DimseNode], tmp_path: Path
) -> None:
    fake, node = fake_pacs
    ct = real("CT_small.dcm")
    fake.listed, fake.sent, fake.get_delay = [ct], [ct], 3.0
    impatient = DimseNode(node.host, node.port, node.called_ae, timeout=1.0)
    with pytest.raises(DicomWebError, match="did not answer the C-GET for study .* within 1 s"):
        retrieve_studies_dimse(impatient, [ct.StudyInstanceUID], tmp_path)


# --------------------------------------------------------------------------- export (C-STORE)


def test_export_sends_what_is_missing_and_names_a_refused_instance(
    fake_pacs: tuple[FakePacs, DimseNode],
) -> None:
    fake, node = fake_pacs
    ct, mr = real("CT_small.dcm"), real("MR_small.dcm")
    fake.listed = [ct]  # the IMAGE-level C-FIND says the PACS holds the CT
    done = store_instances_dimse(node, [ct, mr])
    assert done.already_present == (ct.SOPInstanceUID,) and done.stored == (mr.SOPInstanceUID,)
    assert [d.SOPInstanceUID for d in fake.received] == [mr.SOPInstanceUID]

    fake.listed, fake.received = [], []
    fake.store_status = 0xB000  # a warning ("coercion of data elements") is stored
    assert store_instances_dimse(node, [mr]).stored == (mr.SOPInstanceUID,)
    fake.store_status = 0xA700  # "out of resources"
    fake.received = []
    with pytest.raises(DicomWebError, match=rf"refused CT instance {ct.SOPInstanceUID} .*0xA700"):
        store_instances_dimse(node, [ct, mr])
    assert fake.received == []  # the export stops at the first refusal
    plan = real("rtplan.dcm")  # a SOP class the fake does not accept
    fake.store_status = 0x0000
    with pytest.raises(DicomWebError, match="did not accept RT Plan Storage") as refused:
        store_instances_dimse(node, [ct, plan])
    assert "\n" not in str(refused.value)
    with pytest.raises(DicomWebError, match=r"none of the SOP classes sent \(RT Plan Storage\)"):
        store_instances_dimse(node, [plan])
