"""Malformed protocols, models and report PDFs: clear errors, no half-written records."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import generate_corpus as corpus
import harness
import pytest

from workbench import errors
from workbench.services import models, protocols, reports, runs

# ------------------------------------------------------------------------ protocols

PROTOCOL_CASES = corpus.protocol_cases(harness.protocol_text())


@pytest.mark.parametrize("case", PROTOCOL_CASES, ids=lambda c: c.name)
def test_bad_protocol_is_refused_and_nothing_stored(
    case: object, wb_copy: harness.Pipeline
) -> None:
    path = wb_copy.workdir.parent / "bad.yaml"
    path.write_bytes(case.text.encode("utf-8", "surrogateescape"))  # type: ignore[attr-defined]
    wb = harness.open_wb(wb_copy.workdir)
    try:
        qa = harness.login(wb, "qa1")
        before = harness.table_counts(wb_copy.workdir)
        with pytest.raises(errors.ProtocolError) as caught:
            protocols.add_protocol_version(wb, qa, path, reason="corpus")
        assert re.search(case.expect, str(caught.value), re.IGNORECASE), str(caught.value)  # type: ignore[attr-defined]
        assert harness.table_counts(wb_copy.workdir) == before
    finally:
        wb.close()


def _alias_bomb() -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "alias_bomb": (_alias_bomb(), r"expands to more than 100,000 values"),
    "deep_nesting": ("id: x\nnested: " + "[" * 50_000 + "]" * 50_000 + "\n", r"deeper than 32"),
    "oversized": ("id: x\n" + "# padding line\n" * 2_400_000, r"at most 1,048,576"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(HOSTILE_YAML))
def test_hostile_protocol_yaml_is_refused_quickly_with_a_clear_error(
    kind: str, tmp_path: Path
) -> None:
    """A 1.4 KB alias bomb, 50,000-deep nesting and a 33 MB file: each a ProtocolError."""
    import resource

    from workbench.protocols import load_protocol

    text, expect = HOSTILE_YAML[kind]
    if kind == "alias_bomb":
        assert len(text.encode()) < 1500
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for source in (path, text.encode("utf-8")):  # an unbounded expansion hits the timeout
        with pytest.raises(errors.ProtocolError, match=expect):
            load_protocol(source)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 300, f"memory grew by {grown_mib:.0f} MiB"


def test_cli_protocol_add_prints_one_clear_line(wb_copy: harness.Pipeline) -> None:
    bad = wb_copy.workdir.parent / "bad.yaml"
    bad.write_text(PROTOCOL_CASES[0].text)
    done = harness.cli(wb_copy.workdir, "protocol", "add", str(bad), user="qa1")
    assert done.returncode == 1
    assert done.stderr.startswith("error: ProtocolError:") and "line" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_refuses_protocol_for_a_missing_test_set(wb_copy: harness.Pipeline) -> None:
    path = wb_copy.workdir.parent / "other.yaml"
    path.write_text(harness.protocol_text("no-such-set", protocol_id="other-set"))
    wb = harness.open_wb(wb_copy.workdir)
    try:
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        ref = protocols.add_protocol_version(wb, qa1, path).ref
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        runs_before = harness.table_counts(wb_copy.workdir)["runs"]
        with pytest.raises(errors.WorkflowError, match="written for test set 'no-such-set'"):
            runs.validate(wb, qa1, protocol=ref, model=wb_copy.model_ref, test_set=harness.TEST_SET)
        with pytest.raises(errors.NotFoundError, match="no-such-set"):
            runs.validate(wb, qa1, protocol=ref, model=wb_copy.model_ref, test_set="no-such-set")
        assert harness.table_counts(wb_copy.workdir)["runs"] == runs_before
    finally:
        wb.close()


# --------------------------------------------------------------------------- models


def _register_and_validate(
    pipe: harness.Pipeline, model_file: Path, *, name: str, **spec_update: object
) -> tuple[object, object]:
    """Register ``model_file`` and run it; return (summary or error, counts after)."""
    wb = harness.open_wb(pipe.workdir)
    try:
        qa = harness.login(wb, "qa1")
        ref = models.register_model(
            wb, qa, model_file, harness.cls_spec(name=name, **spec_update)
        ).ref
        try:
            outcome: object = runs.validate(
                wb,
                qa,
                protocol=pipe.protocol_ref,
                model=ref,
                test_set=harness.TEST_SET,
                device="cpu",
            )
        except errors.WorkbenchError as error:
            outcome = error
        return outcome, runs.list_runs(wb, qa)[0]
    finally:
        wb.close()


def _register_refused(pipe: harness.Pipeline, model_file: Path, *, name: str, match: str) -> None:
    """Registration refuses ``model_file`` with ``match``: nothing stored, the refusal audited."""
    wb = harness.open_wb(pipe.workdir)
    try:
        qa = harness.login(wb, "qa1")
        with pytest.raises(errors.ModelError, match=match):
            models.register_model(wb, qa, model_file, harness.cls_spec(name=name))
        assert all(m.name != name for m in models.list_models(wb))
    finally:
        wb.close()
    assert "model.refused" in harness.audit_actions(pipe.workdir)
    assert not (pipe.workdir / "models" / name).exists()
    harness.verify_chain(pipe.workdir)


def test_random_bytes_model_is_refused_at_registration(wb_copy: harness.Pipeline) -> None:
    path = wb_copy.workdir.parent / "random.ts"
    path.write_bytes(corpus.random_model_bytes())
    _register_refused(wb_copy, path, name="random", match="Expected a TorchScript archive")


@pytest.mark.parametrize("kind", ["pickle", "torch_save"])
def test_pickled_model_never_runs_its_code(kind: str, wb_copy: harness.Pipeline) -> None:
    marker = wb_copy.workdir.parent / corpus.MARKER_NAME
    payload = (corpus.pickle_payload if kind == "pickle" else corpus.torch_save_payload)(marker)
    path = wb_copy.workdir.parent / "model.pt"
    path.write_bytes(payload)
    _register_refused(wb_copy, path, name=f"exploit-{kind}", match="Expected a TorchScript archive")
    assert not marker.exists(), "the pickle's code ran"
    # The bundle path (torch.load of model.pt) refuses it too.
    from workbench.inference.loading import load_model

    bundle = wb_copy.workdir.parent / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "metadata.json").write_text("{}")
    (bundle / "configs" / "inference.json").write_text(
        '{"network_def": {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 3}}'
    )
    (bundle / "models" / "model.pt").write_bytes(payload)
    spec = harness.cls_spec().model_copy(update={"format": "monai_bundle"})
    with pytest.raises(errors.ModelError, match="Refused|state dict"):
        load_model(bundle, spec, "cpu")
    assert not marker.exists(), "the pickle's code ran"


_SCRIPTED = {
    "wrong_output_shape": """
        def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
            return {"malignancy": torch.ones(3, 7)}
    """,
    "nan_output": """
        def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
            return {"malignancy": torch.full((image.shape[0], 1), float("nan"))}
    """,
    "wrong_input_shape": """
        def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
            flat = image.reshape(image.shape[0], -1)
            w = torch.ones(17, 1)
            return {"malignancy": torch.sigmoid(flat @ w)}
    """,
    "exhausts_memory": """
        def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
            big = torch.empty(1 << 22, 1 << 22)
            return {"malignancy": big[:1, :1]}
    """,
    "hangs": """
        def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
            x = torch.zeros(1)
            for i in range(200000000):
                x = x + 1.0
            return {"malignancy": torch.sigmoid(x).reshape(1, 1)}
    """,
}


def scripted_model(kind: str, out: Path) -> Path:
    """Write a TorchScript model whose forward is ``_SCRIPTED[kind]``."""
    code = "import torch\nfrom typing import Dict\nclass M(torch.nn.Module):\n" + textwrap.indent(
        textwrap.dedent(_SCRIPTED[kind]), "    "
    )
    namespace: dict[str, object] = {}
    module_file = out.with_suffix(".py")
    module_file.write_text(code)
    exec(compile(code, str(module_file), "exec"), namespace)  # noqa: S102 - our own fixture
    import torch

    torch.jit.script(namespace["M"]()).save(str(out))  # type: ignore[operator]
    return out


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("wrong_output_shape", r"Wrong score output"),
        ("wrong_input_shape", r"failed on a dummy input"),
        ("exhausts_memory", r"failed on a dummy input"),
    ],
)
def test_models_that_cannot_run_are_refused_at_registration(
    kind: str, match: str, wb_copy: harness.Pipeline
) -> None:
    path = scripted_model(kind, wb_copy.workdir.parent / f"{kind}.ts")
    _register_refused(wb_copy, path, name=kind.replace("_", "-"), match=match)


def test_nan_output_fails_each_case_with_its_reason(wb_copy: harness.Pipeline) -> None:
    path = scripted_model("nan_output", wb_copy.workdir.parent / "nan_output.ts")
    outcome, run = _register_and_validate(wb_copy, path, name="nan-output")
    assert not isinstance(outcome, Exception), outcome
    assert run.status == "completed" and run.verdict == "fail"
    assert run.n_failed == run.n_cases == 3 and run.n_completed == 0
    wb = harness.open_wb(wb_copy.workdir)
    try:
        from sqlalchemy import select

        from workbench.records.models import CaseResult, Run

        with wb.transaction(readonly=True) as session:
            run_id = session.scalars(select(Run.id).where(Run.run_uid == run.run_uid)).one()
            reasons = session.scalars(
                select(CaseResult.reason).where(CaseResult.run_id == run_id)
            ).all()
    finally:
        wb.close()
    assert len(reasons) == 3 and all(re.search(r"NaN or infinite", r or "", re.S) for r in reasons)
    harness.verify_chain(wb_copy.workdir)


HANG_SCRIPT = """
import sys, time
sys.path.insert(0, {malformed!r}); sys.path.insert(0, {here!r})
import harness
from test_malformed_protocols_models_reports import scripted_model
from workbench.inference.loading import load_model
from workbench.inference.runner import run_inference, cases_from_test_set
spec = harness.cls_spec(name="hangs")
model = load_model(scripted_model("hangs", __import__("pathlib").Path({out!r})), spec, "cpu")
cases = cases_from_test_set({root!r})[:1]
started = time.perf_counter()
summary = run_inference(cases, model, spec, out_dir={out!r} + "-run", case_timeout_s=2.0)
print("STATUS", summary.outputs[0].status, summary.outputs[0].reason, time.perf_counter() - started)
"""


@pytest.mark.slow
def test_hanging_model_is_stopped_by_the_case_time_limit(
    built_pipeline: harness.Pipeline, tmp_path: Path
) -> None:
    script = HANG_SCRIPT.format(
        malformed=str(Path(corpus.__file__).parent),
        here=str(Path(__file__).parent),
        out=str(tmp_path / "hangs.ts"),
        root=str(built_pipeline.test_set_root),
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            # Generous outer limit: the assertion is on the recorded reason, never on speed;
            # a loaded machine may take long to start torch in the subprocess.
            timeout=300,
            env=harness.env(),
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a hanging model was not stopped by case_timeout_s=2 within 300 s")
    assert "STATUS failed time limit exceeded" in done.stdout, done.stdout + done.stderr


# -------------------------------------------------------------------------- reports


@pytest.mark.parametrize("kind", ["elsewhere", "truncated", "not_a_pdf", "empty"])
def test_foreign_or_broken_pdf_fails_verification_cleanly(
    kind: str, wb_copy: harness.Pipeline
) -> None:
    pdf = wb_copy.workdir.parent / f"{kind}.pdf"
    corpus.pdf_from_elsewhere(pdf)
    data = pdf.read_bytes()
    if kind == "truncated":
        pdf.write_bytes(data[: len(data) // 2])
    elif kind == "not_a_pdf":
        pdf.write_bytes(b"GIF89a not a pdf at all" * 10)
    elif kind == "empty":
        pdf.write_bytes(b"")
    wb = harness.open_wb(wb_copy.workdir)
    try:
        before = harness.table_counts(wb_copy.workdir)
        check = reports.verify_report_file(wb, pdf)
        assert not check.valid and check.reason
        after = harness.table_counts(wb_copy.workdir)
        assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {"audit_log": 1}
    finally:
        wb.close()
    if kind not in ("elsewhere", "truncated"):
        return  # the CLI costs a cold start; two kinds are enough for it
    done = harness.cli(wb_copy.workdir, "report", "verify", str(pdf))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED verification" in done.stderr and "Traceback" not in done.stderr


def test_sealed_report_verifies_and_a_copy_with_one_byte_changed_does_not(
    wb_copy: harness.Pipeline,
) -> None:
    wb = harness.open_wb(wb_copy.workdir)
    try:
        sealed = reports.seal_report(wb, harness.login(wb, "qa1"), wb_copy.report_uid)
        assert reports.verify_report_file(wb, sealed.sealed_path).valid
        data = bytearray(Path(sealed.sealed_path).read_bytes())
        data[len(data) // 3] ^= 0x01
        tampered = wb_copy.workdir.parent / "tampered.pdf"
        tampered.write_bytes(bytes(data))
        assert not reports.verify_report_file(wb, tampered).valid
    finally:
        wb.close()
    _ = os
