"""Case explorer services: permissions (reviewers always refused), table, case, maps, selection."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from tests.app._seed import ACCOUNTS, Seeded, seed_workdir
from workbench.errors import IntegrityError, PermissionDeniedError
from workbench.records.models import AuditEntry
from workbench.services import accounts, adjudication, explorer
from workbench.services.context import Actor, Workbench


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_workdir(tmp_path_factory.mktemp("explorer-workdir"), n_cases=6)


@pytest.fixture(scope="module")
def wb(seeded: Seeded) -> Iterator[Workbench]:
    handle = Workbench.open(seeded.workdir)
    yield handle
    handle.close()


def _login(wb: Workbench, username: str) -> Actor:
    return accounts.login(wb, username, ACCOUNTS[username][2])


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 140, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_blinded_reviewers_reach_no_explorer_service(wb: Workbench, seeded: Seeded) -> None:
    reviewer = _login(wb, "dr.reviewer")
    run = seeded.run_uids["malignancy-classification"]  # aggregate results visible to reviewers
    calls = [
        lambda: explorer.explorer_cases(wb, reviewer, run),
        lambda: explorer.explorer_case(wb, reviewer, run, "case-0000"),
        lambda: explorer.case_explanation(wb, reviewer, run, "case-0000", method="occlusion"),
        lambda: explorer.select_case_for_report(wb, reviewer, run, "case-0000", _png(), "x"),
        lambda: explorer.selected_cases(wb, reviewer, run),
    ]
    for call in calls:
        with pytest.raises(PermissionDeniedError, match="role 'reviewer' may not open it"):
            call()
    with wb.transaction(readonly=True) as session:
        denied = session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "security.permission_denied",
                AuditEntry.actor == "dr.reviewer",
            )
        ).all()
    assert sum((e.new_value or {}).get("action") == "explorer.view" for e in denied) >= len(calls)
    admin = _login(wb, "sysadmin")
    with pytest.raises(PermissionDeniedError):
        explorer.explorer_cases(wb, admin, run)


def test_case_table_sorting_and_filters(wb: Workbench, seeded: Seeded) -> None:
    qa = _login(wb, "qa.author")
    cases = explorer.explorer_cases(wb, qa, seeded.run_uids["lesion-segmentation"])
    assert cases.task == "segmentation" and len(cases.frame) == 6
    assert {"dice", "hd95"} <= set(cases.metric_columns)
    assert "manufacturer" in cases.strata_columns
    assert {"false_negative", "discrepancy", "series_instance_uid"} <= set(cases.frame.columns)
    worst = explorer.query_cases(cases, explorer.CaseQuery(sort_by="dice"))
    dice = worst["dice"].dropna().tolist()
    assert dice == sorted(dice)
    hd = explorer.query_cases(cases, explorer.CaseQuery(sort_by="hd95"))["hd95"].dropna().tolist()
    assert hd == sorted(hd, reverse=True)  # larger distances are worse
    scanner = str(cases.frame["manufacturer"].iloc[0])
    one = explorer.query_cases(cases, explorer.CaseQuery(stratum=("manufacturer", scanner)))
    assert set(one["manufacturer"]) == {scanner}
    failed = explorer.query_cases(cases, explorer.CaseQuery(failed_only=True))
    assert set(failed["status"]) <= {"failed", "excluded"}
    with pytest.raises(ValueError, match="found 'nope'"):
        explorer.query_cases(cases, explorer.CaseQuery(sort_by="nope"))


def test_classification_false_negatives_at_the_operating_point(
    wb: Workbench, seeded: Seeded
) -> None:
    auditor = _login(wb, "inspector")
    cases = explorer.explorer_cases(wb, auditor, seeded.run_uids["malignancy-classification"])
    assert cases.operating_threshold == 0.5
    frame = cases.frame
    expected = (frame["y_true"] == 1) & (frame["score"] < 0.5) & (frame["status"] == "completed")
    assert frame["false_negative"].tolist() == expected.tolist()
    only = explorer.query_cases(cases, explorer.CaseQuery(false_negatives_only=True))
    assert len(only) == int(expected.sum())


def test_one_case_with_overlays_header_and_discrepancies(wb: Workbench, seeded: Seeded) -> None:
    auditor = _login(wb, "inspector")
    run = seeded.run_uids["lesion-segmentation"]
    cases = explorer.explorer_cases(wb, auditor, run)
    with_disc = cases.frame[cases.frame["discrepancy"] != ""]
    case_id = str(with_disc["case_id"].iloc[0]) if len(with_disc) else cases.case_ids[0]
    case = explorer.explorer_case(wb, auditor, run, case_id)
    assert case.ct_paths and case.model_mask and case.reference_segs
    assert case.model_ref == "tiny-seg@1.0"
    header = dict(case.header)
    assert header["Modality"] == "CT" and "Manufacturer" in header
    assert not {"PatientName", "PatientID", "PatientBirthDate"} & set(header)
    assert case.strata["series_instance_uid"]
    if len(with_disc):
        assert case.discrepancies and case.discrepancies[0].rule


def test_explanation_is_cached_under_the_workdir(wb: Workbench, seeded: Seeded) -> None:
    qa = _login(wb, "qa.author")
    run = seeded.run_uids["lesion-segmentation"]
    case_id = explorer.explorer_cases(wb, qa, run).case_ids[0]
    first = explorer.case_explanation(wb, qa, run, case_id, method="probability")
    stored = list((seeded.workdir / "runs" / run / "explanations" / case_id).glob("*.npz"))
    assert len(stored) == 1 and stored[0].name.startswith("probability-")
    mtime = stored[0].stat().st_mtime_ns
    again = explorer.case_explanation(wb, qa, run, case_id, method="probability")
    assert stored[0].stat().st_mtime_ns == mtime
    assert again.label == first.label and again.heat.shape == first.heat.shape
    assert again.faithfulness == first.faithfulness


def test_select_case_for_report_is_audited(wb: Workbench, seeded: Seeded) -> None:
    qa = _login(wb, "qa.author")
    run = seeded.run_uids["lesion-segmentation"]
    case_id = explorer.explorer_cases(wb, qa, run).case_ids[1]
    png = _png()
    chosen = explorer.select_case_for_report(wb, qa, run, case_id, png, "Lowest Dice")
    assert chosen.png_path.is_file() and chosen.png_path.is_relative_to(seeded.workdir)
    assert chosen.sha256 == hashlib.sha256(png).hexdigest()
    with wb.transaction(readonly=True) as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.seq == chosen.audit_seq)).one()
    assert entry.action == "explorer.case_select" and entry.actor == "qa.author"
    assert (entry.new_value or {})["png_sha256"] == chosen.sha256
    listed = explorer.selected_cases(wb, _login(wb, "inspector"), run)
    assert [c.case_id for c in listed] == [case_id]
    assert dataclasses.is_dataclass(listed[0]) and listed[0].note == "Lowest Dice"
    assert "dice" in listed[0].metrics
    with pytest.raises(dataclasses.FrozenInstanceError):
        listed[0].note = "changed"  # type: ignore[misc]
    with pytest.raises(PermissionDeniedError):  # auditors read, QA authors select
        explorer.select_case_for_report(wb, _login(wb, "inspector"), run, case_id, png, "x")
    with pytest.raises(ValueError, match="Expected PNG"):
        explorer.select_case_for_report(wb, qa, run, case_id, b"GIF89a", "x")
    with pytest.raises(ValueError, match="note is empty"):
        explorer.select_case_for_report(wb, qa, run, case_id, png, "  ")
    Path(chosen.png_path).write_bytes(png + b"tampered")
    with pytest.raises(IntegrityError, match="Select the case again"):
        explorer.selected_cases(wb, qa, run)
    Path(chosen.png_path).write_bytes(png)


def test_blinded_adjudication_carries_no_explanation(wb: Workbench, seeded: Seeded) -> None:
    qa = _login(wb, "qa.author")
    reviewer = _login(wb, "dr.reviewer")
    run = seeded.run_uids["lesion-segmentation"]
    items = adjudication.queue(wb, reviewer, run)
    if not items:
        pytest.skip("the seeded run queued no discrepancy")
    before = adjudication.open_case(wb, reviewer, items[0].discrepancy_id)
    explorer.case_explanation(wb, qa, run, before.case_id, method="probability")
    after = adjudication.open_case(wb, reviewer, items[0].discrepancy_id)
    assert after == before
    names = {f.name for f in dataclasses.fields(after)}
    assert not {n for n in names if "explan" in n or "heat" in n or "saliency" in n}
    assert all("explanations" not in p for paths in after.overlays.values() for p in paths)


def test_false_negative_rules_on_sparse_frames() -> None:
    import pandas as pd

    seg = pd.DataFrame(
        {
            "status": ["completed", "completed", "failed", "completed"],
            "reference_voxels": [10, 10, 10, 0],
            "dice": [0.0, 0.8, None, None],
        }
    )
    assert explorer._false_negatives(seg, "segmentation", None).tolist() == [
        True,
        False,
        False,
        False,
    ]
    cls = pd.DataFrame({"status": ["completed"] * 3, "y_true": [1, 1, 0], "score": [0.2, 0.7, 0.1]})
    assert explorer._false_negatives(cls, "classification", 0.5).tolist() == [True, False, False]
    assert not explorer._false_negatives(cls, "classification", None).any()


def test_selected_view_goes_into_the_report(wb: Workbench, seeded: Seeded) -> None:
    """The QA author's chosen view is printed in the report's 'Selected cases' section."""
    import subprocess

    from workbench.reports import extract_attachments
    from workbench.services import reports

    qa = _login(wb, "qa.author")
    run = seeded.run_uids["lesion-segmentation"]
    cases = explorer.explorer_cases(wb, qa, run)
    worst = str(cases.frame.sort_values("dice")["case_id"].iloc[0])
    png = io.BytesIO()
    Image.new("RGB", (320, 160), (30, 120, 200)).save(png, format="PNG")
    explorer.select_case_for_report(wb, qa, run, worst, png.getvalue(), "Worst Dice of the run")
    draft = reports.build_report(wb, qa, run)
    text = subprocess.run(
        ["pdftotext", "-layout", draft.pdf_path or "", "-"], capture_output=True, text=True
    ).stdout
    assert "Selected cases" in text and f"Case {worst}" in text
    assert "Worst Dice of the run" in text
    results = extract_attachments(draft.pdf_path or "")["results.json"]
    assert hashlib.sha256(png.getvalue()).hexdigest().encode() in results


def test_case_shows_the_adjudication_outcome_unblinded(wb: Workbench, seeded: Seeded) -> None:
    """Decision, adjudicator, time and comment of each read reach QA and auditors."""
    from datetime import UTC, datetime

    from workbench.records.models import Discrepancy

    run = seeded.run_uids["lesion-segmentation"]
    reviewer = _login(wb, "dr.reviewer")
    items = adjudication.queue(wb, reviewer, run)
    if not items:
        pytest.skip("the seeded run queued no discrepancy")
    item = items[-1]
    auditor = _login(wb, "inspector")
    before = explorer.explorer_case(wb, auditor, run, item.case_id)
    pending = next(d for d in before.discrepancies if d.discrepancy_id == item.discrepancy_id)
    assert pending.reads == () and pending.outcome is None and pending.status == "open"
    started = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    adjudication.adjudicate(
        wb,
        reviewer,
        item.discrepancy_id,
        decision="a_correct",
        comment="Output A follows the lesion border on every slice.",
        password=ACCOUNTS["dr.reviewer"][2],
    )
    with wb.transaction(readonly=True) as session:
        stored = session.get(Discrepancy, item.discrepancy_id)
        assert stored is not None
        blinding = dict(stored.blinding or {})
    expected = "model correct" if blinding.get("model", "A") == "A" else "reference correct"
    for who in ("inspector", "qa.author"):
        case = explorer.explorer_case(wb, _login(wb, who), run, item.case_id)
        link = next(d for d in case.discrepancies if d.discrepancy_id == item.discrepancy_id)
        assert link.status == "adjudicated" and link.outcome == expected
        (read,) = link.reads
        assert (read.reviewer, read.reviewer_name) == ("dr.reviewer", "Dr. Robin Reyes")
        assert (read.kind, read.decision, read.meaning) == ("primary", "a_correct", expected)
        assert read.comment == "Output A follows the lesion border on every slice."
        assert (
            started
            <= read.decided_at.replace(tzinfo=None)
            <= datetime.now(UTC).replace(tzinfo=None)
        )
    with pytest.raises(PermissionDeniedError):
        explorer.explorer_case(wb, reviewer, run, item.case_id)
