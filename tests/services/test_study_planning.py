"""Reader-study planning through the service and the CLI: pilot study or components file.

The planning numbers themselves are checked against RJafroc's published outputs in
``tests/stats/test_mrmc_power.py``; here the Van Dyke components printed by RJafroc
(``SsPowerGivenJK`` EXAMPLE 4A, github.com/dpc10ster/RJafroc ``docs/reference/
SsPowerGivenJK.html`` at commit daf04634) go through a components file, and a pilot reader
study read and signed by two reviewer accounts goes through the workbench's own analysis.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from service_team import PASSWORDS, Team
from typer.testing import CliRunner

from workbench import errors
from workbench.cli import app
from workbench.records.models import AuditEntry
from workbench.services import accounts, studies
from workbench.services.study_planning import load_components_file, plan_study
from workbench.stats import mrmc_sample_size, variance_components_from_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
import harness  # noqa: E402

#: RJafroc SsPowerGivenJK.html EXAMPLE 4A (daf04634): dataset02's OR components.
VAN_DYKE_YAML = """\
# OR variance components of the Van Dyke study (RJafroc dataset02), Wilcoxon AUC
n_cases: 114
n_readers: 5
var_tr: 0.00020040252
var: 0.00080228827
cov1: 0.00034661371
cov2: 0.00034407483
cov3: 0.00023902837
source: Van Dyke et al. 1993 (RJafroc dataset02)
"""
REV2 = ("rev2", "Sam Ortega", "Willow-Frost-2026!")


def _plans(wb: Any) -> list[AuditEntry]:
    with wb.transaction(readonly=True) as session:
        entries = session.query(AuditEntry).filter(AuditEntry.action == "study.plan").all()
        session.expunge_all()
        return entries


@pytest.fixture
def van_dyke_file(tmp_path: Path) -> Path:
    path = tmp_path / "van-dyke-components.yaml"
    path.write_text(VAN_DYKE_YAML)
    return path


def test_plan_from_a_components_file_is_audited(team: Team, van_dyke_file: Path) -> None:
    plan = plan_study(
        team.wb, team["qa1"], components=van_dyke_file, effect_size=0.05, readers=[6, 10]
    )
    # RJafroc: SsSampleSizeKGivenJ(..., effectSize = 0.05, J = 6) -> KRRRC 170, power
    # 0.80161864 (docs/reference/SsSampleSizeKGivenJ.html, daf04634).
    six = plan.table.rows[0]
    assert (six.n_readers, six.n_cases) == (6, 170)
    assert six.power == pytest.approx(0.80161864, abs=5e-9)
    assert plan.table.rows[1].n_cases is not None and plan.table.rows[1].n_cases < 170
    components, digest = load_components_file(van_dyke_file)
    assert plan.pilot_kind == "file" and plan.pilot_sha256 == digest
    assert plan.table.components == components

    (entry,) = _plans(team.wb)
    assert entry.actor == "qa1" and entry.record_type == "variance_components"
    assert entry.record_id == digest
    recorded = entry.new_value
    assert recorded["effect_size"] == 0.05 and recorded["target_power"] == 0.8
    assert recorded["components"]["var_tr"] == 0.00020040252
    assert [r["n_cases"] for r in recorded["rows"]] == [r.n_cases for r in plan.table.rows]

    # Auditors may plan (as they may analyse); reviewers may not, and the refusal is audited.
    plan_study(team.wb, team["aud"], components=van_dyke_file, effect_size=0.05, readers=[8])
    with pytest.raises(errors.PermissionDeniedError):
        plan_study(team.wb, team["rev1"], components=van_dyke_file, effect_size=0.05)
    assert [e.actor for e in _plans(team.wb)] == ["qa1", "aud"]


def test_non_inferiority_plan_and_bad_requests(team: Team, van_dyke_file: Path) -> None:
    plan = plan_study(
        team.wb,
        team["qa1"],
        components=van_dyke_file,
        effect_size=0.0,
        hypothesis="non_inferiority",
        margin=0.05,
        readers=[10],
    )
    expected = mrmc_sample_size(
        plan.table.components,
        effect_size=0.0,
        hypothesis="non_inferiority",
        margin=0.05,
        readers=[10],
    )
    assert plan.table.rows == expected.rows and plan.table.rows[0].n_cases is not None

    with pytest.raises(errors.WorkflowError, match="not both"):
        plan_study(team.wb, team["qa1"], pilot="x@1", components=van_dyke_file, effect_size=0.05)
    with pytest.raises(errors.WorkflowError, match="not neither"):
        plan_study(team.wb, team["qa1"], effect_size=0.05)
    broken = van_dyke_file.with_name("broken.yaml")
    broken.write_text(VAN_DYKE_YAML.replace("cov3:", "cov_3:"))
    with pytest.raises(errors.StatisticsError, match=r"broken\.yaml: unknown key\(s\) \['cov_3'\]"):
        plan_study(team.wb, team["qa1"], components=broken, effect_size=0.05)
    broken.write_text("n_cases: [114\n")
    with pytest.raises(errors.StatisticsError, match=r"broken\.yaml: not valid YAML or JSON"):
        plan_study(team.wb, team["qa1"], components=broken, effect_size=0.05)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_study(team.wb, team["qa1"], components=broken.with_name("no.yaml"), effect_size=0.05)
    with pytest.raises(errors.StatisticsError, match="Did you mean 'RRRC'"):
        plan_study(
            team.wb, team["qa1"], components=van_dyke_file, effect_size=0.05, analysis="RRCR"
        )
    assert len(_plans(team.wb)) == 1  # refused requests leave no plan behind


def _invoke(workdir: Path, user: str, password: str, *args: str) -> Any:
    env = {"WORKBENCH_USER": user, "WORKBENCH_PASSWORD": password}
    return CliRunner().invoke(
        app, ["study", "plan", *args, "--workdir", str(workdir)], env=env, catch_exceptions=False
    )


def test_cli_prints_the_table(team: Team, van_dyke_file: Path) -> None:
    workdir = Path(team.wb.workdir.root)
    result = _invoke(
        workdir,
        "qa1",
        PASSWORDS["qa1"],
        "--components",
        str(van_dyke_file),
        "--effect-size",
        "0.05",
        "--power",
        "0.8",
        "--readers",
        "3,6",
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Cases for 80% power: AUC difference 0.05, alpha 0.05")
    assert "114 cases, 5 readers; Van Dyke et al. 1993 (RJafroc dataset02)" in lines[1]
    assert "6\t170\t0.802\t" in result.output
    three = next(line for line in lines if line.startswith("3\t"))
    assert three.startswith("3\t-\t-\t") and "add readers" in three
    bad = _invoke(
        workdir, "qa1", PASSWORDS["qa1"], "--components", str(van_dyke_file),
        "--effect-size", "0.05", "--readers", "4,six",
    )  # fmt: skip
    assert bad.exit_code != 0 and "numbers of readers separated by commas" in bad.output
    denied = _invoke(
        workdir, "rev1", PASSWORDS["rev1"], "--components", str(van_dyke_file),
        "--effect-size", "0.05",
    )  # fmt: skip
    assert denied.exit_code == 1 and "PermissionDeniedError" in denied.output


# --- A pilot read and signed in the workbench -----------------------------------------------
def _pilot_design() -> str:
    return f"""\
kind: reader_study
id: pilot-study
version: 1
title: Pilot of two reading conditions
test_set: {{name: {harness.TEST_SET}}}
truth: {{labels_column: consensus_malignant}}
arms:
  - {{id: standard}}
  - {{id: enhanced}}
readers: [rev1, {REV2[0]}]
rating_scale: five_point
washout_days: 0
seed: 11
"""


@pytest.fixture(scope="module")
def pilot_workbench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pipe = harness.build(tmp_path_factory.mktemp("pilot") / "wb", stage="locked", n_cases=8)
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
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        ref = studies.add_study(wb, qa1, _pilot_design().encode()).ref
        studies.approve_study(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        labels = pd.read_csv(pipe.test_set_root / "reference" / "labels.csv", dtype=str)
        truth = dict(zip(labels["case_id"], labels["consensus_malignant"].astype(int), strict=True))
        design = studies.study_design(wb, qa1, ref)
        for seed, reader in enumerate(design.readers):
            password = REV2[2] if reader == REV2[0] else harness.ACCOUNTS[reader][2]
            actor = accounts.login(wb, reader, password)
            rng = np.random.default_rng(seed)
            for arm in studies.arm_order(design, reader):
                studies.open_reading(wb, actor, ref, arm)
                while (case := studies.next_case(wb, actor, ref, arm)) is not None:
                    signal = truth[case.case_id] * (1.6 if arm == "enhanced" else 0.9)
                    value = int(np.clip(round(2.5 + signal + rng.normal(0, 0.8)), 1, 5))
                    studies.rate_case(wb, actor, ref, arm, case.case_id, value)
                studies.sign_arm(wb, actor, ref, arm, password=password)
    finally:
        wb.close()
    return pipe.workdir, ref


def test_plan_from_a_pilot_study(pilot_workbench: tuple[Path, str]) -> None:
    workdir, ref = pilot_workbench
    wb = harness.open_wb(workdir)
    try:
        qa1 = harness.login(wb, "qa1")
        plan = plan_study(wb, qa1, pilot=ref, effect_size=0.1, readers=[4, 8])
        analysis = studies.analyze_study(wb, qa1, ref)
        expected = variance_components_from_result(analysis.rrrc)
        vc = plan.table.components
        assert (plan.pilot, plan.pilot_kind, plan.pilot_sha256) == (ref, "study", None)
        assert (vc.var_tr, vc.var, vc.cov1, vc.cov2, vc.cov3) == (
            expected.var_tr,
            expected.var,
            expected.cov1,
            expected.cov2,
            expected.cov3,
        )
        assert (vc.n_cases, vc.n_readers) == (8, 2)
        assert vc.observed_effect == analysis.difference.value  # enhanced minus standard
        assert "pilot-study@1" in vc.source
        again = mrmc_sample_size(vc, effect_size=0.1, readers=[4, 8])
        assert plan.table.rows == again.rows
        (entry,) = _plans(wb)
        assert (entry.record_type, entry.record_id) == ("reader_study", ref)
        assert json.dumps(entry.new_value)  # plain values only
        with pytest.raises(errors.NotFoundError):
            plan_study(wb, qa1, pilot="no-such-study@1", effect_size=0.1)
    finally:
        wb.close()
    result = _invoke(
        workdir, "aud", harness.ACCOUNTS["aud"][2], "--pilot", ref, "--effect-size", "0.1",
        "--readers", "4,8",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"Pilot: {ref} (8 cases, 2 readers, observed difference" in result.output
