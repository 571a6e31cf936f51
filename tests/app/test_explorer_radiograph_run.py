"""A run on real radiographs in the case explorer: map, export and selection for the report.

The run is the one of ``tests/services/test_bring_your_own_data.py`` (eight real CR
images of pydicom-data, a 2D TorchScript classifier), built here through the same
helpers. The explorer opens its first case in the single 2D view; the occlusion map
is computed in the page, and the view is added to the report's selected cases and
printed in the report built through the service.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from workbench.app import _mpr, _session
from workbench.inference.registry import ModelSpec
from workbench.records.models import AuditEntry
from workbench.services import accounts, models, protocols, reports, runs
from workbench.services.context import Workbench

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))
import harness  # noqa: E402
from test_bring_your_own_data import (  # noqa: E402
    _import_check_lock,
    _protocol_text,
    _Radiograph,
    _spec,
    radiographs,
)

__all__ = ["radiographs"]  # the fixture, imported for this module's tests

APP_MAIN = Path(__file__).resolve().parents[2] / "workbench" / "app" / "main.py"
PAGE = "pages/case_explorer.py"


@pytest.fixture(scope="module")
def cr_run(radiographs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A workdir with a completed classification run on the eight radiographs."""
    workdir = tmp_path_factory.mktemp("cr-explorer")
    files = tmp_path_factory.mktemp("cr-explorer-files")
    wb = harness.open_wb(workdir)
    try:
        harness.make_accounts(wb)
        qa1, qa2 = harness.login(wb, "qa1"), harness.login(wb, "qa2")
        text = files / "protocol.yaml"
        text.write_text(_protocol_text("cr-set"))
        ref = _import_check_lock(wb, qa1, radiographs, "cr-set", text)
        protocols.approve_protocol(wb, qa2, ref, password=harness.ACCOUNTS["qa2"][2])
        scripted = files / "cr.ts"
        torch.jit.script(_Radiograph()).save(str(scripted))
        spec = ModelSpec.model_validate(_spec("cr-torchscript", "torchscript", "abnormal"))
        model = models.register_model(wb, qa1, scripted, spec)
        summary = runs.validate(
            wb, qa1, protocol=ref, model=model.ref, test_set="cr-set", device="cpu"
        )
        assert summary.status == "completed", summary.error
        return workdir, summary.run_uid
    finally:
        wb.close()


@pytest.fixture
def cr_wb(cr_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Workbench]:
    """The run's workbench, also the app's (``WORKBENCH_HOME``) for the test."""
    monkeypatch.setenv("WORKBENCH_HOME", str(cr_run[0]))
    monkeypatch.delenv("WORKBENCH_DB_URL", raising=False)
    handle = Workbench.open(cr_run[0])
    yield handle
    handle.close()


def test_a_radiograph_view_with_its_map_goes_into_the_report(
    cr_run: tuple[Path, str], cr_wb: Workbench
) -> None:
    workdir, run = cr_run
    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    _actor, token = accounts.open_session(cr_wb, "qa1", harness.ACCOUNTS["qa1"][2])
    at.session_state[_session.TOKEN_KEY] = token
    at.session_state[_session.USERNAME_KEY] = "qa1"
    at.run()
    at.query_params["run"] = run
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    case_id = str(at.selectbox(key="explorer-case").value)
    assert at.select_slider(key=f"explorer-{run}-{case_id}-zoom"), "the single 2D view"
    go = next(b for b in at.button if str(b.key).endswith("-go"))
    go.click().run()
    assert not at.exception, at.exception
    assert not at.error, [m.value for m in at.error]
    checks = [str(m.value) for m in (*at.success, *at.warning)]
    assert any(c.startswith("Deletion check") for c in checks), checks
    warnings = [str(m.value) for m in at.warning]
    # The map fits the image: no "The explanation map has shape ..." warning.
    assert all(w.startswith("Deletion check") for w in warnings), warnings
    assert "Aid to review only" in " ".join(str(i.value) for i in at.info)
    note = "Radiograph scored lowest; occlusion map shown"
    at.text_input(key="select-note").input(note)
    next(b for b in at.button if b.label.startswith("Add this view to the report")).click().run()
    assert not at.exception, at.exception
    assert "Added to the report's selected cases." in [s.value for s in at.success]

    with cr_wb.transaction(readonly=True) as session:
        entry = session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "explorer.case_select",
                AuditEntry.record_id == f"{run}/{case_id}",
            )
        ).one()
    new = dict(entry.new_value or {})
    png = (workdir / str(new["png_path"])).read_bytes()
    sha = hashlib.sha256(png).hexdigest()
    assert new["png_sha256"] == sha and entry.actor == "qa1"
    text = _mpr.png_text(png)
    assert text["Description"].startswith("Occlusion sensitivity")
    assert "aid to review" in text["Disclaimer"] and f"case {case_id}" in text["Title"]

    qa1 = harness.login(cr_wb, "qa1")
    pdf = reports.build_report(cr_wb, qa1, run).pdf_path or ""
    pdf_text = subprocess.run(
        ["pdftotext", "-layout", pdf, "-"], capture_output=True, text=True, check=True
    ).stdout
    start = pdf_text.rindex("Selected cases")
    section = pdf_text[start : pdf_text.index("Appendix A", start)]  # up to the audit appendix
    assert f"Case {case_id}" in section and note in section
    assert sha in "".join(section.split())
