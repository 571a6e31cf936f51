"""A detection reader study through the services: two readers mark lesions in both arms.

A small synthetic test set (6 phantoms); the reference lesions are reader 1's SEG
components of four cases (``lesions_from_mask``) written to a lesion table in patient
coordinates before locking, so that two cases are lesion-free and the wAFROC figure of
merit is estimable. Readers place marks on images (pixel positions converted with the
DICOM geometry) or in patient coordinates, save cases with and without marks, change a
case before signing, and sign; the analysis's per-reader wAFROC is checked against the
value computed by hand from the marks they placed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from workbench import errors
from workbench.records.models import AuditEntry, ReaderMark
from workbench.services import accounts, studies
from workbench.services.studies import Mark

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
import harness  # noqa: E402

REV2 = ("rev2", "Sam Ortega", "Willow-Frost-2026!")
WITH_LESION = ("case0001", "case0002", "case0003", "case0004")


def _design(*, study_id: str = "detection-reader-study", extra: str = "") -> bytes:
    return f"""\
kind: reader_study
id: {study_id}
version: 1
title: Lesion marks, first and second read
test_set: {{name: {harness.TEST_SET}}}
truth: {{labels_column: has_lesion}}
arms:
  - {{id: first-read}}
  - {{id: second-read}}
readers: [rev1, {REV2[0]}]
rating_scale: five_point
washout_days: 0
seed: 5
detection:
  reference: {{source: table, table: reference/lesions.csv}}
  matching: {{rule: center_distance, threshold: 10}}
primary_endpoint: wafroc
{extra}""".encode()


@dataclass
class Site:
    """Where a case's lesion lies: an image of the case and a pixel on it."""

    sop_instance_uid: str
    column: float
    row: float
    centre_mm: tuple[float, float, float]


@dataclass
class Setup:
    workdir: Path
    root: Path
    sites: dict[str, Site]
    case_ids: list[str]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    from workbench.dicom.lesions import lesions_from_mask
    from workbench.dicom.seg import read_seg_mask
    from workbench.dicom.volume import load_series
    from workbench.services import testsets

    base = tmp_path_factory.mktemp("detection-study")
    root = harness.synth(base / "set", n_cases=6)
    labels = pd.read_csv(root / "reference" / "labels.csv", dtype={"case_id": str})
    rows, sites = [], {}
    for case_id in WITH_LESION:
        volume = load_series(sorted((root / "cases" / case_id / "CT").glob("*.dcm")))
        mask = read_seg_mask(root / "cases" / case_id / "SEG" / "reader1.dcm", volume)
        lesion = lesions_from_mask(mask, volume.affine).iloc[0]
        z, y, x = (float(v) for v in np.argwhere(mask).mean(axis=0))
        sites[case_id] = Site(
            volume.sop_instance_uids[round(z)],
            x,
            y,
            (float(lesion["x"]), float(lesion["y"]), float(lesion["z"])),
        )
        series = labels.loc[labels["case_id"] == case_id, "series_instance_uid"].iloc[0]
        rows.append(
            {
                "series_instance_uid": series,
                "lesion_id": f"N-{case_id}",
                **{k: float(lesion[k]) for k in ("x", "y", "z")},
                "diameter_mm": float(lesion["diameter"]),
            }
        )
    pd.DataFrame(rows).to_csv(root / "reference" / "lesions.csv", index=False)
    labels["has_lesion"] = labels["case_id"].isin(WITH_LESION).astype(int)
    labels.to_csv(root / "reference" / "labels.csv", index=False)
    workdir = base / "wb"
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        admin, qa1 = harness.login(wb, "admin"), harness.login(wb, "qa1")
        accounts.create_user(
            wb,
            admin,
            username=REV2[0],
            full_name=REV2[1],
            role="reviewer",
            password=REV2[2],
            must_change_password=False,
        )
        testsets.import_test_set(wb, qa1, root, name=harness.TEST_SET, workers=1)
        testsets.check_quality(wb, qa1, harness.TEST_SET)
        testsets.lock_test_set(wb, qa1, harness.TEST_SET, password=harness.ACCOUNTS["qa1"][2])
    finally:
        wb.close()
    return Setup(workdir, root, sites, sorted(labels["case_id"]))


def _login(wb: object, user: str) -> object:
    if user == REV2[0]:
        return accounts.login(wb, REV2[0], REV2[2])
    return harness.login(wb, user)


def _password(user: str) -> str:
    return REV2[2] if user == REV2[0] else harness.ACCOUNTS[user][2]


#: What each reader marks, per arm: lesion case -> confidence (absent: missed) and
#: lesion-free case -> confidence of a false mark (absent: no mark).
PLAN = {
    ("rev1", "first-read"): ({"case0001": 4, "case0002": 2}, {"case0005": 3}),
    ("rev1", "second-read"): ({"case0001": 5, "case0002": 4, "case0003": 3}, {"case0006": 2}),
    (REV2[0], "first-read"): ({"case0003": 3}, {"case0005": 4, "case0006": 1}),
    (REV2[0], "second-read"): ({"case0001": 5, "case0003": 4, "case0004": 2}, {"case0005": 3}),
}


def _wafroc(plan: tuple[dict[str, int], dict[str, int]]) -> float:
    """By hand: mean of psi(highest false-mark rating of a lesion-free case, lesion rating)."""
    hits, false_marks = plan
    total = 0.0
    normal = [c for c in ("case0005", "case0006")]
    for case in normal:
        fp = false_marks.get(case, -np.inf)
        for lesion_case in WITH_LESION:
            ll = hits.get(lesion_case, -np.inf)
            total += 1.0 if ll > fp else 0.5 if ll == fp else 0.0
    return total / (len(normal) * len(WITH_LESION))


def _read_arm(wb: object, setup: Setup, reader: str, ref: str, arm: str) -> None:
    actor = _login(wb, reader)
    studies.open_reading(wb, actor, ref, arm)
    hits, false_marks = PLAN[(reader, arm)]
    while (case := studies.next_case(wb, actor, ref, arm)) is not None:
        marks: list[Mark] = []
        if case.case_id in hits:
            site = setup.sites[case.case_id]
            marks.append(
                Mark(hits[case.case_id], site.sop_instance_uid, site.column + 1.0, site.row)
            )
        if case.case_id in false_marks:
            # far from any lesion, given in patient coordinates
            marks.append(Mark(false_marks[case.case_id], x=-500.0, y=-500.0, z=0.0))
        if case.case_id == "case0004" and not marks:
            # a mark later withdrawn: the newest save of the case counts
            decoy = setup.sites["case0004"]
            studies.mark_case(
                wb, actor, ref, arm, case.case_id, [Mark(5, decoy.sop_instance_uid, 1.0, 1.0)]
            )
        studies.mark_case(wb, actor, ref, arm, case.case_id, marks, shown_at=case.shown_at)
    studies.sign_arm(wb, actor, ref, arm, password=_password(reader))
    with pytest.raises(errors.RecordLockedError, match="its marks can no longer change"):
        studies.mark_case(wb, actor, ref, arm, "case0001", [])


def test_two_readers_mark_lesions_in_both_arms(setup: Setup) -> None:
    wb = harness.open_wb(setup.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        ref = studies.add_study(wb, qa1, _design()).ref
        studies.approve_study(wb, qa2, ref, password=_password("qa2"))
        design = studies.study_design(wb, qa1, ref)
        rev1 = harness.login(wb, "rev1")
        first = studies.arm_order(design, "rev1")[0]
        studies.open_reading(wb, rev1, ref, first)
        case = studies.next_case(wb, rev1, ref, first)
        assert case is not None and case.model_score is None
        site = setup.sites["case0001"]
        with pytest.raises(errors.WorkflowError, match="mark lesions; save each case's marks"):
            studies.rate_case(wb, rev1, ref, first, case.case_id, 3)
        with pytest.raises(errors.ProtocolError, match="five-point confidence must be 1, 2, 3"):
            studies.mark_case(wb, rev1, ref, first, "case0001", [Mark(0, x=0.0, y=0.0, z=0.0)])
        with pytest.raises(errors.ProtocolError, match="Mark 1 of case 'case0002'.*not an image"):
            studies.mark_case(
                wb, rev1, ref, first, "case0002", [Mark(3, site.sop_instance_uid, 5.0, 5.0)]
            )
        with pytest.raises(errors.ProtocolError, match="lies outside the image of 128 x 128"):
            studies.mark_case(
                wb, rev1, ref, first, "case0001", [Mark(3, site.sop_instance_uid, 400.0, 5.0)]
            )
        with pytest.raises(errors.ProtocolError, match="image position .* or a patient position"):
            studies.mark_case(wb, rev1, ref, first, "case0001", [Mark(3, x=1.0)])
        with pytest.raises(errors.NotFoundError, match="not in this reading"):
            studies.mark_case(wb, rev1, ref, first, "case9999", [])

        for reader in design.readers:
            for arm in studies.arm_order(design, reader):
                _read_arm(wb, setup, reader, ref, arm)

        result = studies.analyze_study(wb, harness.login(wb, "aud"), ref)
        assert result.figure_of_merit == "wAFROC"
        assert result.n_cases == 6 and result.n_positive == 4 and result.n_lesions == 4
        got = {(r.reader, r.arm): r.auc.value for r in result.per_reader}
        assert got == pytest.approx({key: _wafroc(plan) for key, plan in PLAN.items()})
        for r in result.per_reader:
            assert r.auc.ci_low <= r.auc.value <= r.auc.ci_high
        assert result.difference.value == pytest.approx(
            result.arm_auc["second-read"].value - result.arm_auc["first-read"].value
        )
        assert (result.difference.ci_low > 0) == (result.verdict.value == "pass")
        assert "wAFROC difference" in result.criterion_text

        with wb.transaction(readonly=True) as session:
            marked = (
                session.query(AuditEntry)
                .filter(AuditEntry.action == "study.mark", AuditEntry.record_id.like(f"{ref}/%"))
                .all()
            )
            # 2 readers x 2 arms x 6 cases, plus the withdrawn decoy saves; hashes, no values
            decoys = sum("case0004" not in hits for hits, _ in PLAN.values())
            assert len(marked) == 4 * 6 + decoys
            assert all(set(e.new_value or {}) == {"marks_sha256", "seconds"} for e in marked)
            stored = session.query(ReaderMark).all()
            planned = sum(len(h) + len(f) for h, f in PLAN.values())
            assert len(stored) == planned + decoys
            on_image = [m for m in stored if m.sop_instance_uid == site.sop_instance_uid]
            assert on_image and on_image[0].column == pytest.approx(site.column + 1.0)
            hit = on_image[0]  # placed one pixel beside the lesion's centroid: a localisation
            assert np.hypot(hit.x - site.centre_mm[0], hit.y - site.centre_mm[1]) < 10
        with wb.transaction() as session, pytest.raises(Exception, match="append-only"):
            session.execute(text("UPDATE reader_marks SET confidence = 1"))
    finally:
        wb.close()


def test_a_split_plot_detection_design_is_not_approved(setup: Setup) -> None:
    wb = harness.open_wb(setup.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text_ = _design(
            study_id="detection-split-plot",
            extra=f"design: split_plot\nreader_groups: [[rev1], [{REV2[0]}]]\n",
        )
        ref = studies.add_study(wb, qa1, text_).ref
        with pytest.raises(errors.WorkflowError, match="split-plot design has no analysis"):
            studies.approve_study(wb, qa2, ref, password=_password("qa2"))
    finally:
        wb.close()


def test_labels_that_disagree_with_the_reference_lesions_are_named(setup: Setup) -> None:
    labels = pd.read_csv(setup.root / "reference" / "labels.csv", dtype={"case_id": str})
    wrong = labels.loc[labels["consensus_malignant"] != labels["has_lesion"], "case_id"]
    assert len(wrong)  # the synthetic malignancy calls are not the lesion list
    wb = harness.open_wb(setup.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text_ = _design(study_id="detection-wrong-truth").replace(
            b"labels_column: has_lesion", b"labels_column: consensus_malignant"
        )
        ref = studies.add_study(wb, qa1, text_).ref
        studies.approve_study(wb, qa2, ref, password=_password("qa2"))
        design = studies.study_design(wb, qa1, ref)
        for reader in design.readers:
            for arm in studies.arm_order(design, reader):
                _read_arm(wb, setup, reader, ref, arm)
        with pytest.raises(
            errors.ProtocolError,
            match="'consensus_malignant' must be 1 exactly for the cases with reference lesions; "
            f"it disagrees for \\['{sorted(wrong)[0]}'",
        ):
            studies.analyze_study(wb, qa1, ref)
    finally:
        wb.close()


def test_the_study_report_draws_wafroc_curves_and_embeds_the_marks(setup: Setup) -> None:
    import hashlib
    import io
    import json
    import subprocess

    from workbench.reports import extract_attachments
    from workbench.services import study_reports

    wb = harness.open_wb(setup.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        ref = studies.add_study(wb, qa1, _design(study_id="detection-study-report")).ref
        studies.approve_study(wb, qa2, ref, password=_password("qa2"))
        design = studies.study_design(wb, qa1, ref)
        for reader in design.readers:
            for arm in studies.arm_order(design, reader):
                _read_arm(wb, setup, reader, ref, arm)
        result = studies.analyze_study(wb, qa1, ref)
        for r in result.per_reader:
            # The curve runs from (0, 0) to (1, 1) and its area is the reader's wAFROC.
            assert r.curve is not None
            fpf, wllf = r.curve
            assert (fpf[0], wllf[0], fpf[-1], wllf[-1]) == (0.0, 0.0, 1.0, 1.0)
            assert np.all(np.diff(fpf) >= 0) and np.all(np.diff(wllf) >= 0)
            area = float(np.sum(np.diff(fpf) * (np.asarray(wllf[1:]) + wllf[:-1]) / 2))
            assert area == pytest.approx(_wafroc(PLAN[(r.reader, r.arm)]))
            assert area == pytest.approx(r.auc.value)

        info = study_reports.build_study_report_pdf(wb, qa1, ref)
        files = extract_attachments(info.pdf_path)
        assert "marks.csv" in files
        results = json.loads(files["results.json"])
        assert results["marks_csv_sha256"] == hashlib.sha256(files["marks.csv"]).hexdigest()
        marks = pd.read_csv(io.BytesIO(files["marks.csv"]), dtype={"case_id": str})
        for (reader, arm), (hits, false_marks) in PLAN.items():
            mine = marks[(marks["reader"] == reader) & (marks["arm"] == arm)]
            localised = mine[mine["status"] == "LL"]
            assert dict(zip(localised["case_id"], localised["score"], strict=True)) == hits
            wrong = mine[mine["status"] == "NL"]
            assert dict(zip(wrong["case_id"], wrong["score"], strict=True)) == false_marks
            missed = mine[mine["status"] == "missed"]
            assert set(missed["case_id"]) == set(WITH_LESION) - set(hits)

        text = subprocess.run(
            ["pdftotext", "-layout", str(info.pdf_path), "-"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        flat = " ".join(text.split())
        assert "wAFROC per reader and arm (empirical, case-stratified bootstrap" in flat
        assert "Reader-averaged wAFROC per arm" in flat
        assert "Figure 1. Empirical wAFROC curve of each reader" in flat
        assert "Figure 2. wAFROC difference per reader" in flat
        assert "marks.csv gives every reader's marks" in flat
        assert "ROC curve" not in flat.replace("wAFROC curve", "") and "AUC" not in flat
    finally:
        wb.close()
