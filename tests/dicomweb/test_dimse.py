"""DIMSE intake (C-FIND, C-GET) from a real Orthanc on loopback, with real files.

Orthanc knows the calling AE title ``WORKBENCH`` (``scripts/orthanc_test_server.sh``).
The real files come from pydicom's test data (GE CT, a JPEG 2000 and a JPEG
Lossless NM from another vendor, an RLE secondary capture, an RT Plan in Implicit
VR) next to the workbench's own phantoms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import pydicom
import pytest
from orthanc_server import Orthanc, stop_orthanc, upload
from pydicom.data import get_testdata_file

from workbench import errors
from workbench.dicom.deidentify import DeidentificationOptions
from workbench.dicomweb import retrieve as retrieve_module
from workbench.dicomweb.dimse import (
    DimseNode,
    find_studies_dimse,
    list_study_instances_dimse,
    retrieve_studies_dimse,
    search_studies_dimse,
)
from workbench.services import audit_trail, pacs, pacs_servers, testsets

#: Real files of several vendors and transfer syntaxes (none shares a SOP Instance UID).
REAL_FILES = ("CT_small.dcm", "JPEG2000.dcm", "JPEG-LL.dcm", "SC_rgb_rle.dcm", "rtplan.dcm")


def node_of(orthanc: Orthanc, **kw: object) -> DimseNode:
    if not orthanc.dimse:
        pytest.skip("the Orthanc test server was started without its DICOM port")
    return DimseNode.parse(orthanc.dimse, **kw)  # type: ignore[arg-type]


def study_uids(paths: list[Path]) -> list[str]:
    return sorted(
        {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in paths}
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def real_files(orthanc: Orthanc) -> list[Path]:
    paths = [Path(str(get_testdata_file(name))) for name in REAL_FILES]
    upload(orthanc, paths)
    return paths


@pytest.fixture(scope="module")
def phantoms(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = harness.synth(tmp_path_factory.mktemp("dimse") / "synth", n_cases=2, seed=41)
    paths = sorted(root.rglob("*.dcm"))
    upload(orthanc, paths)
    return paths


def same_data_set(original: Path, retrieved: Path) -> None:
    """Every element of the original, pixel data included, is in the retrieved file unchanged."""
    a, b = pydicom.dcmread(original), pydicom.dcmread(retrieved)
    assert b.file_meta.TransferSyntaxUID == a.file_meta.TransferSyntaxUID, original.name
    for element in a:
        if element.tag == 0xFFFCFFFC:  # Data Set Trailing Padding is not sent over DIMSE
            continue
        assert element.tag in b, (original.name, element.keyword)
        assert b[element.tag].value == element.value, (original.name, element.keyword)


# --------------------------------------------------------------------------- query


def test_c_find_selects_studies_by_attribute_and_lists_their_instances(
    orthanc: Orthanc, real_files: list[Path]
) -> None:
    node = node_of(orthanc)
    rtplan = study_uids([real_files[4]])[0]
    assert rtplan in search_studies_dimse(node, {"ModalitiesInStudy": "RTPLAN"})
    assert rtplan not in search_studies_dimse(node, {"ModalitiesInStudy": "CT"})
    # A C-CANCEL stops the query at the limit; the association ends normally.
    assert len(search_studies_dimse(node, {"StudyDate": "19000101-21001231"}, limit=2)) == 2
    assert len(search_studies_dimse(node, {"StudyDate": "19000101-21001231"}, limit=1)) == 1
    # A filter given by tag is not emptied by the same attribute asked for by keyword.
    plans = find_studies_dimse(
        node, {"00080061": "RTPLAN"}, return_keys=["ModalitiesInStudy", "StudyDate"]
    )
    assert rtplan in [str(p.StudyInstanceUID) for p in plans]
    assert {str(p.ModalitiesInStudy) for p in plans} == {"RTPLAN"}
    nm_study = study_uids([real_files[1]])[0]  # JPEG2000.dcm and JPEG-LL.dcm share it
    listed = list_study_instances_dimse(node, [nm_study])
    originals = [pydicom.dcmread(p, stop_before_pixels=True) for p in real_files[1:3]]
    assert sorted(r.sop_uid for r in listed) == sorted(str(d.SOPInstanceUID) for d in originals)
    assert {r.sop_class_uid for r in listed} == {str(d.SOPClassUID) for d in originals}
    assert all(r.n_study_instances == 2 for r in listed)


# --------------------------------------------------------------------------- import


def test_import_over_dimse_keeps_each_instance_as_stored_and_records_the_source(
    orthanc: Orthanc, real_files: list[Path], phantoms: list[Path], tmp_path: Path
) -> None:
    node = node_of(orthanc)
    originals = real_files + phantoms
    wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        done = pacs.import_from_dimse(
            wb, qa1, node, name="dimse-set", studies=study_uids(originals)
        )
        assert done.n_fetched == len(originals) and done.n_skipped == 0
        assert done.test_set.n_dicom == len(originals) and done.test_set.n_unreadable == 0
        root = Path(done.test_set.root_path)
        retrieved = {
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
            for p in (root / "dicom").rglob("*.dcm")
        }
        for original in originals:
            sop = str(pydicom.dcmread(original, stop_before_pixels=True).SOPInstanceUID)
            path = retrieved[sop]
            assert path.stem == sha256(path)  # content-addressed
            same_data_set(original, path)  # JPEG 2000, JPEG Lossless and RLE not transcoded
        source = json.loads((root / "dataset.json").read_text())["source"]
        assert source["kind"] == "dimse" and source["server"] == node.public_url
        assert "calling AE title WORKBENCH" in source["transfer_syntax"]
        assert {i["sop_instance_uid"] for i in source["instances"]} == set(retrieved)
        entries = audit_trail.export_entries(wb, qa1, record_type="test_set", record_id="dimse-set")
        (entry,) = [e for e in entries if e["action"] == "testset.import.dimse"]
        assert set(entry["new_value"]["sop_instance_uids"]) == set(retrieved)
        assert entry["new_value"]["server"] == node.public_url
    finally:
        wb.close()


def test_phantom_set_over_dimse_passes_quality_locks_and_verifies(
    orthanc: Orthanc, phantoms: list[Path], tmp_path: Path
) -> None:
    node = node_of(orthanc)
    wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        pacs.import_from_dimse(
            wb,
            qa1,
            node,
            name="dimse-phantoms",
            studies=study_uids(phantoms),
            reference=phantoms[0].parents[3],
        )
        testsets.check_quality(wb, qa1, "dimse-phantoms")  # locking needs no critical finding
        testsets.lock_test_set(wb, qa1, "dimse-phantoms", password=harness.ACCOUNTS["qa1"][2])
        diff = testsets.verify_test_set(wb, qa1, "dimse-phantoms")
        assert not (diff.added or diff.removed or diff.changed)
    finally:
        wb.close()


def test_partly_retrieved_studies_fetch_only_what_is_missing(
    orthanc: Orthanc, phantoms: list[Path], tmp_path: Path
) -> None:
    node = node_of(orthanc)
    studies = study_uids(phantoms)
    first = retrieve_studies_dimse(node, studies, tmp_path)
    assert first.outcome.n_fetched == len(phantoms)
    files = sorted((tmp_path / "dicom").rglob("*.dcm"))
    digests = sorted(p.stem for p in files)
    files[0].unlink()
    files[1].unlink()
    files[2].write_bytes(files[2].read_bytes()[:500])  # cut short by a crash
    seen: list[tuple[int, int]] = []
    again = retrieve_studies_dimse(
        node, studies, tmp_path, progress=lambda done, total, _: seen.append((done, total))
    )
    assert again.outcome.n_fetched == 3 and again.outcome.n_skipped == len(phantoms) - 3
    assert again.outcome.n_removed == 1
    assert sorted(p.stem for p in (tmp_path / "dicom").rglob("*.dcm")) == digests
    assert seen[-1] == (len(phantoms), len(phantoms))
    assert [r.sop_uid for r in again.instances] == [r.sop_uid for r in first.instances]


def test_deidentified_import_over_dimse(
    orthanc: Orthanc, real_files: list[Path], tmp_path: Path
) -> None:
    node = node_of(orthanc)
    wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        done = pacs.import_from_dimse(
            wb,
            qa1,
            node,
            name="dimse-deid",
            studies=study_uids(real_files[:1]),
            deidentify=DeidentificationOptions(retain_dates_shifted=True),
        )
        root = Path(done.test_set.root_path)
        source = json.loads((root / "dataset.json").read_text())["source"]
        assert source["kind"] == "dimse" and "deidentification" in source
        (path,) = list((root / "dicom").rglob("*.dcm"))
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == "YES"
        original = pydicom.dcmread(real_files[0], stop_before_pixels=True)
        assert ds.SOPInstanceUID != original.SOPInstanceUID
        assert str(ds.PatientName) != str(original.PatientName)
        entries = audit_trail.export_entries(
            wb, qa1, record_type="test_set", record_id="dimse-deid"
        )
        assert [e["action"] for e in entries].count("testset.import.dimse") == 1
    finally:
        wb.close()


# --------------------------------------------------------------------------- failures


def test_refusals_and_unreachable_nodes_are_one_line_and_import_nothing(
    orthanc: Orthanc, real_files: list[Path], tmp_path: Path
) -> None:
    node = node_of(orthanc)
    study = study_uids(real_files[:1])
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        cases: list[tuple[DimseNode, list[str], str]] = [
            (node, ["1.2.3.4.5"], "has no study 1.2.3.4.5"),
            (
                node_of(orthanc, calling_ae="STRANGER"),
                study,
                "aborted the C-FIND for the instances of study .* allow AE title 'STRANGER'",
            ),
            (
                DimseNode(node.host, node.port, "NOT-ORTHANC"),
                study,
                "association from AE title 'WORKBENCH' .*'NOT-ORTHANC' must be its own",
            ),
            (
                DimseNode("127.0.0.1", closed, node.called_ae, timeout=2.0),
                study,
                f"Cannot reach the DICOM node dicom://WBTEST@127.0.0.1:{closed} .*: Connection "
                "refused",
            ),
        ]
        for target, studies, message in cases:
            with pytest.raises(errors.DicomWebError, match=message) as failure:
                pacs.import_from_dimse(wb, qa1, target, name="refused", studies=studies)
            assert "\n" not in str(failure.value)
        assert testsets.list_test_sets(wb) == []
    finally:
        wb.close()
    assert DimseNode.parse(" PACS @[::1]:104").address == "PACS@[::1]:104"
    assert DimseNode.parse("PACS@pacs-2.example.org:104").host == "pacs-2.example.org"
    for address, message in (
        ("WBTEST-127.0.0.1:4242", "Expected a DICOM node as AE@HOST:PORT"),
        ("WBTEST@pacs example:4242", "with a host name or IP address"),
        ("WBTEST@::1:4242", "an IPv6 address in brackets"),
        ("A-TITLE-LONGER-THAN-16@h:4242", "called AE title of 1-16 printable characters"),
        ("WBTEST@h:70000", "port 1-65535"),
    ):
        with pytest.raises(errors.DicomWebError, match=message):
            DimseNode.parse(address)


def test_configured_dimse_node_is_checked_queried_and_imported_from(
    orthanc: Orthanc, real_files: list[Path], tmp_path: Path
) -> None:
    """The app's path: an administrator configures the node, QA staff query and import."""
    node = node_of(orthanc)
    ct = pydicom.dcmread(real_files[0], stop_before_pixels=True)
    wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(wb)
        admin, qa1 = harness.login(wb, "admin"), harness.login(wb, "qa1")
        config = pacs_servers.PacsServerConfig(url=orthanc.dimse, protocol="dimse")
        added = pacs_servers.add_server(wb, admin, "dimse-pacs", config)
        assert added.is_dimse and added.config.calling_ae == "WORKBENCH"
        assert added.address == node.public_url
        stranger = dataclasses.replace(config, calling_ae="STRANGER")
        pacs_servers.add_server(wb, admin, "dimse-stranger", stranger)

        checked = pacs_servers.check_connection(wb, qa1, "dimse-pacs")
        assert checked.ok, checked.message
        assert checked.message.startswith(f"{node.public_url} answered a C-ECHO and a C-FIND")
        # Orthanc answers anyone's C-ECHO; the C-FIND shows the AE title may not query.
        refused = pacs_servers.check_connection(wb, qa1, "dimse-stranger")
        assert not refused.ok and "allow AE title 'STRANGER'" in refused.message
        assert "\n" not in refused.message

        [match] = pacs_servers.find_studies(
            wb, qa1, "dimse-pacs", pacs_servers.StudyQuery(study_uids=(str(ct.StudyInstanceUID),))
        )
        assert match.study_uid == ct.StudyInstanceUID and match.study_date == ct.StudyDate
        assert match.modalities == ("CT",) and match.n_instances == 1 and match.n_series == 1
        rtplans = pacs_servers.find_studies(
            wb, qa1, "dimse-pacs", pacs_servers.StudyQuery(modality="RTPLAN")
        )
        assert study_uids(real_files[4:]) == [m.study_uid for m in rtplans]

        done = pacs_servers.import_studies(
            wb, qa1, "dimse-pacs", name="configured-dimse", studies=[match.study_uid]
        )
        assert done.n_fetched == 1 and done.test_set.n_dicom == 1
        entries = audit_trail.export_entries(
            wb, qa1, record_type="test_set", record_id="configured-dimse"
        )
        (entry,) = [e for e in entries if e["action"] == "testset.import.dimse"]
        assert entry["new_value"]["server"] == node.public_url

        with pytest.raises(errors.NotFoundError, match="run-does-not-exist"):
            pacs_servers.export_run_to(wb, qa1, "dimse-pacs", "run-does-not-exist")
        with pytest.raises(errors.WorkflowError, match="no DICOMweb service"):
            pacs_servers.connect(wb, qa1, "dimse-pacs")
    finally:
        wb.close()


def test_node_stopped_mid_retrieval_then_resumed(
    phantoms: list[Path],
    private_orthanc: Callable[[], Orthanc],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = private_orthanc()
    upload(first, phantoms)
    studies = study_uids(phantoms)
    wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        killed: list[str] = []
        store = retrieve_module._Destination.store

        def crash_after_the_first_file(self: Any, payload: Any) -> str:
            rel = store(self, payload)
            if not killed:  # the PACS dies while the C-GET still has instances to send
                killed.append(rel)
                stop_orthanc(first, kill=True)
            return rel

        monkeypatch.setattr(retrieve_module._Destination, "store", crash_after_the_first_file)
        with pytest.raises(errors.DicomWebError) as failure:
            pacs.import_from_dimse(
                wb, qa1, node_of(first), name="resumed", studies=studies, workers=1
            )
        monkeypatch.undo()
        message = str(failure.value)
        assert "\n" not in message and "run the command again to resume" in message, message
        assert "Lost the connection to the DICOM node" in message, message
        assert any(f"study {s}" in message for s in studies), message
        assert testsets.list_test_sets(wb) == []
        partial = tmp_path / "wb" / "testsets" / "resumed.partial" / "dicom"
        fetched = len(list(partial.rglob("*.dcm")))
        assert 1 <= fetched < len(phantoms)
        second = private_orthanc()  # same storage, new ports
        done = pacs.import_from_dimse(wb, qa1, node_of(second), name="resumed", studies=studies)
        assert done.n_skipped == fetched and done.n_fetched == len(phantoms) - fetched
        assert done.test_set.n_dicom == len(phantoms)
    finally:
        wb.close()


def test_cli_import_over_dimse(orthanc: Orthanc, real_files: list[Path], tmp_path: Path) -> None:
    node = node_of(orthanc)
    workdir = tmp_path / "wb"
    wb = harness.open_wb(workdir)
    harness.make_accounts(wb)
    wb.close()
    study = study_uids(real_files[3:4])[0]
    done = harness.cli(
        workdir,
        "testset",
        "import",
        "cli-dimse",
        "--dimse",
        node.address,
        "--study",
        study,
        user="qa1",
    )
    assert done.returncode == 0, done.stderr
    assert f"imported 'cli-dimse' from {node.public_url}: 1 instances of 1 studies" in done.stdout
    refused = harness.cli(
        workdir,
        "testset",
        "import",
        "cli-refused",
        "--dimse",
        node.address,
        "--study",
        study,
        "--calling-ae",
        "STRANGER",
        user="qa1",
    )
    assert refused.returncode == 1
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "allow AE title 'STRANGER' to query" in lines[0], refused.stderr
    both = harness.cli(
        workdir,
        "testset",
        "import",
        "x",
        "--dimse",
        node.address,
        "--dicomweb",
        orthanc.url,
        "--study",
        study,
        user="qa1",
    )
    assert both.returncode == 1 and "not both" in both.stderr
    stray = harness.cli(
        workdir,
        "testset",
        "import",
        "x",
        "--dicomweb",
        orthanc.url,
        "--calling-ae",
        "QA",
        "--study",
        study,
        user="qa1",
    )
    assert stray.returncode == 1 and "apply to an import over DIMSE" in stray.stderr
