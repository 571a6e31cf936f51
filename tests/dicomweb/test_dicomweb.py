"""PACS round trip against a real Orthanc: query, retrieve, import, lock, export, resume.

One module-scoped pipeline loads Orthanc with a three-case synthetic test set
(CT + reader SEGs) and real files from pydicom's test data, imports the
synthetic studies over DICOMweb, locks the test set, runs a tiny model on it,
seals the report and exports SEG, TID 1500 SR and Encapsulated PDF back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import pydicom
import pytest
import requests
from orthanc_server import Orthanc, stop_orthanc, upload
from pydicom.data import get_testdata_file

from workbench import errors
from workbench.dicom.encapsulated_pdf import extract_pdf
from workbench.dicomweb import (
    Credentials,
    DicomWebServer,
    InstanceRef,
    existing_instances,
    load_credentials,
    public_url,
    search_studies,
)
from workbench.dicomweb.dimse import DimseNode
from workbench.dicomweb.retrieve import fetch_instance
from workbench.inference.registry import ModelTask
from workbench.services import audit_trail, models, pacs, protocols, reports, runs, testsets

PW = {user: spec[2] for user, spec in harness.ACCOUNTS.items()}
SET = "pacs-set"
PYDICOM_FILES = ("CT_small.dcm", "JPEG2000.dcm", "MR_small.dcm")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exported_instances(orthanc: Orthanc, objects: Any) -> int:
    """Instances the server holds in the series an export wrote (QIDO-RS)."""
    server = server_of(orthanc)
    series = {(o.study_uid, o.series_uid) for o in objects}
    return sum(len(existing_instances(server, study, uid)) for study, uid in series)


def study_uids(paths: list[Path]) -> list[str]:
    return sorted(
        {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in paths}
    )


def dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def server_of(orthanc: Orthanc, **kw: Any) -> DicomWebServer:
    return DicomWebServer(
        orthanc.url, credentials=Credentials(user=orthanc.user, password=orthanc.password), **kw
    )


@dataclass
class Pipeline:
    workdir: Path
    synth_root: Path
    synth_files: list[Path]
    synth_studies: list[str]
    pydicom_files: list[Path]
    imported: Any = None
    run_uid: str = ""
    report_uid: str = ""
    sealed_path: str = ""
    export: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def pipeline(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    base = tmp_path_factory.mktemp("pacs")
    synth_root = harness.synth(base / "synth", n_cases=3, seed=11)
    synth_files = sorted(synth_root.rglob("*.dcm"))
    real = [Path(str(get_testdata_file(name))) for name in PYDICOM_FILES]
    upload(orthanc, synth_files + real)
    pipe = Pipeline(
        workdir=base / "wb",
        synth_root=synth_root,
        synth_files=synth_files,
        synth_studies=study_uids(synth_files),
        pydicom_files=real,
    )
    wb = harness.open_wb(pipe.workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2, rev1 = (harness.login(wb, u) for u in ("qa1", "qa2", "rev1"))
        pipe.imported = pacs.import_from_dicomweb(
            wb,
            qa1,
            server_of(orthanc),
            name=SET,
            studies=pipe.synth_studies,
            reference=synth_root,
        )
        testsets.check_quality(wb, qa1, SET)
        testsets.lock_test_set(wb, qa1, SET, password=PW["qa1"])
        model_path = harness.tiny_model(base / "tiny.ts")
        spec = harness.cls_spec(
            name="tiny-both", segmentation_output="seg", score_output="malignancy"
        ).model_copy(update={"task": ModelTask.BOTH})
        model_ref = models.register_model(wb, qa1, model_path, spec).ref
        text = base / "protocol.yaml"
        text.write_text(harness.protocol_text(SET))
        protocol_ref = protocols.add_protocol_version(wb, qa1, text).ref
        protocols.approve_protocol(wb, qa2, protocol_ref, password=PW["qa2"])
        pipe.run_uid = runs.validate(
            wb, qa1, protocol=protocol_ref, model=model_ref, test_set=SET, device="cpu"
        ).run_uid
        report = reports.build_report(wb, qa1, pipe.run_uid)
        pipe.report_uid = report.report_uid
        reports.sign_report(wb, qa1, report.report_uid, meaning="authored", password=PW["qa1"])
        reports.sign_report(wb, rev1, report.report_uid, meaning="reviewed", password=PW["rev1"])
        reports.sign_report(wb, qa2, report.report_uid, meaning="approved", password=PW["qa2"])
        pipe.sealed_path = reports.seal_report(wb, qa2, report.report_uid).sealed_path or ""
        pipe.export = pacs.export_run(wb, qa1, pipe.run_uid, server_of(orthanc))
    finally:
        wb.close()
    return pipe


# --------------------------------------------------------------------------- intake


def test_query_finds_studies_by_qido(pipeline: Pipeline, orthanc: Orthanc) -> None:
    server = server_of(orthanc)
    ct = search_studies(server, {"ModalitiesInStudy": "CT"})
    assert set(pipeline.synth_studies) <= set(ct)
    ct_small = str(pydicom.dcmread(pipeline.pydicom_files[0]).StudyInstanceUID)
    assert ct_small in ct
    mr = search_studies(server, {"ModalitiesInStudy": "MR"})
    assert ct_small not in mr and mr
    assert len(search_studies(server, {"ModalitiesInStudy": "CT"}, limit=1)) == 1


def test_import_is_byte_for_byte_content_addressed_and_recorded(pipeline: Pipeline) -> None:
    imported = pipeline.imported
    assert imported.n_instances == len(pipeline.synth_files) == imported.n_fetched
    root = Path(imported.test_set.root_path)
    retrieved = sorted((root / "dicom").rglob("*.dcm"))
    # Byte for byte: the same multiset of SHA-256s as the files given to the PACS.
    assert sorted(sha256(p) for p in retrieved) == sorted(sha256(p) for p in pipeline.synth_files)
    assert all(p.stem == sha256(p) for p in retrieved)
    assert not (root.parent / f"{SET}.partial").exists()
    source = json.loads((root / "dataset.json").read_text())["source"]
    assert source["server"] == public_url(source["server"]).rstrip("/")
    assert "@" not in source["server"] and source["studies"] == pipeline.synth_studies
    assert len(source["instances"]) == len(retrieved)
    assert (root / "reference" / "labels.csv").is_file()
    wb = harness.open_wb(pipeline.workdir)
    try:
        qa1 = harness.login(wb, "qa1")
        info = testsets.get_test_set(wb, SET)
        assert info.status == "locked" and info.n_dicom == len(retrieved)
        assert testsets.verify_test_set(wb, qa1, SET).ok
        entries = [
            e
            for e in audit_trail.export_entries(wb, qa1, record_id=SET)
            if "dicomweb" in str(e.get("action"))
        ]
        assert len(entries) == 1
        text = json.dumps(entries[0], default=str)
        assert source["server"] in text and harness.ACCOUNTS["qa1"][2] not in text
        assert all(ref["sop_instance_uid"] in text for ref in source["instances"])
    finally:
        wb.close()


def recorded_files(wb: Any, name: str) -> tuple[Any, list[dict[str, Any]]]:
    """A test set's summary and its file rows (without row ids), by path."""
    from sqlalchemy import select

    from workbench.records.models import TestSet, TestSetFile

    columns = [c.name for c in TestSetFile.__table__.columns if c.name not in ("id", "test_set_id")]
    with wb.transaction(readonly=True) as session:
        test_set = session.scalars(select(TestSet).where(TestSet.name == name)).one()
        rows = session.scalars(
            select(TestSetFile)
            .where(TestSetFile.test_set_id == test_set.id)
            .order_by(TestSetFile.path)
        ).all()
        return test_set.summary, [{c: getattr(row, c) for c in columns} for row in rows]


def test_import_records_what_a_folder_import_of_its_files_records(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Files indexed while they arrive are recorded exactly as a folder import reads them."""
    root = Path(pipeline.imported.test_set.root_path)
    wb = harness.open_wb(pipeline.workdir)
    try:
        summary, rows = recorded_files(wb, SET)
    finally:
        wb.close()
    folder_wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(folder_wb)
        qa1 = harness.login(folder_wb, "qa1")
        testsets.import_test_set(folder_wb, qa1, root, name="folder", workers=2)
        folder_summary, folder_rows = recorded_files(folder_wb, "folder")
    finally:
        folder_wb.close()
    assert len(rows) == len(pipeline.synth_files) + 2  # dataset.json, reference/labels.csv
    assert rows == folder_rows and summary == folder_summary
    assert all(row["sha256"] == sha256(root / row["path"]) for row in rows)


def test_compressed_instance_keeps_its_transfer_syntax(
    pipeline: Pipeline, orthanc: Orthanc, tmp_path: Path
) -> None:
    jpeg2000 = pipeline.pydicom_files[1]
    workdir = tmp_path / "wb"
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        done = pacs.import_from_dicomweb(
            wb, qa1, server_of(orthanc), name="real-files", studies=study_uids([jpeg2000])
        )
    finally:
        wb.close()
    files = sorted((Path(done.test_set.root_path) / "dicom").rglob("*.dcm"))
    # The study also holds JPEG-LL.dcm (SHARED_REAL_FILES): both come back as stored.
    jpeg_ll = Path(str(get_testdata_file("JPEG-LL.dcm")))
    by_digest = {sha256(p): p for p in files}
    assert set(by_digest) == {sha256(jpeg2000), sha256(jpeg_ll)}
    for original, syntax in (
        (jpeg2000, "1.2.840.10008.1.2.4.91"),
        (jpeg_ll, "1.2.840.10008.1.2.4.70"),
    ):
        assert pydicom.dcmread(by_digest[sha256(original)]).file_meta.TransferSyntaxUID == syntax


def test_cli_import_from_dicomweb_then_verify(pipeline: Pipeline, orthanc: Orthanc) -> None:
    workdir = pipeline.workdir.parent / "cli-wb"
    wb = harness.open_wb(workdir)
    harness.make_accounts(wb)
    wb.close()
    creds = {
        "WORKBENCH_DICOMWEB_USER": orthanc.user,
        "WORKBENCH_DICOMWEB_PASSWORD": orthanc.password,
    }
    ct_small = pipeline.pydicom_files[0]
    done = harness.cli(
        workdir,
        "testset",
        "import",
        "cli-set",
        "--dicomweb",
        orthanc.url,
        "--study",
        study_uids([ct_small])[0],
        user="qa1",
        env=creds,
    )
    assert done.returncode == 0, done.stderr
    assert "imported 'cli-set'" in done.stdout and orthanc.password not in done.stdout + done.stderr
    # Wrong password: one clear line, nothing imported, the password never shown.
    bad = harness.cli(
        workdir,
        "testset",
        "import",
        "bad-set",
        "--dicomweb",
        orthanc.url,
        "--study",
        study_uids([ct_small])[0],
        user="qa1",
        env={**creds, "WORKBENCH_DICOMWEB_PASSWORD": "not-the-password"},
    )
    assert bad.returncode == 1
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refused the credentials (HTTP 401)" in lines[0], bad.stderr
    assert "not-the-password" not in bad.stderr + bad.stdout
    wb = harness.open_wb(workdir)
    try:
        assert [t.name for t in testsets.list_test_sets(wb)] == ["cli-set"]
    finally:
        wb.close()


# --------------------------------------------------------------------------- outputs back


def test_export_stores_seg_sr_and_pdf_that_read_back_clean(
    pipeline: Pipeline, orthanc: Orthanc, tmp_path: Path
) -> None:
    export = pipeline.export
    kinds = sorted(o.kind for o in export.objects)
    n_cases = 3
    assert kinds == ["pdf"] + ["seg"] * n_cases + ["sr"] * n_cases
    assert len(export.stored) == len(export.objects) and not export.already_present
    server = server_of(orthanc)
    wb = harness.open_wb(pipeline.workdir)
    try:
        for obj in export.objects:
            ref = InstanceRef(obj.study_uid, obj.series_uid, obj.sop_uid)
            path = tmp_path / f"{obj.kind}-{obj.case_id}.dcm"
            path.write_bytes(fetch_instance(server, ref))  # WADO-RS, as Orthanc stores it
            back = pydicom.dcmread(path)
            assert str(back.SOPInstanceUID) == obj.sop_uid
            assert dciodvfy_errors(path) == [], (obj.kind, dciodvfy_errors(path))
            text = str(back.get("SeriesDescription", "")) + json.dumps(
                back.to_json_dict(), default=str
            )
            assert pipeline.run_uid in text, obj.kind
            if obj.kind == "sr":
                assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
                top = {str(i.ConceptNameCodeSequence[0].CodeMeaning) for i in back.ContentSequence}
                assert {"Imaging Measurements", "Procedure reported"} <= top, top
                assert "tiny-both" in text and "Volume" in text and "Score" in text
                seg_uid = next(
                    o.sop_uid
                    for o in export.objects
                    if o.kind == "seg" and o.case_id == obj.case_id
                )
                assert seg_uid in text
            if obj.kind == "pdf":
                extracted = tmp_path / "extracted.pdf"
                extracted.write_bytes(extract_pdf(back))
                assert sha256(extracted) == sha256(Path(pipeline.sealed_path))
                check = reports.verify_report_file(wb, extracted)
                assert check.valid, check.lines()
        entries = [
            e
            for e in audit_trail.export_entries(
                wb, harness.login(wb, "qa1"), record_id=pipeline.run_uid
            )
            if e.get("action") == "run.export.dicomweb"
        ]
        assert len(entries) == 1
        assert all(o.sop_uid in json.dumps(entries[0], default=str) for o in export.objects)
    finally:
        wb.close()


def test_repeated_export_adds_no_instance(pipeline: Pipeline, orthanc: Orthanc) -> None:
    before = exported_instances(orthanc, pipeline.export.objects)
    assert before == len(pipeline.export.objects)
    wb = harness.open_wb(pipeline.workdir)
    try:
        again = pacs.export_run(wb, harness.login(wb, "qa1"), pipeline.run_uid, server_of(orthanc))
    finally:
        wb.close()
    assert not again.stored
    assert sorted(again.already_present) == sorted(o.sop_uid for o in pipeline.export.objects)
    assert [o.sha256 for o in again.objects] == [o.sha256 for o in pipeline.export.objects]
    # The command line, with credentials from the environment: nothing new either.
    done = harness.cli(
        pipeline.workdir,
        "run",
        "export",
        pipeline.run_uid,
        "--dicomweb",
        orthanc.url,
        user="qa1",
        env={
            "WORKBENCH_DICOMWEB_USER": orthanc.user,
            "WORKBENCH_DICOMWEB_PASSWORD": orthanc.password,
        },
    )
    assert done.returncode == 0, done.stderr
    n = len(pipeline.export.objects)
    assert f"{n} objects (0 stored, {n} already there)" in done.stdout
    assert orthanc.password not in done.stdout + done.stderr
    assert exported_instances(orthanc, pipeline.export.objects) == before


def test_export_over_dimse_stores_each_object_once(
    pipeline: Pipeline, orthanc: Orthanc, tmp_path: Path
) -> None:
    """C-STORE to the same PACS as a DIMSE node: the objects, clean, once; then nothing."""
    if not orthanc.dimse:
        pytest.skip("the Orthanc test server was started without its DICOM port")
    node = DimseNode.parse(orthanc.dimse)
    objects = pipeline.export.objects
    with requests.Session() as session:  # remove what the DICOMweb export stored
        session.auth = (orthanc.user, orthanc.password)
        for obj in objects:
            found = session.post(f"{orthanc.rest}/tools/lookup", data=obj.sop_uid, timeout=30)
            for hit in found.json():
                session.delete(f"{orthanc.rest}/instances/{hit['ID']}", timeout=30)
    assert exported_instances(orthanc, objects) == 0
    wb = harness.open_wb(pipeline.workdir)
    try:
        qa1 = harness.login(wb, "qa1")
        done = pacs.export_run(wb, qa1, pipeline.run_uid, node)
        assert sorted(done.stored) == sorted(o.sop_uid for o in objects)
        assert not done.already_present and done.server == node.public_url
        assert [o.sha256 for o in done.objects] == [o.sha256 for o in objects]
        server = server_of(orthanc)
        for obj in done.objects:
            path = tmp_path / f"{obj.kind}-{obj.case_id}.dcm"
            path.write_bytes(
                fetch_instance(server, InstanceRef(obj.study_uid, obj.series_uid, obj.sop_uid))
            )
            assert dciodvfy_errors(path) == [], (obj.kind, dciodvfy_errors(path))
            if obj.kind == "pdf":
                extracted = tmp_path / "extracted.pdf"
                extracted.write_bytes(extract_pdf(pydicom.dcmread(path)))
                assert sha256(extracted) == sha256(Path(pipeline.sealed_path))
        again = pacs.export_run(wb, qa1, pipeline.run_uid, node)
        assert not again.stored and len(again.already_present) == len(objects)
        entries = [
            e
            for e in audit_trail.export_entries(wb, qa1, record_id=pipeline.run_uid)
            if e.get("action") == "run.export.dimse"
        ]
        assert [len(e["new_value"]["stored"]) for e in entries] == [len(objects), 0]
        assert {e["new_value"]["calling_ae"] for e in entries} == {"WORKBENCH"}
        assert {e["new_value"]["server"] for e in entries} == {node.public_url}
    finally:
        wb.close()
    cli = harness.cli(
        pipeline.workdir, "run", "export", pipeline.run_uid, "--dimse", orthanc.dimse, user="qa1"
    )
    assert cli.returncode == 0, cli.stderr
    n = len(objects)
    assert f"to {node.public_url}: {n} objects (0 stored, {n} already there)" in cli.stdout
    both = harness.cli(
        pipeline.workdir, "run", "export", pipeline.run_uid, "--dimse", orthanc.dimse,
        "--dicomweb", orthanc.url, user="qa1",
    )  # fmt: skip
    assert both.returncode == 1 and "give either --dicomweb URL or --dimse" in both.stderr
    assert exported_instances(orthanc, objects) == n


# --------------------------------------------------------------------------- failures


def test_server_stopped_mid_retrieval_then_resumed(
    pipeline: Pipeline, private_orthanc: Callable[[], Orthanc], tmp_path: Path
) -> None:
    first = private_orthanc()
    case_files = list(pipeline.synth_files)  # three studies: CT series and reader SEGs
    upload(first, case_files)
    studies = study_uids(case_files)
    workdir = tmp_path / "wb"
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        killed: list[int] = []

        def crash_after_first_series(done: int, total: int, message: str) -> None:
            if done and not killed:
                killed.append(done)
                stop_orthanc(first, kill=True)

        with pytest.raises(errors.DicomWebError) as failure:
            pacs.import_from_dicomweb(
                wb,
                qa1,
                server_of(first),
                name="resumed",
                studies=studies,
                progress=crash_after_first_series,
            )
        message = str(failure.value)
        assert "\n" not in message and "Cannot reach" in message, message
        assert any(f"of study {s}" in message for s in studies), message
        assert first.password not in message
        assert [t.name for t in testsets.list_test_sets(wb)] == []
        partial = workdir / "testsets" / "resumed.partial"
        fetched = len(list((partial / "dicom").rglob("*.dcm")))
        assert 1 <= fetched < len(case_files)
        second = private_orthanc()  # same storage, new ports
        done = pacs.import_from_dicomweb(
            wb, qa1, server_of(second), name="resumed", studies=studies
        )
        assert done.n_skipped == fetched and done.n_fetched == len(case_files) - fetched
        retrieved = (Path(done.test_set.root_path) / "dicom").rglob("*.dcm")
        assert sorted(p.stem for p in retrieved) == sorted(sha256(p) for p in case_files)
        assert done.test_set.n_dicom == len(case_files)
    finally:
        wb.close()


def test_damaged_file_from_an_interrupted_retrieval_is_fetched_again(
    pipeline: Pipeline, orthanc: Orthanc, tmp_path: Path
) -> None:
    workdir = tmp_path / "wb"
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        ct_small = pipeline.pydicom_files[0]
        partial = workdir / "testsets" / "damaged.partial" / "dicom" / "ab"
        partial.mkdir(parents=True)
        digest = sha256(ct_small)
        (partial / f"{digest}.dcm").write_bytes(ct_small.read_bytes()[:1000])  # truncated
        done = pacs.import_from_dicomweb(
            wb, qa1, server_of(orthanc), name="damaged", studies=study_uids([ct_small])
        )
        assert done.n_fetched == 1 and done.n_skipped == 0
        files = list((Path(done.test_set.root_path) / "dicom").rglob("*.dcm"))
        assert [sha256(p) for p in files] == [digest]
    finally:
        wb.close()


def test_unknown_study_and_unreachable_server_are_one_line(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(wb)
        qa1 = harness.login(wb, "qa1")
        with pytest.raises(errors.DicomWebError, match="has no study 1.2.3.4.5"):
            pacs.import_from_dicomweb(wb, qa1, server_of(orthanc), name="x", studies=["1.2.3.4.5"])
        down = DicomWebServer("http://127.0.0.1:9/dicom-web", timeout=(1.0, 1.0))
        with pytest.raises(errors.DicomWebError, match="Cannot reach the DICOMweb server"):
            pacs.import_from_dicomweb(wb, qa1, down, name="x", studies=["1.2.3.4.5"])
        assert testsets.list_test_sets(wb) == []
    finally:
        wb.close()


def test_credentials_from_environment_or_owner_only_file(tmp_path: Path) -> None:
    assert load_credentials(environ={"WORKBENCH_DICOMWEB_TOKEN": "t0k"}).kind == "bearer"
    basic = load_credentials(
        environ={"WORKBENCH_DICOMWEB_USER": "u", "WORKBENCH_DICOMWEB_PASSWORD": "secret-pw"}
    )
    assert basic.kind == "basic" and "secret-pw" not in repr(basic)
    path = tmp_path / "pacs.json"
    path.write_text(json.dumps({"user": "u", "password": "secret-pw"}))
    os.chmod(path, 0o644)
    with pytest.raises(errors.DicomWebError, match="expected 0600"):
        load_credentials(path)
    os.chmod(path, 0o600)
    assert load_credentials(path).user == "u"
    with pytest.raises(errors.DicomWebError, match="Credentials in the DICOMweb URL"):
        DicomWebServer("https://u:secret-pw@pacs.example/dicom-web")
    assert (
        public_url("https://pacs.example:8443/dicom-web/?x=1")
        == "https://pacs.example:8443/dicom-web"
    )
    token_server = DicomWebServer(
        "https://pacs.example/dicom-web", credentials=Credentials(token="t0k")
    )
    assert token_server.session().headers["Authorization"] == "Bearer t0k"
    assert token_server.session().verify is True
