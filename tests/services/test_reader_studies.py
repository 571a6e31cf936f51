"""Reader studies through the services: design, approval, two readers' blinded sessions, analysis.

Two real reviewer accounts read a fully crossed two-arm study (unaided, and aided by a
registered model's completed run) on a locked synthetic test set; the analysis is the
Obuchowski-Rockette analysis of their signed ratings. The analysis path itself is checked
against the published Van Dyke results in all three generalisations.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import errors
from workbench.records.models import AuditEntry
from workbench.services import accounts, studies
from workbench.stats import obuchowski_rockette
from workbench.studies import analyze_ratings, load_study_design

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
import harness  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
REV2 = ("rev2", "Sam Ortega", "Willow-Frost-2026!")


def _design(model_ref: str, *, washout: float = 0, version: int = 1) -> str:
    return f"""\
kind: reader_study
id: rel-reader-study
version: {version}
title: Malignancy calls with and without the model's score
test_set: {{name: {harness.TEST_SET}}}
truth: {{labels_column: consensus_malignant}}
arms:
  - {{id: unaided}}
  - {{id: aided, model: {model_ref}}}
readers: [rev1, {REV2[0]}]
rating_scale: five_point
washout_days: {washout}
seed: 7
hypothesis: superiority
"""


@pytest.fixture(scope="module")
def study_pipeline(tmp_path_factory: pytest.TempPathFactory) -> harness.Pipeline:
    pipe = harness.build(tmp_path_factory.mktemp("study") / "wb", stage="run", n_cases=8)
    wb = harness.open_wb(pipe.workdir)
    try:
        admin = harness.login(wb, "admin")
        accounts.create_user(
            wb,
            admin,
            username=REV2[0],
            full_name=REV2[1],
            role="reviewer",
            password=REV2[2],
            must_change_password=False,
        )
    finally:
        wb.close()
    return pipe


def _login(wb: object, user: str) -> object:
    if user == REV2[0]:
        return accounts.login(wb, REV2[0], REV2[2])
    return harness.login(wb, user)


def _password(user: str) -> str:
    return REV2[2] if user == REV2[0] else harness.ACCOUNTS[user][2]


def _read_arm(
    wb: object, reader: str, ref: str, arm: str, truth: dict[str, int], seed: int
) -> None:
    actor = _login(wb, reader)
    rng = np.random.default_rng(seed)
    progress = studies.open_reading(wb, actor, ref, arm)
    assert progress.n_rated == 0 and progress.n_cases == len(truth)
    seen = []
    while (case := studies.next_case(wb, actor, ref, arm)) is not None:
        seen.append(case.case_id)
        # Blinded: the reader gets images (and in the aided arm the model's output), no truth.
        assert case.image_paths and all(Path(p).is_file() for p in case.image_paths)
        assert (case.model_score is not None) == (arm == "aided")
        if case.position == 2:
            studies.pause_reading(wb, actor, ref, arm)
            with pytest.raises(errors.WorkflowError, match="paused"):
                studies.next_case(wb, actor, ref, arm)
            studies.open_reading(wb, actor, ref, arm)  # resume
        signal = truth[case.case_id] * (1.5 if arm == "aided" else 0.8)
        rating = int(np.clip(round(2.5 + signal + rng.normal(0, 0.9)), 1, 5))
        studies.rate_case(wb, actor, ref, arm, case.case_id, rating, shown_at=case.shown_at)
    assert sorted(seen) == sorted(truth)
    with pytest.raises(errors.ProtocolError, match="five-point rating must be 1, 2, 3, 4 or 5"):
        studies.rate_case(wb, actor, ref, arm, seen[0], 7)
    studies.rate_case(wb, actor, ref, arm, seen[0], 3)  # a change before signing: a new row
    studies.sign_arm(wb, actor, ref, arm, password=_password(reader))
    with pytest.raises(errors.RecordLockedError, match="signed"):
        studies.rate_case(wb, actor, ref, arm, seen[0], 4)


def test_two_readers_complete_a_crossed_two_arm_study(study_pipeline: harness.Pipeline) -> None:
    wb = harness.open_wb(study_pipeline.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        info = studies.add_study(wb, qa1, _design(study_pipeline.model_ref).encode())
        ref = info.ref
        with pytest.raises(errors.PermissionDeniedError, match="separation of duties"):
            studies.approve_study(wb, qa1, ref, password=_password("qa1"))
        rev1 = harness.login(wb, "rev1")
        with pytest.raises(errors.WorkflowError, match="not approved"):
            studies.open_reading(wb, rev1, ref, "unaided")
        studies.approve_study(wb, qa2, ref, password=_password("qa2"))
        with pytest.raises(errors.PermissionDeniedError):
            studies.add_study(wb, rev1, _design(study_pipeline.model_ref, version=2).encode())

        labels = pd.read_csv(study_pipeline.test_set_root / "reference" / "labels.csv", dtype=str)
        truth = dict(zip(labels["case_id"], labels["consensus_malignant"].astype(int), strict=True))
        design = load_study_design(_design(study_pipeline.model_ref).encode())[0]
        for seed, reader in enumerate(design.readers):
            first, second = studies._arm_order(design, reader)
            with pytest.raises(errors.WorkflowError, match=f"reads arm '{first}' first"):
                studies.open_reading(wb, _login(wb, reader), ref, second)
            _read_arm(wb, reader, ref, first, truth, seed)
            _read_arm(wb, reader, ref, second, truth, seed + 10)

        # A reader sees only their own progress and cannot run the analysis.
        own = studies.reading_progress(wb, rev1, ref)
        assert {p.reader for p in own} == {"rev1"} and all(p.status == "signed" for p in own)
        with pytest.raises(errors.PermissionDeniedError):
            studies.analyze_study(wb, rev1, ref)
        everyone = studies.reading_progress(wb, qa1, ref)
        assert len(everyone) == 4

        result = studies.analyze_study(wb, harness.login(wb, "aud"), ref)
        assert result.arms == ("unaided", "aided") and result.n_cases == len(truth)
        assert len(result.per_reader) == 4
        assert set(result.reading_seconds) == {"unaided", "aided"}
        assert result.difference.ci_low < result.difference.value < result.difference.ci_high
        assert result.verdict.value in ("pass", "fail")
        assert (result.difference.ci_low > 0) == (result.verdict.value == "pass")

        with wb.transaction(readonly=True) as session:
            rated = (
                session.query(AuditEntry)
                .filter(AuditEntry.action == "study.rate", AuditEntry.record_id.like(f"{ref}/%"))
                .all()
            )
            # 2 readers x 2 arms x (cases + one changed rating), never the value itself.
            assert len(rated) == 4 * (len(truth) + 1)
            assert all("rating" not in (e.new_value or {}) for e in rated)
            actions = {e.action for e in session.query(AuditEntry)}
        assert {
            "study.create",
            "study.approve",
            "study.session.open",
            "study.session.pause",
            "study.session.resume",
            "study.session.sign",
            "study.analyze",
        } <= actions
    finally:
        wb.close()


def test_washout_keeps_the_second_arm_closed(study_pipeline: harness.Pipeline) -> None:
    wb = harness.open_wb(study_pipeline.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = _design(study_pipeline.model_ref, washout=28).replace(
            "id: rel-reader-study", "id: rel-washout-study"
        )
        ref = studies.add_study(wb, qa1, text.encode()).ref
        studies.approve_study(wb, qa2, ref, password=_password("qa2"))
        design = load_study_design(text.encode())[0]
        first, second = studies._arm_order(design, "rev1")
        labels = pd.read_csv(study_pipeline.test_set_root / "reference" / "labels.csv", dtype=str)
        truth = dict(zip(labels["case_id"], labels["consensus_malignant"].astype(int), strict=True))
        _read_arm(wb, "rev1", ref, first, truth, 3)
        with pytest.raises(errors.WorkflowError, match="washout of 28 days"):
            studies.open_reading(wb, harness.login(wb, "rev1"), ref, second)
    finally:
        wb.close()


def test_bad_designs_name_every_wrong_field() -> None:
    text = (
        _design("m@1")
        .replace("readers: [rev1, rev2]", "readers: [rev1]")
        .replace("hypothesis: superiority", "hypothesis: non_inferiority\nmargin: 0\nextra: 1")
    )
    with pytest.raises(errors.ProtocolError) as raised:
        load_study_design(text.encode())
    message = str(raised.value)
    assert "readers" in message and "extra" in message


def test_analysis_reproduces_the_published_van_dyke_results() -> None:
    """RRRC, FRRC and RRFC of OR-DBM MRMC 2.51 / RJafroc on Van Dyke (1993).

    Sources: RJafroc dataset02 OR analysis (F = 4.456, ddf = 15.26, p = 0.05167; as in
    tests/stats/test_reference_values.py) and OR-DBM MRMC 2.51 output for the Van Dyke data
    (RJafroc goodValues361/Iowa/VanDyke.txt: fixed readers X2 = 5.47595, fixed cases F = 8.70;
    as in tests/stats/test_mrmc_fixed_effects.py).
    """
    vandyke = pd.read_csv(REFERENCE / "vandyke_long.csv")
    ratings = pd.DataFrame(
        {
            "reader": vandyke["reader"].astype(str),
            "arm": "t" + vandyke["treatment"].astype(str),
            "case_id": vandyke["case"].astype(str),
            "rating": vandyke["rating"].astype(float),
        }
    )
    truth = vandyke.drop_duplicates("case").set_index(
        vandyke.drop_duplicates("case")["case"].astype(str)
    )["truth"]
    design = load_study_design(
        b"""kind: reader_study
id: vandyke
version: 1
title: Van Dyke 1993, cine MRI vs spin echo MRI
test_set: {name: vandyke}
truth: {labels_column: truth}
arms: [{id: t1}, {id: t2}]
readers: ['1', '2', '3', '4', '5']
hypothesis: superiority
"""
    )[0]
    result = analyze_ratings(design, ratings, truth)
    assert result.rrrc.statistic == pytest.approx(4.456, abs=5e-4)
    assert result.rrrc.df_den == pytest.approx(15.26, abs=5e-3)
    assert result.p_value == pytest.approx(0.05167, abs=5e-6)
    assert result.rrrc.fixed_readers is not None and result.rrrc.fixed_cases is not None
    assert result.rrrc.fixed_readers.statistic == pytest.approx(5.47595, abs=5e-6)
    assert round(result.rrrc.fixed_cases.statistic, 2) == 8.70
    # Published: AUC 0.89703704 (treatment 1), 0.94083 (treatment 2); 1 - 2 = -0.04380.
    direct = obuchowski_rockette(
        ratings.assign(truth=ratings["case_id"].map(truth)),
        reader="reader",
        modality="arm",
        case="case_id",
        truth="truth",
        rating="rating",
    )
    assert result.difference.value == pytest.approx(
        direct.modality_auc["t2"].value - direct.modality_auc["t1"].value
    )
    assert result.difference.value == pytest.approx(0.04380, abs=5e-5)
    # p = 0.0517: the CI of t2 - t1 includes 0, so superiority of t2 is not shown.
    assert result.difference.ci_low < 0 < result.difference.ci_high
    assert result.verdict.value == "fail"


def test_simulated_ratings_follow_the_binormal_model() -> None:
    """Equal-variance binormal AUC = Phi(d / sqrt(2)) (Metz 1986, Invest Radiol 21:720).

    Published values: d = 1 gives AUC 0.7602, d = 1.5 gives 0.8556 (Phi(0.7071) = 0.76025,
    Phi(1.0607) = 0.85558, standard normal table).
    """
    from workbench.stats import auc
    from workbench.studies import simulate_ratings

    n = 4000
    truth = pd.Series([0, 1] * (n // 2), index=[f"c{i}" for i in range(n)])
    text = (
        _design("m@1")
        .replace("rating_scale: five_point", "rating_scale: probability_0_100")
        .replace("seed: 7", "seed: 3\nsimulation: {separation: [1.0, 1.5], aided_shift: 0.5}")
    )
    design = load_study_design(text.encode())[0]
    assert design.simulated
    frame = simulate_ratings(truth, design)
    assert len(frame) == 2 * 2 * n
    assert frame.equals(simulate_ratings(truth, design))  # seeded: the same ratings again
    expected = {("rev1", "unaided"): 0.76025, ("rev1", "aided"): 0.85558}
    expected[("rev2", "unaided")] = 0.85558
    for (reader, arm), value in expected.items():
        rows = frame[(frame["reader"] == reader) & (frame["arm"] == arm)]
        y = truth.loc[rows["case_id"]].to_numpy()
        estimate = auc(y, rows["rating"].to_numpy(float), ci="delong")
        assert estimate.ci_low < value < estimate.ci_high, (reader, arm, estimate)
        assert estimate.value == pytest.approx(value, abs=0.03)
    five = load_study_design(
        _design("m@1").replace("seed: 7", "seed: 3\nsimulation: {separation: [1.0, 1.5]}").encode()
    )[0]
    ratings = simulate_ratings(truth, five)["rating"]
    assert set(ratings) <= {1.0, 2.0, 3.0, 4.0, 5.0} and ratings.nunique() == 5
    with pytest.raises(errors.ProtocolError, match="one value per reader"):
        load_study_design(
            _design("m@1").replace("seed: 7", "simulation: {separation: [1.0]}").encode()
        )
    with pytest.raises(errors.ProtocolError, match="'simulation' section"):
        simulate_ratings(truth, load_study_design(_design("m@1").encode())[0])


def test_a_split_plot_study_is_refused_at_approval(study_pipeline: harness.Pipeline) -> None:
    wb = harness.open_wb(study_pipeline.workdir)
    try:
        text = (
            _design(study_pipeline.model_ref)
            .replace("id: rel-reader-study", "id: rel-split-plot")
            .replace(
                "rating_scale: five_point",
                f"design: split_plot\nreader_groups: [[rev1], [{REV2[0]}]]\n"
                "rating_scale: five_point",
            )
        )
        ref = studies.add_study(wb, harness.login(wb, "qa1"), text.encode()).ref
        with pytest.raises(errors.WorkflowError, match="split-plot design has no analysis"):
            studies.approve_study(wb, harness.login(wb, "qa2"), ref, password=_password("qa2"))
        with pytest.raises(errors.WorkflowError, match="not approved"):
            studies.open_reading(wb, harness.login(wb, "rev1"), ref, "unaided")
    finally:
        wb.close()


def test_the_demo_reader_study_runs_to_a_sealed_report(
    study_pipeline: harness.Pipeline,
) -> None:
    """The demo's step: 4 simulated readers x 2 arms, analysed, reported, sealed, verified."""
    import json
    import time

    from workbench.records.models import AuditEntry as Entry
    from workbench.reports import extract_attachments
    from workbench.services import demo, study_reports

    wb = harness.open_wb(study_pipeline.workdir)

    def credentials(user: str) -> tuple[object, str]:
        password = (
            demo.DEMO_ACCOUNTS[user][2]
            if user in demo.DEMO_ACCOUNTS and user != "admin"
            else harness.ACCOUNTS[user][2]
        )
        return accounts.login(wb, user, password), password

    try:
        started = time.perf_counter()
        sealed = demo.ensure_simulated_reader_study(
            wb,
            test_set=harness.TEST_SET,
            model_ref=study_pipeline.model_ref,
            credentials=credentials,
            admin="admin",
            author="qa1",
            approver="qa2",
            echo=lambda _line: None,
        )
        elapsed = time.perf_counter() - started
        assert sealed.status == "sealed" and sealed.sealed_path is not None
        print(f"the demo's reader study took {elapsed:.0f} s")  # timed, not asserted
        check = study_reports.verify_study_report_file(wb, sealed.sealed_path)
        assert check.valid, check.reason
        files = extract_attachments(sealed.sealed_path)
        content = json.loads(files["report-content.json"])
        readers = content["readers"]
        assert [r["username"] for r in readers] == list(demo.DEMO_READERS)
        assert all(r["simulated"] and "(simulated)" in r["name"] for r in readers)
        assert "binormal" in content["design"]["simulation"]
        ratings = pd.read_csv(io.BytesIO(files["ratings.csv"]))
        assert len(ratings) == 4 * 2 * 8 and ratings["seconds"].notna().all()
        # Idempotent: a second call finds the sealed report and records nothing new but
        # the sign-ins (security events).
        with wb.transaction(readonly=True) as session:
            last = max(e.seq for e in session.query(Entry))
        again = demo.ensure_simulated_reader_study(
            wb,
            test_set=harness.TEST_SET,
            model_ref=study_pipeline.model_ref,
            credentials=credentials,
            admin="admin",
            author="qa1",
            approver="qa2",
            echo=lambda _line: None,
        )
        assert again.report_uid == sealed.report_uid
        with wb.transaction(readonly=True) as session:
            added = {e.action for e in session.query(Entry).filter(Entry.seq > last)}
        assert all(a.startswith("security.") for a in added), added
    finally:
        wb.close()
