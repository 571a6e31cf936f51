"""Tests of the report package: content, PDF text, figures, attachments, sealing."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from report_fixtures import INJECTED_FONT, INJECTED_LINK, make_report_content, pdf_text

from workbench.errors import ConfigurationError, ReportError, ReportVerificationError
from workbench.reports import (
    MANIFEST_JSON,
    PER_CASE_CSV,
    PROTOCOL_YAML,
    REPORT_CONTENT_JSON,
    RESULTS_JSON,
    EstimateStatus,
    ReportContent,
    ReportEstimate,
    SigningIdentity,
    build_report,
    ensure_signing_identity,
    extract_attachments,
    seal_pdf,
    verify_pdf,
)
from workbench.reports.formatting import format_ci, format_estimate, format_verdict

needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils (pdftotext, pdftoppm) not installed",
)


def _squash(value: str) -> str:
    return re.sub(r"\s+", "", value)


# -- content ---------------------------------------------------------------------------


def test_content_round_trips_through_json(content):
    data = json.loads(json.dumps(content.to_dict()))
    assert ReportContent.from_dict(data) == content


def test_estimate_needs_numbers_when_ok():
    with pytest.raises(ReportError, match="needs value, ci_low and ci_high"):
        ReportEstimate(value=None, ci_low=0.1, ci_high=0.2)
    with pytest.raises(ReportError, match="finite"):
        ReportEstimate(value=math.nan, ci_low=0.1, ci_high=0.2)
    with pytest.raises(ReportError, match="should be one of"):
        ReportEstimate(value=0.5, ci_low=0.1, ci_high=0.9, status="maybe")


def test_missing_estimate_prints_reason_not_number():
    e = ReportEstimate.missing("insufficient_n", "n=6 < minimum 20", n=6)
    assert e.status is EstimateStatus.INSUFFICIENT_N
    assert format_estimate(e) == "insufficient n (n=6)"
    assert format_ci(e) == "\u2014"


# -- PDF -------------------------------------------------------------------------------


def test_build_is_reproducible(tmp_path, content, built):
    again = build_report(content, tmp_path / "again.pdf")
    assert again.sha256 == built.sha256
    assert again.path.read_bytes() == built.path.read_bytes()


@needs_poppler
def test_every_page_renders(tmp_path, built):
    subprocess.run(
        ["pdftoppm", "-r", "50", "-png", str(built.path), str(tmp_path / "page")], check=True
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == built.pages >= 8
    assert all(p.stat().st_size > 2000 for p in pages)


@needs_poppler
def test_metadata_comes_from_content(built, content):
    info = subprocess.run(
        ["pdfinfo", str(built.path)], check=True, capture_output=True, text=True
    ).stdout
    assert f"Title:           {content.title}" in info
    assert f"Author:          {content.author}" in info
    assert "CreationDate:    Fri Mar 14 09:30:00 2025 UTC" in info
    fonts = subprocess.run(
        ["pdffonts", str(built.path)], check=True, capture_output=True, text=True
    ).stdout.splitlines()[2:]
    assert fonts and all(" yes yes " in line for line in fonts), "every font embedded"


@needs_poppler
def test_key_numbers_appear_as_in_content(pdftotext_text, content, built):
    text = pdftotext_text
    for metric in content.results.metrics:
        e = metric.overall
        assert format_estimate(e, metric.digits) in text
        assert format_ci(e, metric.digits) in text
        for stratum in metric.per_stratum:
            assert format_estimate(stratum.estimate, metric.digits) in text
    for row in content.acceptance:
        line = [
            ln
            for ln in text.splitlines()
            if format_ci(row.estimate, row.digits) in ln and row.stratum in ln
        ]
        assert line and format_verdict(row.verdict) in line[0]
    assert "FAIL" in text and "PASS" in text
    assert "insufficient n (n=6)" in text
    assert content.model.sha256 in text and content.protocol.sha256 in text
    assert content.test_set.manifest_digest in text and content.audit_chain_head in text
    for note in content.dataset.failed_cases + content.dataset.excluded_cases:
        assert note.case_id in text
    for page in range(1, built.pages + 1):
        assert f"Page {page} of {built.pages}" in text
    assert text.count(built.results_sha256) >= built.pages
    assert text.count(f"Report {content.report_id}") == built.pages
    assert "UNSIGNED" in text and "DRAFT" in text
    assert "SECONDARY ANALYSIS" in text


@needs_poppler
def test_markup_in_data_appears_literally(tmp_path):
    content = make_report_content(inject_markup=True)
    built = build_report(content, tmp_path / "inject.pdf")
    text = _squash(pdf_text(built.path))
    assert _squash(INJECTED_FONT) in text
    assert _squash(INJECTED_LINK) in text
    assert b"/JavaScript" not in built.path.read_bytes()
    assert b"/URI" not in built.path.read_bytes()


def test_final_report_needs_every_required_signature(tmp_path, content):
    from dataclasses import replace

    with pytest.raises(ReportError, match="Missing: Clinical reviewer"):
        build_report(replace(content, status="final"), tmp_path / "final.pdf")


@needs_poppler
def test_signed_final_report_has_no_placeholders(tmp_path):
    built = build_report(make_report_content(signed=True), tmp_path / "final.pdf")
    text = pdf_text(built.path)
    assert "UNSIGNED" not in text and "DRAFT" not in text
    assert "Dr. Ada Okafor" in text and "2025-03-14 11:30:00 UTC" in text


def test_missing_folder_is_reported(tmp_path, content):
    with pytest.raises(ReportError, match="folder should exist"):
        build_report(content, tmp_path / "nope" / "r.pdf")


# -- attachments -----------------------------------------------------------------------


def test_attachments_round_trip(built, content):
    files = extract_attachments(built.path)
    assert sorted(files) == sorted(
        [MANIFEST_JSON, PER_CASE_CSV, PROTOCOL_YAML, REPORT_CONTENT_JSON, RESULTS_JSON]
    )
    import hashlib

    assert hashlib.sha256(files[RESULTS_JSON]).hexdigest() == built.results_sha256
    assert {k: hashlib.sha256(v).hexdigest() for k, v in files.items()} == built.attachments
    assert files[PROTOCOL_YAML].decode() == content.protocol.yaml_text
    manifest = json.loads(files[MANIFEST_JSON])
    assert manifest["manifest_digest"] == content.test_set.manifest_digest
    assert manifest["entries"] == content.test_set.manifest_entries
    results = json.loads(files[RESULTS_JSON])
    assert results["report_id"] == content.report_id
    assert results["per_case_csv_sha256"] == hashlib.sha256(files[PER_CASE_CSV]).hexdigest()
    full = json.loads(files[REPORT_CONTENT_JSON])
    full.pop("per_case_csv_sha256")
    rows = list(csv.DictReader(io.StringIO(files[PER_CASE_CSV].decode())))
    assert len(rows) == len(content.per_case)
    assert ReportContent.from_dict({**full, "per_case": content.to_dict()["per_case"]}) == content


def test_tables_can_be_recomputed_from_the_csv(built, content):
    rows = list(csv.DictReader(io.StringIO(extract_attachments(built.path)[PER_CASE_CSV].decode())))
    dice = [float(r["dice"]) for r in rows if r["status"] == "included"]
    reported = next(m for m in content.results.metrics if m.key == "dice").overall
    assert len(dice) == reported.n == content.dataset.n_included
    assert f"{sum(dice) / len(dice):.3f}" == format_estimate(reported)
    failed = {r["case_id"] for r in rows if r["status"] == "failed"}
    assert failed == {n.case_id for n in content.dataset.failed_cases}


# -- keys and seal ---------------------------------------------------------------------


def test_identity_is_created_once_with_private_keys(tmp_path):
    keys = tmp_path / "keys"
    first = ensure_signing_identity(keys, common_name="Site A Workbench")
    second = ensure_signing_identity(keys)
    assert first.certificate == second.certificate
    for name in ("ca-key.pem", "signing-key.pem"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    assert "Site A Workbench" in first.subject
    assert first.trust_roots == first.chain


def test_identity_from_files_rejects_foreign_key(tmp_path):
    ensure_signing_identity(tmp_path / "a")
    ensure_signing_identity(tmp_path / "b")
    loaded = SigningIdentity.from_files(
        tmp_path / "a/signing-key.pem", tmp_path / "a/signing-cert.pem", tmp_path / "a/ca-cert.pem"
    )
    assert loaded.chain
    with pytest.raises(ConfigurationError, match="should belong to the certificate"):
        SigningIdentity.from_files(tmp_path / "b/signing-key.pem", tmp_path / "a/signing-cert.pem")


def test_partial_key_folder_is_refused(tmp_path):
    ensure_signing_identity(tmp_path / "k")
    (tmp_path / "k" / "ca-key.pem").unlink()
    with pytest.raises(ConfigurationError, match="Found only"):
        ensure_signing_identity(tmp_path / "k")


@pytest.fixture(scope="module")
def sealed(tmp_path_factory, built, identity) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("sealed") / "sealed.pdf"
    digest = seal_pdf(
        built.path, out, identity, reason="Final validation report", location="Test site"
    )
    return out, digest


def test_seal_then_verify(sealed, identity, built, content):
    path, digest = sealed
    result = verify_pdf(path, trust_roots=identity.trust_roots)
    assert result.valid, result.problems
    assert result.file_sha256 == digest
    assert result.intact and result.trusted and result.covers_whole_file
    assert "Validation Workbench" in (result.signer_subject or "")
    assert result.report_id == content.report_id
    assert result.results_sha256 == built.results_sha256
    assert extract_attachments(path) == extract_attachments(built.path)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, -2])
def test_one_byte_change_fails(tmp_path, sealed, identity, where):
    data = bytearray(sealed[0].read_bytes())
    index = int(len(data) * where) if where > 0 else len(data) + where
    data[index] ^= 0x01
    changed = tmp_path / "changed.pdf"
    changed.write_bytes(bytes(data))
    result = verify_pdf(changed, trust_roots=identity.trust_roots)
    assert not result.valid and result.problems


def test_appended_update_fails(tmp_path, sealed, identity):
    changed = tmp_path / "appended.pdf"
    changed.write_bytes(sealed[0].read_bytes() + b"\n% appended\n")
    result = verify_pdf(changed, trust_roots=identity.trust_roots)
    assert not result.valid


def test_untrusted_signer_fails(tmp_path, sealed):
    other = ensure_signing_identity(tmp_path / "other")
    result = verify_pdf(sealed[0], trust_roots=other.trust_roots)
    assert not result.valid and not result.trusted
    assert any("trusted root" in p for p in result.problems)


def test_unsigned_and_foreign_files(tmp_path, built, identity):
    unsigned = verify_pdf(built.path, trust_roots=identity.trust_roots)
    assert not unsigned.valid and "unsigned" in unsigned.problems[0]
    assert unsigned.report_id is not None  # attachments still read back
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"hello")
    assert "not a PDF" in verify_pdf(junk, trust_roots=identity.trust_roots).problems[0]
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(built.path.read_bytes()[:5000])
    result = verify_pdf(truncated, trust_roots=identity.trust_roots)
    assert not result.valid
    with pytest.raises(ReportVerificationError, match="does not verify"):
        result.raise_if_invalid()
    with pytest.raises(ReportVerificationError, match="Cannot open"):
        verify_pdf(tmp_path / "missing.pdf", trust_roots=identity.trust_roots)


@pytest.mark.skipif(shutil.which("pdfsig") is None, reason="pdfsig not installed")
def test_pdfsig_reports_the_seal(sealed, identity, tmp_path):
    out = subprocess.run(["pdfsig", "-nocert", str(sealed[0])], capture_output=True, text=True)
    assert "Signature #1" in out.stdout
    assert "Signature is Valid" in out.stdout
    assert "ETSI.CAdES.detached" in out.stdout
    assert "Total document signed" in out.stdout


@needs_poppler
def test_waived_findings_are_listed_with_their_signers(tmp_path, content):
    """A gate opened by waivers says so, and lists each waiver with its justification and
    signers; the check's suite, task and OCR setting are printed."""
    from dataclasses import replace

    from workbench.reports.content import WaivedFinding

    quality = replace(
        content.dataset.quality,
        passed=True,
        task="segmentation",
        ocr=True,
        waived=(
            WaivedFinding(
                finding_id="3f2a9c1d7e5b",
                check="slice_spacing",
                severity="critical",
                path="dicom/case0007",
                attribute="SliceThickness (0018,0050)",
                justification="Reconstruction interval differs; reviewed, no gap in anatomy.",
                signed_by=("qa.author", "qa.approver"),
            ),
        ),
    )
    waived = replace(content, dataset=replace(content.dataset, quality=quality))
    text = _squash(pdf_text(build_report(waived, tmp_path / "waived.pdf").path))
    for expected in (
        "PASSED with 1 finding(s) waived",
        "task segmentation",
        "burned-in text read by OCR",
        "Waived findings",
        "no gap in anatomy",
        "qa.author",
        "qa.approver",
    ):
        assert _squash(expected) in text, expected


@needs_poppler
def test_report_says_why_a_result_is_not_pass(tmp_path, content):
    """A not-evaluable endpoint carries its reason into the acceptance section, and the
    run's verdict is printed with the protocol's reason for it."""
    from dataclasses import replace

    from workbench.vocabulary import Verdict

    first = replace(
        content.acceptance[0],
        verdict=Verdict.NOT_EVALUABLE,
        reason="AUC is not estimable: every case has the same label",
    )
    failed = replace(
        content,
        acceptance=(first, *content.acceptance[1:]),
        verdict=Verdict.FAIL,
        verdict_reason="auc NOT EVALUABLE; counted as FAIL (not_evaluable_counts_as: fail)",
    )
    text = _squash(pdf_text(build_report(failed, tmp_path / "failed.pdf").path))
    for expected in (
        "Why a result is not PASS",
        "every case has the same label",
        "counted as FAIL (not_evaluable_counts_as: fail)",
        "Run verdict",
    ):
        assert _squash(expected) in text, expected
    assert failed.to_dict()["verdict"] == Verdict.FAIL.value
    assert type(failed).from_dict(failed.to_dict()) == failed
