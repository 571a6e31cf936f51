"""``QualityReport.filtered``: the filters of the app's data-quality tab."""

from __future__ import annotations

import pytest

from workbench.quality import Finding, QualityReport, Severity

SEQ = "OtherPatientIDsSequence[{}].PatientID (0010,0020)"


@pytest.fixture
def report() -> QualityReport:
    findings = [
        Finding("phi", Severity.CRITICAL, "a.dcm", "PatientName (0010,0010)", "a name"),
        Finding("phi", Severity.CRITICAL, "b.dcm", "PatientName (0010,0010)", "a name"),
        Finding("phi", Severity.MAJOR, "a.dcm", SEQ.format(0), "an ID"),
        Finding("phi", Severity.MAJOR, "a.dcm", SEQ.format(3), "an ID"),
        Finding("demographics", Severity.MAJOR, "b.dcm", "PatientAge (0010,1010)", "missing"),
        Finding("non_image_object", Severity.INFO, "DICOMDIR", "SOPClassUID (0008,0016)", "dir"),
    ]
    return QualityReport.build(
        findings, checks_run=["phi", "demographics"], n_files=2, suite="mixed-test-set-v1"
    )


def test_no_filter_keeps_everything(report: QualityReport) -> None:
    assert report.filtered() == report


def test_each_filter_and_their_combination(report: QualityReport) -> None:
    critical = report.filtered(severities=["critical"])
    assert critical.findings == report.blocking
    assert (critical.suite, critical.n_files, critical.checks_run) == (
        report.suite,
        report.n_files,
        report.checks_run,
    )
    assert {f.check for f in report.filtered(checks=["demographics"]).findings} == {"demographics"}
    both = report.filtered(severities=[Severity.MAJOR], checks=["phi"])
    assert len(both.findings) == 2 and all(f.severity is Severity.MAJOR for f in both.findings)
    assert report.filtered(severities=["info"], checks=["phi"]).findings == ()


def test_attributes_are_spelled_as_the_groups_spell_them(report: QualityReport) -> None:
    grouped = {g.attribute: g.count for g in report.grouped()}
    sequence = SEQ.format("*")
    assert grouped[sequence] == 2  # items 0 and 3 of the sequence are one attribute
    kept = report.filtered(attributes=[sequence])
    assert [f.attribute for f in kept.findings] == [SEQ.format(0), SEQ.format(3)]
    assert report.filtered(attributes=[SEQ.format(0)]).findings == ()
    for group in report.grouped():
        assert len(report.filtered(attributes=[group.attribute]).findings) >= group.count


def test_an_unknown_severity_is_refused(report: QualityReport) -> None:
    with pytest.raises(ValueError, match="Unknown severity 'severe'; expected one of critical"):
        report.filtered(severities=["severe"])
