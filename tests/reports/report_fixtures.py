"""Fixtures for the report tests: a realistic, synthetic :class:`ReportContent`.

``make_report_content`` simulates what the service layer would fill in from
stored records of one validation run: three scanners (one where the model's
segmentation is worse), two sexes, four age bands (the youngest below the
protocol's minimum n), excluded and failed cases, discrepancies with
adjudication decisions, e-signatures and audit-trail entries. Numbers are
computed from simulated per-case data, so tables, figures and the per-case
CSV agree with each other. The benchmark imports this module by path.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from workbench.reports import (
    AcceptanceRow,
    AdjudicationDecision,
    AdjudicationSummary,
    AgreementRow,
    AuditEntry,
    CaseNote,
    DataQualitySummary,
    DatasetSummary,
    Deviation,
    DistributionGroup,
    EstimateStatus,
    FactorCounts,
    HeterogeneityTest,
    LevelCount,
    MethodsSummary,
    MetricMethod,
    MetricResult,
    ModelInfo,
    PhiCheck,
    ProtocolInfo,
    QualityFinding,
    ReaderInfo,
    ReportContent,
    ReportEstimate,
    RequiredSignature,
    ResultsSection,
    RocCurve,
    RunEnvironment,
    SignatureEntry,
    SoftwareInfo,
    StratumEstimate,
    StratumSpec,
    TestSetInfo,
    ThresholdSpec,
    build_report,
    ensure_signing_identity,
)

CREATED = datetime(2025, 3, 14, 9, 30, 0, tzinfo=UTC)
MIN_N = 20
AUC_THRESHOLD = 0.80
DICE_THRESHOLD = 0.70
INJECTED_FONT = "<font size=40>BIG</font>"
INJECTED_LINK = '<a href="javascript:alert(1)">x</a>'

SCANNERS = {
    "A": ("SIEMENS", "SOMATOM Force", 0.86, 0.04),
    "B": ("GE MEDICAL SYSTEMS", "Revolution CT", 0.84, 0.05),
    "C": ("Philips", "iCT 256", 0.66, 0.09),  # the model is worse on this scanner
}
AGE_BANDS = ("18-39", "40-59", "60-74", "75+")

PROTOCOL_YAML = """\
protocol_id: LUNG-SEG-CLS
version: "2.1"
title: Lung lesion segmentation and malignancy classification
endpoints:
  - id: auc_overall
    metric: auc
    criterion: ci_low >= 0.80
    primary: true
  - id: dice_overall
    metric: dice_mean
    criterion: ci_low >= 0.70
    primary: true
  - id: dice_per_scanner
    metric: dice_mean
    stratify_by: scanner
    criterion: ci_low >= 0.70
    primary: false
strata: {scanner: 20, sex: 20, age_band: 20}
multiplicity: holm
"""


def _sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _auc(labels: np.ndarray, scores: np.ndarray, method: str = "hanley-mcneil") -> ReportEstimate:
    pos, neg = scores[labels == 1], scores[labels == 0]
    n = len(labels)
    if len(pos) == 0 or len(neg) == 0:
        return ReportEstimate.missing(EstimateStatus.NOT_ESTIMABLE, "one class only", n=n)
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    a = float(greater / (len(pos) * len(neg)))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (len(pos) - 1) * (q1 - a * a) + (len(neg) - 1) * (q2 - a * a)) / (
        len(pos) * len(neg)
    )
    se = math.sqrt(max(var, 1e-12))
    return ReportEstimate(a, max(0.0, a - 1.96 * se), min(1.0, a + 1.96 * se), 0.95, method, n)


def _mean_ci(values: np.ndarray) -> ReportEstimate:
    n = len(values)
    if n < 2:
        return ReportEstimate.missing(EstimateStatus.NOT_ESTIMABLE, "fewer than 2 cases", n=n)
    m = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(n))
    return ReportEstimate(m, m - 1.96 * se, m + 1.96 * se, 0.95, "t-interval", n)


def _proportion(k: int, n: int) -> ReportEstimate:
    low, high = _wilson(k, n)
    return ReportEstimate(k / n, low, high, 0.95, "wilson", n)


def _stratify(rows: list[dict], factor: str, levels: tuple[str, ...], estimator) -> list:
    out = []
    for level in levels:
        subset = [r for r in rows if r[factor] == level]
        if len(subset) < MIN_N:
            out.append(
                StratumEstimate(
                    factor.replace("_", " "),
                    level,
                    ReportEstimate.missing(
                        EstimateStatus.INSUFFICIENT_N,
                        f"n={len(subset)} < minimum {MIN_N}",
                        n=len(subset),
                    ),
                )
            )
        else:
            out.append(StratumEstimate(factor.replace("_", " "), level, estimator(subset)))
    return out


def make_report_content(
    n_cases: int = 120,
    *,
    seed: int = 7,
    inject_markup: bool = False,
    signed: bool = False,
) -> ReportContent:
    """A synthetic, internally consistent :class:`ReportContent` of one validation run.

    Parameters
    ----------
    n_cases : int
        Cases in the test set (about 4% are excluded and 2% fail inference).
    seed : int
        Seed of the simulation.
    inject_markup : bool
        Put Paragraph-markup strings into DICOM-derived fields (scanner
        model name, a failure reason, a reader qualification, a rationale).
    signed : bool
        Apply every required signature and mark the report final.
    """
    rng = np.random.default_rng(seed)
    scanner_ids = list(SCANNERS)
    scanner_of = rng.choice(scanner_ids, size=n_cases, p=[0.4, 0.35, 0.25])
    sex_of = rng.choice(["F", "M"], size=n_cases)
    # the youngest band stays below MIN_N on purpose
    band_of = rng.choice(list(AGE_BANDS), size=n_cases, p=[0.04, 0.30, 0.40, 0.26])
    label_of = (rng.random(n_cases) < 0.4).astype(int)
    score_of = np.clip(rng.normal(0.35 + 0.35 * label_of, 0.17), 0, 1)
    dice_of = np.array(
        [np.clip(rng.normal(SCANNERS[s][2], SCANNERS[s][3]), 0.05, 0.99) for s in scanner_of]
    )
    status_of = np.array(["included"] * n_cases, dtype=object)
    n_excluded = max(2, round(n_cases * 0.04))
    n_failed = max(1, round(n_cases * 0.02))
    picked = rng.choice(n_cases, size=n_excluded + n_failed, replace=False)
    status_of[picked[:n_excluded]] = "excluded"
    status_of[picked[n_excluded:]] = "failed"

    model_name_suffix = f" {INJECTED_FONT}" if inject_markup else ""
    rows: list[dict] = []
    for i in range(n_cases):
        s = str(scanner_of[i])
        included = status_of[i] == "included"
        rows.append(
            {
                "case_id": f"CASE-{i + 1:04d}",
                "scanner_id": s,
                "manufacturer": SCANNERS[s][0],
                "manufacturer_model_name": SCANNERS[s][1] + (model_name_suffix if s == "C" else ""),
                "patient_sex": str(sex_of[i]),
                "age_band": str(band_of[i]),
                "status": str(status_of[i]),
                "reference_malignant": int(label_of[i]),
                "score": round(float(score_of[i]), 4) if status_of[i] != "failed" else None,
                "predicted_malignant": int(score_of[i] >= 0.5)
                if status_of[i] != "failed"
                else None,
                "dice": round(float(dice_of[i]), 4) if included else None,
            }
        )
    included = [r for r in rows if r["status"] == "included"]
    y = np.array([r["reference_malignant"] for r in included])
    score = np.array([r["score"] for r in included])
    dice = np.array([r["dice"] for r in included])

    def auc_of(subset: list[dict]) -> ReportEstimate:
        return _auc(
            np.array([r["reference_malignant"] for r in subset]),
            np.array([r["score"] for r in subset]),
        )

    def dice_of_rows(subset: list[dict]) -> ReportEstimate:
        return _mean_ci(np.array([r["dice"] for r in subset]))

    scanner_labels = {
        s: f"{s} ({SCANNERS[s][1]}{model_name_suffix if s == 'C' else ''})" for s in scanner_ids
    }
    # analysis copies carry the printed scanner label; the per-case rows stay as attached
    analysis = [
        dict(r, scanner=scanner_labels[r["scanner_id"]], sex=r["patient_sex"]) for r in included
    ]

    def strata(estimator) -> tuple[StratumEstimate, ...]:
        out = _stratify(analysis, "scanner", tuple(scanner_labels.values()), estimator)
        out += _stratify(analysis, "sex", ("F", "M"), estimator)
        out += _stratify(analysis, "age_band", AGE_BANDS, estimator)
        return tuple(out)

    auc_overall = _auc(y, score, "delong")
    tp = int(((score >= 0.5) & (y == 1)).sum())
    tn = int(((score < 0.5) & (y == 0)).sum())
    sens = _proportion(tp, int((y == 1).sum()))
    spec = _proportion(tn, int((y == 0).sum()))
    dice_overall = _mean_ci(dice)
    auc_strata = strata(auc_of)
    dice_strata = strata(dice_of_rows)

    metrics = (
        MetricResult("auc", "AUC", auc_overall, auc_strata, AUC_THRESHOLD, ">=", 3),
        MetricResult("sensitivity", "Sensitivity", sens, (), None, ">=", 3),
        MetricResult("specificity", "Specificity", spec, (), None, ">=", 3),
        MetricResult("dice", "Dice (mean)", dice_overall, dice_strata, DICE_THRESHOLD, ">=", 3),
    )

    # ROC with a simple pointwise Wilson band
    thresholds = np.unique(np.concatenate([[1.01], np.sort(score)[::-1], [-0.01]]))[::-1]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    fpr, tpr, lo, hi = [], [], [], []
    for t in thresholds:
        k_tp = int(((score >= t) & (y == 1)).sum())
        k_fp = int(((score >= t) & (y == 0)).sum())
        fpr.append(k_fp / n_neg)
        tpr.append(k_tp / n_pos)
        band = _wilson(k_tp, n_pos)
        lo.append(band[0])
        hi.append(band[1])
    roc = RocCurve(
        tuple(fpr),
        tuple(tpr),
        tuple(lo),
        tuple(hi),
        auc_overall,
        "Wilson, pointwise",
        (1 - spec.value, sens.value),
    )

    distributions = tuple(
        DistributionGroup(
            scanner_labels[s], tuple(r["dice"] for r in included if r["scanner_id"] == s)
        )
        for s in scanner_ids
    )
    scanner_c = next(st for st in dice_strata if st.level.startswith("C"))
    acceptance = (
        AcceptanceRow(
            "AUC",
            "lower 95% CI bound \u2265 0.80",
            auc_overall,
            "pass" if auc_overall.ci_low >= AUC_THRESHOLD else "fail",
            True,
        ),
        AcceptanceRow(
            "Dice (mean)",
            "lower 95% CI bound \u2265 0.70",
            dice_overall,
            "pass" if dice_overall.ci_low >= DICE_THRESHOLD else "fail",
            True,
        ),
    ) + tuple(
        AcceptanceRow(
            "Dice (mean)",
            "lower 95% CI bound \u2265 0.70",
            st.estimate,
            ("pass" if st.estimate.ci_low >= DICE_THRESHOLD else "fail")
            if st.estimate.ok
            else "not_evaluable",
            False,
            f"scanner {st.level[0]}",
        )
        for st in dice_strata
        if st.factor == "scanner"
    )
    assert scanner_c.estimate.ok and scanner_c.estimate.ci_low < DICE_THRESHOLD

    excluded = tuple(
        CaseNote(r["case_id"], "Slice gap > 2.5 mm (missing slice)")
        for r in rows
        if r["status"] == "excluded"
    )
    failed_rows = [r for r in rows if r["status"] == "failed"]
    failed = tuple(
        CaseNote(
            r["case_id"],
            "Inference failed: sliding-window output empty"
            + (f" {INJECTED_LINK}" if inject_markup and i == 0 else ""),
        )
        for i, r in enumerate(failed_rows)
    )
    discrepant = [r for r in included if r["predicted_malignant"] != r["reference_malignant"]][:12]
    decided = CREATED - timedelta(days=2)
    decisions = tuple(
        AdjudicationDecision(
            case_id=r["case_id"],
            kind="classification",
            model_output="malignant" if r["predicted_malignant"] else "benign",
            reference="malignant" if r["reference_malignant"] else "benign",
            decision="reference upheld" if i % 3 else "reference revised",
            adjudicator="dr.okafor" if i % 2 else "dr.lindqvist",
            decided_at=decided + timedelta(minutes=7 * i),
            rationale=(
                "Subsolid component overlooked by readers"
                if i % 3 == 0
                else "Benign calcification pattern"
            )
            + (f" {INJECTED_FONT}" if inject_markup and i == 1 else ""),
        )
        for i, r in enumerate(discrepant)
    )
    outcome_counts: dict[str, int] = {}
    for d in decisions:
        outcome_counts[d.decision] = outcome_counts.get(d.decision, 0) + 1
    post_auc = ReportEstimate(
        min(auc_overall.value + 0.012, 0.99),
        min(auc_overall.ci_low + 0.012, 0.99),
        min(auc_overall.ci_high + 0.01, 1.0),
        0.95,
        "delong",
        auc_overall.n,
    )

    counts = (
        FactorCounts(
            "Scanner",
            tuple(LevelCount(scanner_labels[s], int((scanner_of == s).sum())) for s in scanner_ids),
        ),
        FactorCounts("Sex", tuple(LevelCount(v, int((sex_of == v).sum())) for v in ("F", "M"))),
        FactorCounts(
            "Age band", tuple(LevelCount(v, int((band_of == v).sum())) for v in AGE_BANDS)
        ),
    )
    required = (
        RequiredSignature("QA/regulatory", "Authored"),
        RequiredSignature("Clinical reviewer", "Reviewed"),
        RequiredSignature("QA/regulatory", "Approved"),
    )
    signatures = [
        SignatureEntry(
            "Maria Keller",
            "mkeller",
            "QA/regulatory",
            "Authored",
            CREATED + timedelta(minutes=5),
            "SIG-0001",
            _sha("results"),
        )
    ]
    if signed:
        signatures += [
            SignatureEntry(
                "Dr. Ada Okafor",
                "dr.okafor",
                "Clinical reviewer",
                "Reviewed",
                CREATED + timedelta(hours=2),
                "SIG-0002",
                _sha("results"),
            ),
            SignatureEntry(
                "Tom Berger",
                "tberger",
                "QA/regulatory",
                "Approved",
                CREATED + timedelta(hours=3),
                "SIG-0003",
                _sha("results"),
            ),
        ]
    actions = [
        "testset.lock",
        "model.register",
        "protocol.approve",
        "run.start",
        "run.quality_gate",
        "run.inference",
        "run.statistics",
        "run.acceptance",
        "adjudication.decide",
        "report.build",
        "signature.apply",
    ]
    audit: list[AuditEntry] = []
    previous = _sha("genesis")
    for i, action in enumerate(actions):
        entry_hash = _sha(f"{previous}{action}{i}")
        audit.append(
            AuditEntry(
                100 + i,
                CREATED - timedelta(hours=len(actions) - i),
                "mkeller" if not action.startswith("adj") else "dr.okafor",
                action,
                action.split(".")[0],
                f"{action.split('.')[0]}-17",
                entry_hash,
                previous,
            )
        )
        previous = entry_hash

    manifest_entries = {f"cases/{r['case_id']}/CT/0001.dcm": _sha(r["case_id"]) for r in rows}
    manifest_digest = hashlib.sha256(repr(sorted(manifest_entries.items())).encode()).hexdigest()

    return ReportContent(
        report_id="VR-2025-0042",
        title="Validation report: lung lesion AI",
        status="final" if signed else "draft",
        created_at=CREATED,
        author="Maria Keller",
        model=ModelInfo(
            "LungLesionNet",
            "1.4.2",
            _sha("model-1.4.2"),
            "Lesion segmentation and malignancy classification on chest CT",
        ),
        protocol=ProtocolInfo(
            "LUNG-SEG-CLS",
            "2.1",
            hashlib.sha256(PROTOCOL_YAML.encode()).hexdigest(),
            "Lung lesion segmentation and malignancy classification",
            PROTOCOL_YAML,
            "Tom Berger",
            CREATED - timedelta(days=30),
        ),
        test_set=TestSetInfo(
            "chest-ct-holdout-2025",
            manifest_digest,
            CREATED - timedelta(days=20),
            "mkeller",
            manifest_entries,
        ),
        software=SoftwareInfo("0.1.0", "c1b3717"),
        environment=RunEnvironment(
            "RUN-17",
            "cuda:0 (NVIDIA H100 80GB HBM3)",
            "Linux-6.1-x86_64",
            "3.11.9",
            {
                "torch": "2.13.0",
                "monai": "1.5.0",
                "numpy": "2.4.6",
                "scipy": "1.15.2",
                "pydicom": "3.0.1",
                "highdicom": "0.25.0",
                "reportlab": "5.1.0",
            },
            CREATED - timedelta(hours=6),
            CREATED - timedelta(hours=4),
        ),
        intended_use=(
            "LungLesionNet segments solid and subsolid lung lesions of 6\u201330 mm on "
            "non-contrast chest CT and estimates the probability that a lesion is malignant. "
            "It assists radiologists; it does not replace their reading.\n\n"
            "Population: adults (18 years and older) referred for chest CT. Not intended for "
            "paediatric use or contrast-enhanced series."
        ),
        dataset=DatasetSummary(
            n_cases=n_cases,
            n_series=n_cases,
            n_files=n_cases * 64 + 2 * n_cases,
            counts=counts,
            reference_standard=(
                "Malignancy: consensus of three thoracic radiologists with histopathology where "
                "available. Segmentation: manual contours by reader 1 (DICOM SEG), reviewed by "
                "reader 2."
            ),
            readers=(
                ReaderInfo("R1", "Thoracic radiologist", "12 years"),
                ReaderInfo(
                    "R2",
                    "Thoracic radiologist",
                    "8 years" + (f" {INJECTED_LINK}" if inject_markup else ""),
                ),
                ReaderInfo("R3", "Radiologist", "5 years"),
            ),
            inclusion_criteria=(
                "Adult patients (age \u2265 18)",
                "Non-contrast chest CT, slice thickness \u2264 1.5 mm",
                "At least one lesion 6\u201330 mm",
            ),
            exclusion_criteria=("Slice gaps or missing slices", "Severe motion artefacts"),
            n_included=len(included),
            excluded_cases=excluded,
            failed_cases=failed,
            quality=DataQualitySummary(
                True,
                (
                    QualityFinding(
                        "missing_slice", "critical", len(excluded), "Cases excluded before the run"
                    ),
                    QualityFinding("hu_range", "warning", 3, "Air HU above -950 on scanner C"),
                ),
                "dicom-ct-v3",
            ),
            phi_check=PhiCheck(
                True, n_cases * 64, 0, "PatientIdentityRemoved = YES in every file."
            ),
        ),
        methods=MethodsSummary(
            metrics=(
                MetricMethod(
                    "AUC",
                    "Area under the ROC curve of the malignancy score",
                    "DeLong (overall), Hanley\u2013McNeil (strata)",
                ),
                MetricMethod(
                    "Sensitivity", "TP / (TP + FN) at the operating threshold", "Wilson score"
                ),
                MetricMethod(
                    "Specificity", "TN / (TN + FP) at the operating threshold", "Wilson score"
                ),
                MetricMethod(
                    "Dice", "2|A\u2229B| / (|A| + |B|) per case, averaged", "t-interval of the mean"
                ),
                MetricMethod("Kappa", "Cohen's kappa between two raters", "asymptotic SE"),
            ),
            ci_level=0.95,
            thresholds=(ThresholdSpec("malignancy score", 0.5, "score \u2265 0.5 is positive"),),
            strata=(
                StratumSpec("scanner", tuple(scanner_labels.values()), MIN_N),
                StratumSpec("sex", ("F", "M"), MIN_N),
                StratumSpec("age band", AGE_BANDS, MIN_N),
            ),
            multiplicity=(
                "Two primary endpoints, tested with Holm's procedure at family-wise "
                "\u03b1 = 0.05. Per-stratum results are secondary and not adjusted."
            ),
            primary_analysis="Primary analysis on all included cases with successful inference.",
        ),
        results=ResultsSection(
            metrics=metrics,
            heterogeneity=(
                HeterogeneityTest("Dice (mean)", "scanner", 38.2, 2, 5e-9, "Cochran's Q"),
                HeterogeneityTest("AUC", "scanner", 1.31, 2, 0.52, "Cochran's Q"),
            ),
            roc=roc,
            distribution_metric="Dice",
            distributions=distributions,
            agreement=(
                AgreementRow(
                    "Reader 1 vs reader 2",
                    "inter-reader",
                    "Cohen's kappa",
                    ReportEstimate(0.781, 0.702, 0.860, 0.95, "asymptotic", len(included)),
                ),
                AgreementRow(
                    "Reader 1 vs reader 3",
                    "inter-reader",
                    "Cohen's kappa",
                    ReportEstimate(0.744, 0.659, 0.829, 0.95, "asymptotic", len(included)),
                ),
                AgreementRow(
                    "Readers 1\u20133",
                    "inter-reader",
                    "Fleiss' kappa",
                    ReportEstimate(0.752, 0.690, 0.814, 0.95, "asymptotic", len(included)),
                ),
                AgreementRow(
                    "Model vs consensus",
                    "model-reader",
                    "Cohen's kappa",
                    ReportEstimate(0.705, 0.618, 0.792, 0.95, "asymptotic", len(included)),
                ),
            ),
        ),
        acceptance=acceptance,
        deviations=(
            Deviation(
                "DEV-01",
                "Three cases on scanner C re-exported after a PACS "
                "transfer error; files re-hashed and the manifest re-locked.",
                "None on results; lock date moved by one day.",
                "Tom Berger",
            ),
        ),
        adjudication=AdjudicationSummary(
            n_discrepancies=len(decisions),
            n_adjudicated=len(decisions),
            decisions=decisions,
            outcome_counts=outcome_counts,
            post_adjudication=(
                MetricResult("auc", "AUC (post-adjudication)", post_auc, (), AUC_THRESHOLD),
            ),
            note="Adjudicators saw the images and both labels in random order, blinded to source.",
        ),
        limitations=(
            "Scanner C (Philips iCT 256) shows markedly lower Dice; the model should not be "
            "used on that scanner until retrained.",
            f"Age band 18-39 has fewer than {MIN_N} cases; no estimate is reported for it.",
            "Single-site retrospective data; prevalence differs from screening populations.",
        ),
        required_signatures=required,
        signatures=tuple(signatures),
        audit_trail=tuple(audit),
        audit_chain_head=audit[-1].entry_hash,
        per_case=tuple(rows),
    )


@pytest.fixture(scope="session")
def content() -> ReportContent:
    return make_report_content()


@pytest.fixture(scope="session")
def built(tmp_path_factory, content):
    out = tmp_path_factory.mktemp("report") / "report.pdf"
    return build_report(content, out)


@pytest.fixture(scope="session")
def identity(tmp_path_factory):
    return ensure_signing_identity(tmp_path_factory.mktemp("keys") / "keys")


@pytest.fixture(scope="session")
def pdftotext_text(built) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    out = subprocess.run(
        ["pdftotext", "-layout", str(built.path), "-"], check=True, capture_output=True, text=True
    )
    return out.stdout


def pdf_text(path: Path) -> str:
    out = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    )
    return out.stdout
