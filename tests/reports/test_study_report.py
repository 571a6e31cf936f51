"""The reader-study report: built from the stored study, e-signed, sealed and verified.

Two real reviewer accounts read a fully crossed two-arm study (their ratings drawn
from a seeded binormal model and entered through the reading services); the report
is built, signed (authored, approved by another QA user), PAdES-sealed and
verified; its embedded files let the analysis be recomputed.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from workbench import errors
from workbench.cli.study_reports import study_report
from workbench.records.models import AuditEntry
from workbench.reports import extract_attachments
from workbench.services import accounts, studies, study_reports
from workbench.studies import analyze_ratings, load_study_design

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
import harness  # noqa: E402

REV2 = ("rev2", "Sam Ortega", "Willow-Frost-2026!")


def _design(model_ref: str) -> str:
    return f"""\
kind: reader_study
id: report-reader-study
version: 1
title: Malignancy calls with and without the model's score
test_set: {{name: {harness.TEST_SET}}}
truth: {{labels_column: consensus_malignant}}
arms:
  - {{id: unaided}}
  - {{id: aided, model: {model_ref}}}
readers: [rev1, {REV2[0]}]
rating_scale: five_point
washout_days: 0
seed: 11
hypothesis: non_inferiority
margin: 0.1
"""


def _password(user: str) -> str:
    return REV2[2] if user == REV2[0] else harness.ACCOUNTS[user][2]


def _login(wb: object, user: str) -> object:
    if user == REV2[0]:
        return accounts.login(wb, REV2[0], REV2[2])
    return harness.login(wb, user)


@pytest.fixture(scope="module")
def read_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[harness.Pipeline, str]:
    pipe = harness.build(tmp_path_factory.mktemp("study-report") / "wb", stage="run", n_cases=8)
    wb = harness.open_wb(pipe.workdir)
    try:
        accounts.create_user(
            wb,
            harness.login(wb, "admin"),
            username=REV2[0],
            full_name=REV2[1],
            role="reviewer",
            password=REV2[2],
            must_change_password=False,
        )
        text = _design(pipe.model_ref).encode()
        ref = studies.add_study(wb, harness.login(wb, "qa1"), text).ref
        studies.approve_study(wb, harness.login(wb, "qa2"), ref, password=_password("qa2"))
        labels = pd.read_csv(pipe.test_set_root / "reference" / "labels.csv", dtype=str)
        truth = dict(zip(labels["case_id"], labels["consensus_malignant"].astype(int), strict=True))
        design = load_study_design(text)[0]
        rng = np.random.default_rng(5)
        for reader in design.readers:
            actor = _login(wb, reader)
            for arm in studies.arm_order(design, reader):
                studies.open_reading(wb, actor, ref, arm)
                order = studies.reading_order(wb, actor, ref, arm)
                shift = 1.6 if arm == "aided" else 1.0
                ratings = {
                    c: float(np.clip(round(2.5 + shift * truth[c] + rng.normal(0, 0.8)), 1, 5))
                    for c in order
                }
                studies.rate_cases(wb, actor, ref, arm, ratings)
                # A changed rating before signing: a new row; the report lists both.
                studies.rate_case(wb, actor, ref, arm, order[0], 3)
                studies.sign_arm(wb, actor, ref, arm, password=_password(reader))
    finally:
        wb.close()
    return pipe, ref


def test_study_report_is_built_signed_sealed_and_verified(
    read_study: tuple[harness.Pipeline, str], tmp_path: Path
) -> None:
    pipe, ref = read_study
    wb = harness.open_wb(pipe.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        with pytest.raises(errors.PermissionDeniedError):
            study_reports.build_study_report_pdf(wb, harness.login(wb, "rev1"), ref)
        info = study_reports.build_study_report_pdf(wb, qa1, ref)
        assert info.status == "draft" and info.report_uid.startswith("SR-report-reader-study-v1-")
        assert info.missing_signatures == ["qa (authored)", "qa (approved)"]
        files = extract_attachments(info.pdf_path)
        assert set(files) == {
            "analysis.json",
            "case-order.csv",
            "ratings.csv",
            "report-content.json",
            "results.json",
            "study-design.yaml",
        }
        results = json.loads(files["results.json"])
        assert results["report_id"] == info.report_uid and results["seed"] == 11

        # The embedded ratings recompute the analysis: the counted rows give the same numbers.
        ratings = pd.read_csv(io.BytesIO(files["ratings.csv"]), dtype={"case_id": str})
        assert len(ratings) == 2 * 2 * (8 + 1)  # readers x arms x (cases + one changed rating)
        assert (ratings["counts"] != "yes").sum() == 4
        counted = ratings[ratings["counts"] == "yes"]
        truth = counted.drop_duplicates("case_id").set_index("case_id")["truth"]
        design = load_study_design(files["study-design.yaml"])[0]
        again = analyze_ratings(design, counted, truth)
        analysis = json.loads(files["analysis.json"])
        assert analysis["difference"]["value"] == pytest.approx(again.difference.value, abs=1e-12)
        assert analysis["verdict"] == again.verdict.value
        assert analysis["random_readers_random_cases"]["p_value"] == pytest.approx(again.p_value)
        assert analysis["fixed_readers_random_cases"] is not None
        assert analysis["random_readers_fixed_cases"] is not None

        # The case order each reader saw, with the study's seed.
        order = pd.read_csv(io.BytesIO(files["case-order.csv"]), dtype={"case_id": str})
        assert set(order["study_seed"]) == {11} and len(order) == 2 * 2 * 8
        with wb.transaction(readonly=True) as session:
            from workbench.records.studies import ReadingSession

            for s in session.query(ReadingSession):
                seen = order[(order["reader"] == s.reader) & (order["arm"] == s.arm)]
                assert list(seen.sort_values("position")["case_id"]) == list(s.case_order)

        with pytest.raises(errors.WorkflowError, match="required signatures"):
            study_reports.seal_study_report(wb, qa2, info.report_uid)
        study_reports.sign_study_report(
            wb, qa1, info.report_uid, meaning="authored", password=_password("qa1")
        )
        with pytest.raises(errors.PermissionDeniedError, match="separation of duties"):
            study_reports.sign_study_report(
                wb, qa1, info.report_uid, meaning="approved", password=_password("qa1")
            )
        with pytest.raises(errors.SignatureError, match="meaning"):
            study_reports.sign_study_report(
                wb, qa2, info.report_uid, meaning="reviewed", password=_password("qa2")
            )
        signed = study_reports.sign_study_report(
            wb, qa2, info.report_uid, meaning="approved", password=_password("qa2")
        )
        assert signed.status == "signed" and not signed.missing_signatures
        sealed = study_reports.seal_study_report(wb, qa2, info.report_uid)
        assert sealed.status == "sealed" and sealed.sealed_path is not None
        with pytest.raises(errors.RecordLockedError):
            study_reports.sign_study_report(
                wb, qa2, info.report_uid, meaning="approved", password=_password("qa2")
            )
        final = extract_attachments(sealed.sealed_path)
        assert final["results.json"] == files["results.json"]  # what was signed is what is sealed
        content = json.loads(final["report-content.json"])
        assert {s["meaning"] for s in content["signatures"]} == {"authored", "approved"}
        assert {r["name"] for r in content["readers"]} == {"Robin Reyes", REV2[1]}
        assert not any(r["simulated"] for r in content["readers"])

        check = study_reports.verify_study_report_file(wb, sealed.sealed_path)
        assert check.valid, check.reason
        assert {name for name, _, _ in check.checks} >= {
            "PAdES seal",
            "audit record",
            "results hash",
            "required signatures",
        }
        tampered = tmp_path / "tampered.pdf"
        shutil.copy(sealed.sealed_path, tampered)
        with tampered.open("ab") as handle:
            handle.write(b"\n% appended\n")
        bad = study_reports.verify_study_report_file(wb, tampered)
        assert not bad.valid and "covers whole file" in bad.reason
        draft = study_reports.verify_study_report_file(wb, info.pdf_path)
        assert not draft.valid and "PAdES seal" in draft.reason

        with wb.transaction(readonly=True) as session:
            actions = [
                e.action
                for e in session.query(AuditEntry).filter(
                    AuditEntry.record_type == "study_report",
                    AuditEntry.record_id == info.report_uid,
                )
            ]
        assert actions[:1] == ["study_report.build"]
        assert {"study_report.sign", "study_report.seal", "study_report.verify"} <= set(actions)
        assert harness.verify_chain(pipe.workdir).count > 0
        listed = study_reports.list_study_reports(wb, harness.login(wb, "aud"), ref)
        assert [r.report_uid for r in listed] == [info.report_uid]
    finally:
        wb.close()

    # The command line: ``study report verify`` needs no account; a tampered file exits 1.
    cli = typer.Typer()
    cli.command("report")(study_report)
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", str(sealed.sealed_path), "--workdir", str(pipe.workdir)])
    assert ok.exit_code == 0 and "VALID" in ok.output, ok.output
    failed = runner.invoke(cli, ["verify", str(tampered), "--workdir", str(pipe.workdir)])
    assert failed.exit_code == 1 and "FAILED verification" in failed.output
    listed_cli = runner.invoke(
        cli,
        ["list", ref, "--workdir", str(pipe.workdir), "--user", "aud"],
        env={"WORKBENCH_PASSWORD": harness.ACCOUNTS["aud"][2]},
    )
    assert listed_cli.exit_code == 0 and f"{info.report_uid}\t{ref}\tsealed" in listed_cli.output

    if shutil.which("pdftoppm"):
        subprocess.run(
            ["pdftoppm", "-r", "30", "-png", str(sealed.sealed_path), str(tmp_path / "page")],
            check=True,
        )
        assert len(list(tmp_path.glob("page-*.png"))) >= 5


def test_an_unsigned_reading_blocks_the_report(read_study: tuple[harness.Pipeline, str]) -> None:
    pipe, _ = read_study
    wb = harness.open_wb(pipe.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = _design(pipe.model_ref).replace("version: 1", "version: 2")
        ref = studies.add_study(wb, qa1, text.encode()).ref
        studies.approve_study(wb, qa2, ref, password=_password("qa2"))
        with pytest.raises(errors.WorkflowError, match="has not signed arm"):
            study_reports.build_study_report_pdf(wb, qa1, ref)
    finally:
        wb.close()
