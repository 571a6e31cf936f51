"""Seeded workbench state for the app tests, built through the services.

:func:`seed_workdir` creates accounts, a small synthetic test set (imported,
quality-checked, locked), a tiny TorchScript candidate model, both shipped
protocols (approved), one segmentation and one classification run, and a draft
report signed by its author. Run as a script it seeds a folder for a manual
``workbench app`` session::

    python tests/app/_seed.py /tmp/seeded
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

#: username -> (full name, role, password). Passwords must not contain the username.
ACCOUNTS: dict[str, tuple[str, str, str]] = {
    "sysadmin": ("Ada Admin", "admin", "Root-demo-2026!"),
    "qa.author": ("Quinn Avery (QA)", "qa", "Qa-author-2026!"),
    "qa.approver": ("Pat Morgan (QA lead)", "qa", "Qa-approver-2026!"),
    "dr.reviewer": ("Dr. Robin Reyes", "reviewer", "Reviewer-demo-2026!"),
    "dr.second": ("Dr. Sam Rivera", "reviewer", "Reviewer-two-2026!"),
    "inspector": ("Alex Auditor", "auditor", "Auditor-demo-2026!"),
}

#: One user per role, for tests that log in "as every role".
ROLE_USERS = {
    "qa": "qa.author",
    "reviewer": "dr.reviewer",
    "auditor": "inspector",
    "admin": "sysadmin",
}

TEST_SET = "demo-phantoms"
PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "validation_protocols"


@dataclass
class Seeded:
    """What :func:`seed_workdir` made."""

    workdir: Path
    test_set_root: Path
    model_ref: str = ""
    run_uids: dict[str, str] = field(default_factory=dict)
    report_uid: str = ""


def _tiny_model(out: Path) -> Path:
    """A TorchScript model thresholding the windowed image; score from foreground size."""
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


def seed_workdir(workdir: Path, *, n_cases: int = 6, with_runs: bool = True) -> Seeded:
    """Build the seeded state in ``workdir`` (a fresh folder)."""
    from workbench.dicom.synth import generate_test_set
    from workbench.inference.demo_models import demo_input_spec
    from workbench.inference.registry import ModelSpec
    from workbench.services import accounts, models, protocols, reports, runs, testsets
    from workbench.services.context import Workbench

    wb = Workbench.open(workdir)
    try:
        name, _role, password = ACCOUNTS["sysadmin"]
        accounts.bootstrap_admin(wb, username="sysadmin", full_name=name, password=password)
        admin = accounts.login(wb, "sysadmin", password)
        for username, (full_name, role, pw) in ACCOUNTS.items():
            if username != "sysadmin":
                accounts.create_user(
                    wb,
                    admin,
                    username=username,
                    full_name=full_name,
                    role=role,
                    password=pw,
                    must_change_password=False,
                )
        qa = accounts.login(wb, "qa.author", ACCOUNTS["qa.author"][2])
        approver = accounts.login(wb, "qa.approver", ACCOUNTS["qa.approver"][2])
        root = workdir / "testsets" / TEST_SET
        generate_test_set(root, n_cases=n_cases, seed=1, matrix=128, slices=(40, 40), workers=1)
        testsets.import_test_set(wb, qa, root, name=TEST_SET, workers=1)
        testsets.check_quality(wb, qa, TEST_SET)
        testsets.lock_test_set(wb, qa, TEST_SET, password=ACCOUNTS["qa.author"][2])
        seeded = Seeded(workdir=workdir, test_set_root=root)
        model_path = _tiny_model(workdir / "fixture-models" / "tiny.ts")
        base = demo_input_spec()
        specs = {
            "lesion-segmentation": ModelSpec(
                name="tiny-seg",
                version="1.0",
                task="segmentation",
                format="torchscript",
                input=base.model_copy(update={"score_output": None}),
                intended_use="Test fixture: thresholds the windowed CT; not a clinical model.",
            ),
            "malignancy-classification": ModelSpec(
                name="tiny-cls",
                version="1.0",
                task="classification",
                format="torchscript",
                input=base.model_copy(update={"segmentation_output": None}),
                intended_use="Test fixture: scores the bright fraction; not a clinical model.",
            ),
        }
        model_refs = {}
        for protocol_id, spec in specs.items():
            info = models.register_model(
                wb,
                qa,
                model_path,
                spec,
                card={"training_data": "none (threshold)", "limitations": "fixture"},
            )
            model_refs[protocol_id] = info.ref
        seeded.model_ref = model_refs["lesion-segmentation"]
        refs = []
        for path in sorted(PROTOCOL_DIR.glob("*.yaml")):
            p = protocols.add_protocol_version(wb, qa, path)
            protocols.approve_protocol(wb, approver, p.ref, password=ACCOUNTS["qa.approver"][2])
            refs.append(p.ref)
        # Version 2 of the segmentation protocol asks for two readers per case (consensus).
        v1 = (PROTOCOL_DIR / "lesion-segmentation-v1.yaml").read_text(encoding="utf-8")
        v2_text = v1.replace("version: 1\n", "version: 2\n", 1).replace(
            "readers_per_case: 1", "readers_per_case: 2"
        )
        v2 = protocols.add_protocol_version(
            wb, qa, v2_text.encode("utf-8"), reason="two readers per case"
        )
        if with_runs:
            for ref in refs:
                if ref.split("@")[0] not in model_refs:
                    continue  # a shipped protocol without a fixture model (lesion-detection)
                summary = runs.validate(
                    wb,
                    qa,
                    protocol=ref,
                    model=model_refs[ref.split("@")[0]],
                    test_set=TEST_SET,
                    device="cpu",
                )
                seeded.run_uids[ref.split("@")[0]] = summary.run_uid
            protocols.approve_protocol(wb, approver, v2.ref, password=ACCOUNTS["qa.approver"][2])
            summary = runs.validate(
                wb,
                qa,
                protocol=v2.ref,
                model=model_refs["lesion-segmentation"],
                test_set=TEST_SET,
                device="cpu",
            )
            seeded.run_uids["lesion-segmentation@2"] = summary.run_uid
            seg_run = seeded.run_uids["lesion-segmentation"]
            report = reports.build_report(wb, qa, seg_run)
            reports.sign_report(
                wb, qa, report.report_uid, meaning="authored", password=ACCOUNTS["qa.author"][2]
            )
            seeded.report_uid = report.report_uid
        return seeded
    finally:
        wb.close()


if __name__ == "__main__":
    made = seed_workdir(Path(sys.argv[1]))
    print(made)
