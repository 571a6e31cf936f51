"""Detection end to end: protocol, run, matches, endpoints, adjudication, report.

One small synthetic test set (6 phantoms, one lesion each) and a tiny TorchScript
segmentation model that thresholds the windowed CT; its probability map becomes marks
by the protocol's candidate rule. Two protocols: the shipped ``lesion-detection``
(reference lesions = components of the readers' SEG, wAFROC1 primary) and one whose
reference is a lesion table in patient coordinates listing lesions for four cases only,
so that two cases are lesion-free and the wAFROC figure of merit is estimable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

_MALFORMED = str(Path(__file__).resolve().parents[1] / "malformed")
if _MALFORMED not in sys.path:
    sys.path.insert(0, _MALFORMED)

import harness  # noqa: E402

from tests.app._seed import _tiny_model  # noqa: E402
from workbench import errors  # noqa: E402
from workbench.protocols import RunResults  # noqa: E402
from workbench.protocols.detection import MATCH_COLUMNS  # noqa: E402
from workbench.records.models import AuditEntry  # noqa: E402
from workbench.services import adjudication, models, protocols, reports, runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "validation_protocols" / "lesion-detection-v1.yaml"
PW = {user: spec[2] for user, spec in harness.ACCOUNTS.items()}


@dataclass
class Detection:
    workdir: Path
    test_set_root: Path
    model_ref: str
    seg_run: str
    table_run: str
    table_lesions: pd.DataFrame
    second_run: str = ""


def _lesion_table(root: Path, case_ids: list[str]) -> pd.DataFrame:
    """Reader 1's lesion of each listed case as a 3D box in patient coordinates (mm)."""
    from workbench.dicom.lesions import lesions_from_mask
    from workbench.dicom.seg import read_seg_mask
    from workbench.dicom.volume import load_series

    labels = pd.read_csv(root / "reference" / "labels.csv", dtype={"case_id": str})
    rows = []
    for case_id in case_ids:
        volume = load_series(sorted((root / "cases" / case_id / "CT").glob("*.dcm")))
        mask = read_seg_mask(root / "cases" / case_id / "SEG" / "reader1.dcm", volume)
        lesion = lesions_from_mask(mask, volume.affine).iloc[0]
        series = labels.loc[labels["case_id"] == case_id, "series_instance_uid"].iloc[0]
        rows.append(
            {
                "series_instance_uid": series,
                "nodule": f"N-{case_id}",
                **{k: round(float(lesion[k]), 3) for k in ("x_min", "y_min", "z_min")},
                **{k: round(float(lesion[k]), 3) for k in ("x_max", "y_max", "z_max")},
                "importance": 2.0,
                "size_mm": round(float(lesion["diameter"]), 1),
            }
        )
    return pd.DataFrame(rows)


def _second_model(out: Path) -> Path:
    """Another thresholding model (a different level), so a second candidate to compare."""
    import torch
    from torch import nn

    class Threshold(nn.Module):
        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            logit = (image - 0.66) * 30.0
            return {"seg": torch.cat([-logit, logit], dim=1)}

    torch.jit.script(Threshold()).save(str(out))
    return out


def _protocol(protocol_id: str, **changes: object) -> str:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    data["id"] = protocol_id
    data["test_set"] = {"name": harness.TEST_SET}
    for endpoint in data["endpoints"]:
        endpoint["ci"]["n_boot"] = 200
    data["strata"][0]["min_n"] = 2
    # the fixture model marks bright anatomy too: keep the larger components only
    data["candidates"]["min_voxels"] = 150
    data.update(changes)
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def detection(tmp_path_factory: pytest.TempPathFactory) -> Detection:
    from workbench.inference.demo_models import demo_input_spec
    from workbench.inference.registry import ModelSpec
    from workbench.services import testsets

    base = tmp_path_factory.mktemp("detection")
    root = harness.synth(base / "set", n_cases=6)
    lesions = _lesion_table(root, ["case0001", "case0002", "case0003", "case0004"])
    lesions.to_csv(root / "reference" / "lesions.csv", index=False)
    workdir = base / "wb"
    wb = harness.open_wb(workdir)
    harness.make_accounts(wb)
    qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
    testsets.import_test_set(wb, qa1, root, name=harness.TEST_SET, workers=1)
    testsets.check_quality(wb, qa1, harness.TEST_SET)
    testsets.lock_test_set(wb, qa1, harness.TEST_SET, password=PW["qa1"])
    spec = ModelSpec(
        name="tiny-seg",
        version="1.0",
        task="segmentation",
        format="torchscript",
        input=demo_input_spec().model_copy(update={"score_output": None}),
        intended_use="Test fixture: thresholds the windowed CT; not a clinical model.",
    )
    model_ref = models.register_model(wb, qa1, _tiny_model(base / "tiny.ts"), spec).ref
    texts = {
        "seg": _protocol("lesion-detection"),
        "table": _protocol(
            "lesion-detection-table",
            reference_standard={
                "detection": {
                    "source": "table",
                    "table": "reference/lesions.csv",
                    "columns": {"lesion_id": "nodule"},
                    "weight_column": "importance",
                    "attributes": ["size_mm"],
                }
            },
            matching={"rule": "iou", "threshold": 0.2, "dimensions": 3, "score_floor": 0.05},
            endpoints=[
                {
                    "id": "wafroc",
                    "metric": "wafroc",
                    "ci": {"method": "bootstrap", "n_boot": 200},
                    "criterion": {"statistic": "ci_low", "operator": ">=", "threshold": 0.5},
                },
                {
                    "id": "hrauc",
                    "metric": "hrauc",
                    "primary": False,
                    "ci": {"method": "jackknife"},
                    "criterion": {"statistic": "value", "operator": ">=", "threshold": 0.5},
                },
            ],
            strata=[
                {"factor": "manufacturer", "min_n": 2},
                {
                    "factor": "size_band",
                    "unit": "lesion",
                    "column": "size_mm",
                    "edges": [0, 20, 1000],
                    "min_n": 1,
                    "assess": False,
                },
            ],
            subgroup_acceptance=None,
        ),
    }
    run_uids, refs = {}, {}
    for key, text in texts.items():
        path = base / f"{key}.yaml"
        path.write_text(text, encoding="utf-8")
        refs[key] = protocols.add_protocol_version(wb, qa1, path).ref
        protocols.approve_protocol(wb, qa2, refs[key], password=PW["qa2"])
        run_uids[key] = runs.validate(
            wb, qa1, protocol=refs[key], model=model_ref, test_set=harness.TEST_SET, device="cpu"
        ).run_uid
    second = models.register_model(
        wb,
        qa1,
        _second_model(base / "second.ts"),
        spec.model_copy(update={"name": "tiny-seg-b"}),
    ).ref
    second_run = runs.validate(
        wb, qa1, protocol=refs["seg"], model=second, test_set=harness.TEST_SET, device="cpu"
    ).run_uid
    wb.close()
    return Detection(
        workdir, root, model_ref, run_uids["seg"], run_uids["table"], lesions, second_run
    )


def test_detection_run_evaluates_froc_endpoints(detection: Detection) -> None:
    wb = harness.open_wb(detection.workdir)
    qa1 = harness.login(wb, "qa1")
    summary = runs.get_run(wb, qa1, detection.seg_run)
    assert summary.status == "completed" and summary.n_cases == 6
    results = summary.results
    assert results is not None and results.evaluation.task == "detection"
    by_id = {e.endpoint_id: e for e in results.endpoints}
    assert set(by_id) == {"wafroc1", "sensitivity-1fppi", "lesion-sensitivity"}
    assert by_id["wafroc1"].estimate is not None and 0.0 <= by_id["wafroc1"].estimate.value <= 1
    assert "1 false positive(s) per image" in by_id["sensitivity-1fppi"].criterion_text
    strata = {(s.factor, s.stratum): s for s in by_id["lesion-sensitivity"].strata}
    assert any(f == "lesion_size" for f, _ in strata)
    assert sum(s.n for (f, _), s in strata.items() if f == "lesion_size") == 6  # lesions
    froc = results.froc
    assert froc is not None and froc.n_lesions == 6 and froc.wafroc_fom == "wafroc1"
    assert len(froc.nlf) == len(froc.llf) == len(froc.lower) == len(froc.upper)
    assert froc.fpf[0] == 0.0 and froc.fpf[-1] == froc.wllf[-1] == 1.0
    # The stored form round-trips and its hash is the recorded one.
    stored = RunResults.from_dict(results.to_dict())
    assert stored == results
    assert len(summary.results_sha256 or "") == 64
    wb.close()


def test_table_reference_with_weights_attributes_and_normal_cases(detection: Detection) -> None:
    wb = harness.open_wb(detection.workdir)
    qa1 = harness.login(wb, "qa1")
    results, frame = runs.run_results(wb, qa1, detection.table_run)
    by_id = {e.endpoint_id: e for e in results.endpoints}
    assert by_id["wafroc"].estimate is not None  # lesion-free cases exist
    assert by_id["hrauc"].estimate is not None
    assert by_id["hrauc"].estimate.method.startswith("jackknife")
    assert results.froc is not None and results.froc.wafroc_fom == "wafroc"
    assert results.froc.n_diseased == 4 and results.froc.n_cases == 6
    records = runs.detection_records(wb, qa1, detection.table_run)
    assert sorted(records.lesions["lesion_id"]) == sorted(detection.table_lesions["nodule"])
    # the weight column as the table gives it (the statistics normalise it within a case)
    assert set(records.lesions["lesion_weight"]) == {2.0}
    assert "size_mm" in records.lesions.columns
    assert records.matching.startswith("3D IoU of mark and lesion boxes >= 0.2")
    sizes = {s.stratum for s in by_id["wafroc"].strata if s.factor == "size_band"}
    assert sizes <= {"0 to <20", "20 to <1000"} and sizes
    assert int(frame["n_lesions"].sum()) == 4
    wb.close()


def test_every_match_is_stored_hashed_and_visible(detection: Detection, tmp_path: Path) -> None:
    wb = harness.open_wb(detection.workdir)
    qa1 = harness.login(wb, "qa1")
    records = runs.detection_records(wb, qa1, detection.seg_run)
    matches = records.matches
    assert list(matches.columns[: len(MATCH_COLUMNS)]) == list(MATCH_COLUMNS)
    assert set(matches["status"]) <= {"LL", "NL", "below_floor", "missed"}
    results, frame = runs.run_results(wb, qa1, detection.seg_run)
    # every lesion is either localised or missed, once
    lesions = records.lesions
    assert len(lesions) == int(frame["n_lesions"].sum()) == 6
    assert (lesions["status"] == "matched").sum() == int(frame["n_ll"].sum())
    assert ((matches["status"] == "LL").sum(), (matches["status"] == "missed").sum()) == (
        int(frame["n_ll"].sum()),
        int(frame["n_missed"].sum()),
    )
    matched = lesions[lesions["status"] == "matched"]
    assert (matched["distance_mm"] <= 10.0).all() and matched["rating"].notna().all()
    one = runs.detection_records(wb, qa1, detection.seg_run, case_id="case0001")
    assert set(one.matches["case_id"]) == {"case0001"}
    # the hashes are in each case's audit entry
    with wb.transaction(readonly=True) as session:
        entries = [
            e
            for e in session.query(AuditEntry).filter(AuditEntry.action == "case.record")
            if str(e.record_id).startswith(detection.seg_run)
        ]
    assert len(entries) == 6
    assert all(e.new_value.get("matches_sha256") for e in entries)
    wb.close()
    # A changed record file is refused, naming the file.
    copy = harness.copy_workdir(
        harness.Pipeline(detection.workdir, detection.test_set_root, Path()), tmp_path / "wb"
    )
    wb = harness.open_wb(copy.workdir)
    target = next((copy.workdir / "runs" / detection.seg_run).rglob("matches.json"))
    target.write_text(target.read_text().replace("LL", "NL"), encoding="utf-8")
    with pytest.raises(errors.IntegrityError, match="matches.json"):
        runs.detection_records(wb, harness.login(wb, "qa1"), detection.seg_run)
    wb.close()


def test_discrepancies_are_queued_with_blinded_regions(detection: Detection) -> None:
    wb = harness.open_wb(detection.workdir)
    rev1 = harness.login(wb, "rev1")
    records = runs.detection_records(wb, harness.login(wb, "qa1"), detection.seg_run)
    items = adjudication.queue(wb, rev1, detection.seg_run)
    assert items, "the tiny model's confident false marks queue cases"
    assert {i.rule for i in items} <= {adjudication.BLINDED_DETECTION_RULE}
    for item in items[:3]:
        case = adjudication.open_case(wb, rev1, item.discrepancy_id)
        assert case.task == "detection" and case.unblinded is None
        assert set(case.regions) == {"A", "B"}
        assert "missed" not in str(case.details) and "mark" not in str(case.details)
        n_lesions = int((records.lesions["case_id"] == case.case_id).sum())
        sizes = sorted(len(v) for v in case.regions.values())
        kept = records.matches[
            (records.matches["case_id"] == case.case_id)
            & records.matches["status"].isin(["LL", "NL"])
        ]
        assert sizes == sorted([n_lesions, len(kept)])
        for region in [r for regions in case.regions.values() for r in regions]:
            assert set(region) == {
                "kind",
                *("x", "y", "z"),
                *("x_min", "y_min", "z_min", "x_max", "y_max", "z_max"),
            }
            assert region["kind"] in ("box", "point")
            if region["kind"] == "box":
                assert region["x_min"] <= region["x"] <= region["x_max"]
        assert "score" not in json.dumps(case.regions)
    wb.close()


def test_report_has_the_detection_section(detection: Detection) -> None:
    wb = harness.open_wb(detection.workdir)
    qa1 = harness.login(wb, "qa1")
    report = reports.build_report(wb, qa1, detection.table_run)
    pdf = Path(report.pdf_path or "")
    assert pdf.is_file()
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext not installed")
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Detection: lesion localisation" in text
    assert "Per-lesion results" in text and "FROC curve" in text and "wAFROC curve" in text
    for nodule in detection.table_lesions["nodule"]:
        assert nodule in text
    results, _ = runs.run_results(wb, qa1, detection.table_run)
    wafroc = next(e for e in results.endpoints if e.endpoint_id == "wafroc")
    assert wafroc.estimate is not None and f"{wafroc.estimate.value:.3f}" in text
    assert "3D IoU of mark and lesion boxes >= 0.2" in text
    wb.close()


def test_export_adds_the_marks_as_tid1500_sr(
    detection: Detection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.dicom.lesions import lesions_from_sr
    from workbench.dicomweb.connection import DicomWebServer
    from workbench.dicomweb.store import StoreOutcome
    from workbench.services import pacs, testsets

    sent: list[object] = []

    def fake_store(server: object, datasets: list[object], **_: object) -> StoreOutcome:
        sent.extend(datasets)
        return StoreOutcome(
            stored=tuple(str(d.SOPInstanceUID) for d in datasets), already_present=()
        )  # type: ignore[attr-defined]

    monkeypatch.setattr(pacs, "store_instances", fake_store)
    copy = harness.copy_workdir(
        harness.Pipeline(detection.workdir, detection.test_set_root, Path()), tmp_path / "wb"
    )
    wb = harness.open_wb(copy.workdir)
    qa1 = harness.login(wb, "qa1")
    export = pacs.export_run(
        wb, qa1, detection.seg_run, DicomWebServer("http://pacs.invalid/dicom-web")
    )
    detection_srs = [o for o in export.objects if o.kind == "detection_sr"]
    _, frame = runs.run_results(wb, qa1, detection.seg_run)
    assert len(detection_srs) == int((frame["n_marks"] > 0).sum()) > 0
    one = detection_srs[0]
    index = testsets.get_test_set(wb, harness.TEST_SET)
    from workbench.dicom.index import index_folder

    images = index_folder(Path(index.root_path), workers=1).files
    images = images[images["modality"] == "CT"]
    read = lesions_from_sr([one.path], images)
    marks = json.loads(
        (copy.workdir / "runs" / detection.seg_run / "seg" / "cases" / str(one.case_id))
        .joinpath("marks.json")
        .read_text()
    )
    assert len(read) == len(marks)
    assert sorted(read["certainty_of_finding"].round(6)) == sorted(
        round(m["score"], 6) for m in marks
    )
    wb.close()


def test_a_later_detection_run_derives_its_marks_from_kept_probability_maps(
    detection: Detection,
) -> None:
    """The table run reuses the first run's kept maps: same marks, bit for bit, audited."""
    wb = harness.open_wb(detection.workdir)
    qa1 = harness.login(wb, "qa1")
    _, first = runs.run_results(wb, qa1, detection.seg_run)
    _, second = runs.run_results(wb, qa1, detection.table_run)
    assert first["probability_sha256"].notna().all()  # kept by the fresh inference
    merged = first.merge(second, on="case_id", suffixes=("_fresh", "_reused"))
    assert len(merged) == 6
    # the same candidates rule on the same maps gives the same marks.json
    assert (merged["marks_sha256_fresh"] == merged["marks_sha256_reused"]).all()
    assert (merged["probability_sha256_fresh"] == merged["probability_sha256_reused"]).all()
    with wb.transaction(readonly=True) as session:
        reuse = (
            session.query(AuditEntry)
            .filter(AuditEntry.action == "run.reuse_inference")
            .filter(AuditEntry.record_id == detection.table_run)
            .one()
        )
        assert reuse.new_value["source_run"] == detection.seg_run
        fresh = (
            session.query(AuditEntry)
            .filter(AuditEntry.action == "run.reuse_inference")
            .filter(AuditEntry.record_id == detection.seg_run)
            .count()
        )
    assert fresh == 0
    wb.close()


def test_a_second_candidate_reuses_the_reference_lesions_and_is_compared(
    detection: Detection,
) -> None:
    wb = harness.open_wb(detection.workdir)
    qa1 = harness.login(wb, "qa1")
    _, first = runs.run_results(wb, qa1, detection.seg_run)
    _, second = runs.run_results(wb, qa1, detection.second_run)
    # the reference does not depend on the model: read back, the same bytes
    assert list(first["lesions_sha256"]) == list(second["lesions_sha256"])
    assert list(first["marks_sha256"]) != list(second["marks_sha256"])
    report = reports.build_report(wb, qa1, detection.second_run)
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", "-layout", report.pdf_path or "", "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # both candidates' curves, this run's first, the other labelled as comparison
        assert "tiny-seg-b 1.0" in text and "tiny-seg 1.0" in text
        assert "for comparison only" in text
    wb.close()


def _peak_detector(out: Path) -> Path:
    """A detection model: up to three peaks of lesion-like attenuation, as points.

    With the window (40, 220) HU, the phantoms' lesions (about 130 HU) sit near 0.5;
    liver, aorta and bone do not. The smoothed band response is searched for its maximum
    three times, each time clearing a 15-voxel cube around the last pick.
    """
    import torch
    from torch import nn

    class Peaks(nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            band = torch.relu(1.0 - torch.abs(image - 0.5) / 0.12)
            smooth = torch.nn.functional.avg_pool3d(band, 5, stride=1, padding=2)[0, 0]
            rows: list[torch.Tensor] = []
            for _ in range(3):
                flat = int(torch.argmax(smooth))
                i = flat // (smooth.shape[1] * smooth.shape[2])
                j = (flat // smooth.shape[2]) % smooth.shape[1]
                k = flat % smooth.shape[2]
                score = smooth[i, j, k]
                rows.append(torch.stack([score, score * 0 + i, score * 0 + j, score * 0 + k]))
                smooth[max(i - 7, 0) : i + 8, max(j - 7, 0) : j + 8, max(k - 7, 0) : k + 8] = 0.0
            return torch.stack(rows)

    torch.jit.script(Peaks()).save(str(out))
    return out


def test_a_model_that_emits_marks_is_validated_like_a_segmentation_model(
    detection: Detection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.inference.demo_models import demo_input_spec
    from workbench.inference.registry import ModelSpec

    wb = harness.open_wb(detection.workdir)
    qa1 = harness.login(wb, "qa1")
    spec = ModelSpec(
        name="tiny-peaks",
        version="1.0",
        task="detection",
        format="torchscript",
        input=demo_input_spec().model_copy(
            update={"hu_window": (40.0, 220.0), "roi_size": (96, 96, 48), "score_output": None}
        ),
        intended_use="Test fixture: peaks of lesion-like attenuation; not a clinical model.",
    )
    model = models.register_model(wb, qa1, _peak_detector(tmp_path / "peaks.ts"), spec).ref
    protocol = runs.get_run(wb, qa1, detection.seg_run).protocol
    run_uid = runs.validate(
        wb, qa1, protocol=protocol, model=model, test_set=harness.TEST_SET, device="cpu"
    ).run_uid
    summary = runs.get_run(wb, qa1, run_uid)
    assert summary.status == "completed" and summary.n_cases == 6
    results, cases = runs.run_results(wb, qa1, run_uid)
    assert results.froc is not None and results.froc.n_lesions == 6
    assert {e.endpoint_id for e in results.endpoints} == {
        "wafroc1",
        "sensitivity-1fppi",
        "lesion-sensitivity",
    }
    # Three points per case, no SEG; the marks are where the lesions are: the protocol's
    # rule (centres within 10 mm) finds a localisation in most cases (a mark misplaced by
    # the coordinate mapping would localise none).
    assert list(cases["n_marks"]) == [3] * 6
    outputs = wb.workdir.runs_dir / run_uid
    assert not list(outputs.rglob("*.dcm")) and len(list(outputs.rglob("marks.json"))) == 6
    assert int(cases["n_ll"].sum()) >= 4, cases[["case_id", "n_ll", "n_nl"]]
    # The reference lesions are read back from the first run of this protocol version.
    _, first = runs.run_results(wb, qa1, detection.seg_run)
    assert list(first["lesions_sha256"]) == list(cases["lesions_sha256"])
    wb.close()
    _exported_points_round_trip(detection, run_uid, tmp_path, monkeypatch)


def _exported_points_round_trip(
    detection: Detection, run_uid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exported to a PACS, the run has one TID 1500 SR of points per case and no SEG."""
    from workbench.dicom.index import index_folder
    from workbench.dicom.lesions import lesions_from_sr
    from workbench.dicomweb.connection import DicomWebServer
    from workbench.dicomweb.store import StoreOutcome
    from workbench.services import pacs

    def fake_store(server: object, datasets: list[object], **_: object) -> StoreOutcome:
        return StoreOutcome(
            stored=tuple(str(d.SOPInstanceUID) for d in datasets),  # type: ignore[attr-defined]
            already_present=(),
        )

    monkeypatch.setattr(pacs, "store_instances", fake_store)
    copy = harness.copy_workdir(
        harness.Pipeline(detection.workdir, detection.test_set_root, Path()), tmp_path / "wb"
    )
    wb = harness.open_wb(copy.workdir)
    try:
        qa1 = harness.login(wb, "qa1")
        export = pacs.export_run(wb, qa1, run_uid, DicomWebServer("http://pacs.invalid/dicom-web"))
        assert sorted({o.kind for o in export.objects}) == ["detection_sr"]
        assert len(export.objects) == 6
        images = index_folder(detection.test_set_root, workers=1).files
        images = images[images["modality"] == "CT"]
        for one in export.objects:
            # a point carries no size; reading it as a lesion needs one
            read = lesions_from_sr([one.path], images, default_diameter_mm=10.0)
            marks = json.loads(
                (copy.workdir / "runs" / run_uid / "seg" / "cases" / str(one.case_id))
                .joinpath("marks.json")
                .read_text()
            )
            got = np.array(sorted(read[["x", "y", "z"]].itertuples(index=False, name=None)))
            want = np.array(sorted((m["x"], m["y"], m["z"]) for m in marks))
            assert np.allclose(got, want, atol=0.01)  # SCOORD3D holds 32-bit floats
    finally:
        wb.close()
