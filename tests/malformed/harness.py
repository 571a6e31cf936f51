"""Shared harness of the reliability and security suites.

Builds a small but complete workbench through the services (accounts, a tiny
locked synthetic test set, a tiny TorchScript model, an approved protocol
without adjudication) and runs the ``workbench`` CLI in subprocesses.
Imported by ``tests/reliability`` and ``tests/security`` (their conftest puts
this folder on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROTOCOL_DIR = REPO / "validation_protocols"
PYTHON = sys.executable

#: username -> (full name, role, password)
ACCOUNTS: dict[str, tuple[str, str, str]] = {
    "admin": ("Ada Admin", "admin", "Harbor-Lamp-2026!"),
    "qa1": ("Quinn Avery", "qa", "Quill-Maple-2026!"),
    "qa2": ("Pat Morgan", "qa", "Stone-Birch-2026!"),
    "rev1": ("Robin Reyes", "reviewer", "Cedar-Drift-2026!"),
    "aud": ("Alex Auditor", "auditor", "Ledger-Mint-2026!"),
}
ROLE_USER = {"qa": "qa1", "reviewer": "rev1", "auditor": "aud", "admin": "admin"}
TEST_SET = "rel-set"
CLS_PROTOCOL = "rel-classification"


def env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess: fast argon2, quiet great-expectations."""
    out = dict(os.environ)
    out.update(
        WORKBENCH_ARGON2_PROFILE="fast",
        GX_ANALYTICS_ENABLED="false",
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1",
    )
    out.pop("WORKBENCH_DB_URL", None)
    out.pop("WORKBENCH_HOME", None)
    out.update(extra)
    return out


def cli(
    workdir: Path, *args: str, user: str | None = None, timeout: float = 300, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``workbench ARGS --workdir WORKDIR`` (as ``user`` when given)."""
    extra: dict[str, str] = {}
    if user is not None:
        extra = {"WORKBENCH_USER": user, "WORKBENCH_PASSWORD": ACCOUNTS[user][2]}
    extra.update(kw.pop("env", {}))
    return subprocess.run(
        [PYTHON, "-c", "from workbench.cli import main; main()", *args, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(**extra),
        stdin=subprocess.DEVNULL,
        **kw,
    )


def tiny_model(out: Path, *, body: str | None = None) -> Path:
    """A TorchScript model: thresholds the windowed image; score from the bright fraction."""
    import torch
    from torch import nn

    class Threshold(nn.Module):
        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            logit = (image - 0.62) * 30.0
            seg = torch.cat([-logit, logit], dim=1)
            fraction = torch.sigmoid(logit).mean(dim=[1, 2, 3, 4])
            score = torch.clamp(fraction * 40.0, 0.0, 1.0).unsqueeze(1)
            return {"seg": seg, "malignancy": score}

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Threshold()).save(str(out))
    return out


def cls_spec(name: str = "tiny-cls", version: str = "1.0", **update: Any) -> Any:
    """A classification ModelSpec for :func:`tiny_model` (small ROI: fast on CPU)."""
    from workbench.inference.demo_models import demo_input_spec
    from workbench.inference.registry import ModelSpec

    base = demo_input_spec().model_copy(
        update={"segmentation_output": None, "roi_size": (32, 32, 16), **update}
    )
    return ModelSpec(
        name=name,
        version=version,
        task="classification",
        format="torchscript",
        input=base,
        intended_use="Reliability-test fixture; not a clinical model.",
    )


def protocol_text(
    test_set: str = TEST_SET, *, protocol_id: str = CLS_PROTOCOL, version: int = 1, **changes: Any
) -> str:
    """The shipped classification protocol adapted to a tiny test set (no adjudication)."""
    data = yaml.safe_load((PROTOCOL_DIR / "malignancy-classification-v1.yaml").read_text())
    data["id"] = protocol_id
    data["version"] = version
    data["test_set"] = {"name": test_set}
    data["discrepancy_rules"] = []
    data["adjudication"]["required_before_approval"] = False
    data.update(changes)
    return yaml.safe_dump(data, sort_keys=False)


@dataclass
class Pipeline:
    """State of a built workbench (paths and refs)."""

    workdir: Path
    test_set_root: Path
    model_path: Path
    model_ref: str = ""
    protocol_ref: str = ""
    run_uid: str = ""
    report_uid: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def open_wb(workdir: Path) -> Any:
    from workbench.services.context import Workbench

    return Workbench.open(workdir)


def login(wb: Any, user: str) -> Any:
    from workbench.services import accounts

    return accounts.login(wb, user, ACCOUNTS[user][2])


def make_accounts(wb: Any) -> None:
    from workbench.services import accounts

    name, _, pw = ACCOUNTS["admin"]
    accounts.bootstrap_admin(wb, username="admin", full_name=name, password=pw)
    admin = accounts.login(wb, "admin", pw)
    for username, (full_name, role, password) in ACCOUNTS.items():
        if username != "admin":
            accounts.create_user(
                wb,
                admin,
                username=username,
                full_name=full_name,
                role=role,
                password=password,
                must_change_password=False,
            )


def synth(root: Path, *, n_cases: int = 3, seed: int = 7, **kw: Any) -> Path:
    from workbench.dicom.synth import generate_test_set

    generate_test_set(
        root, n_cases=n_cases, seed=seed, matrix=128, slices=(40, 40), workers=1, **kw
    )
    return root


def build(
    workdir: Path,
    *,
    source_set: Path | None = None,
    stage: str = "report",
    n_cases: int = 3,
) -> Pipeline:
    """Build a workbench up to ``stage``: accounts, imported, locked, registered,
    protocol, run, report (draft), signed.
    """
    from workbench.services import models, protocols, reports, runs, testsets

    stages = ["accounts", "imported", "locked", "registered", "protocol", "run", "report", "signed"]
    upto = stages.index(stage)
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir.parent / (workdir.name + "-set")
    if source_set is not None:
        shutil.copytree(source_set, root)
    else:
        synth(root, n_cases=n_cases)
    pipe = Pipeline(workdir=workdir, test_set_root=root, model_path=workdir.parent / "tiny.ts")
    wb = open_wb(workdir)
    try:
        make_accounts(wb)
        qa1, qa2 = login(wb, "qa1"), login(wb, "qa2")
        if upto >= 1:
            testsets.import_test_set(wb, qa1, root, name=TEST_SET, workers=1)
        if upto >= 2:
            testsets.check_quality(wb, qa1, TEST_SET)
            testsets.lock_test_set(wb, qa1, TEST_SET, password=ACCOUNTS["qa1"][2])
        if upto >= 3:
            tiny_model(pipe.model_path)
            pipe.model_ref = models.register_model(wb, qa1, pipe.model_path, cls_spec()).ref
        if upto >= 4:
            text = workdir.parent / "protocol.yaml"
            text.write_text(protocol_text())
            ref = protocols.add_protocol_version(wb, qa1, text).ref
            protocols.approve_protocol(wb, qa2, ref, password=ACCOUNTS["qa2"][2])
            pipe.protocol_ref = ref
        if upto >= 5:
            pipe.run_uid = runs.validate(
                wb,
                qa1,
                protocol=pipe.protocol_ref,
                model=pipe.model_ref,
                test_set=TEST_SET,
                device="cpu",
            ).run_uid
        if upto >= 6:
            pipe.report_uid = reports.build_report(wb, qa1, pipe.run_uid).report_uid
        if upto >= 7:
            rev1 = login(wb, "rev1")
            reports.sign_report(
                wb, qa1, pipe.report_uid, meaning="authored", password=ACCOUNTS["qa1"][2]
            )
            reports.sign_report(
                wb, rev1, pipe.report_uid, meaning="reviewed", password=ACCOUNTS["rev1"][2]
            )
            reports.sign_report(
                wb, qa2, pipe.report_uid, meaning="approved", password=ACCOUNTS["qa2"][2]
            )
    finally:
        wb.close()
    return pipe


def table_counts(workdir: Path) -> dict[str, int]:
    """Row count of every table of the workdir's SQLite database."""
    import sqlite3

    con = sqlite3.connect(workdir / "workbench.db")
    try:
        names = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {n: con.execute(f'select count(*) from "{n}"').fetchone()[0] for n in names}
    finally:
        con.close()


def audit_actions(workdir: Path) -> list[str]:
    import sqlite3

    con = sqlite3.connect(workdir / "workbench.db")
    try:
        table = next(
            r[0]
            for r in con.execute("select name from sqlite_master where type='table'")
            if r[0] == "audit_log"
        )
        return [r[0] for r in con.execute(f'select action from "{table}" order by 1')]
    finally:
        con.close()


def verify_chain(workdir: Path) -> Any:
    from workbench.services.audit_trail import verify_audit_chain

    wb = open_wb(workdir)
    try:
        return verify_audit_chain(wb)
    finally:
        wb.close()


def copy_workdir(pipe: Pipeline, target: Path) -> Pipeline:
    """Copy a built workdir (database, keys, models, reports) to ``target``.

    Paths stored in the database (model storage, test-set root) keep pointing at
    the original, read-only files, which the copies never change.
    """
    import sqlite3

    target.mkdir(parents=True, exist_ok=True)
    for item in pipe.workdir.iterdir():
        if item.name.startswith("workbench.db"):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, symlinks=True)
        else:
            shutil.copy2(item, target / item.name)
    source = sqlite3.connect(pipe.workdir / "workbench.db")
    dest = sqlite3.connect(target / "workbench.db")
    try:
        source.backup(dest)
    finally:
        source.close()
        dest.close()
    return Pipeline(
        workdir=target,
        test_set_root=pipe.test_set_root,
        model_path=pipe.model_path,
        model_ref=pipe.model_ref,
        protocol_ref=pipe.protocol_ref,
        run_uid=pipe.run_uid,
        report_uid=pipe.report_uid,
        extra=dict(pipe.extra),
    )
