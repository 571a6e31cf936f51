"""Runs: start a validation run with live progress; run history."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.services import runs, views

me = _session.require_page("runs")
wb = _session.workbench()
st.title("Validation runs")

if _session.can("run.start"):
    approved = [p.ref for p in views.list_protocols(wb, me) if p.status == "approved"]
    locked = [t.name for t in views.list_test_sets(wb, me) if t.status == "locked"]
    registered = [m.ref for m in views.list_models(wb, me)]
    with st.expander("Start a run", icon=":material/play_arrow:", expanded=False):
        if not (approved and locked and registered):
            st.info("A run needs an approved protocol, a locked test set and a registered model.")
        else:
            with st.form("start-run"):
                protocol_ref = st.selectbox("Protocol (approved)", approved)
                model_ref = st.selectbox("Model", registered)
                test_set = st.selectbox("Test set (locked)", locked)
                device = st.selectbox("Device", ["automatic", "cpu", "cuda"])
                submitted = st.form_submit_button("Start validation", type="primary")
            if submitted:
                step_box = st.empty()
                bar = st.progress(0.0, text="Starting ...")

                def progress(done: int, total: int, message: str) -> None:
                    bar.progress(
                        min(done / max(total, 1), 1.0), text=f"Inference {done}/{total} {message}"
                    )

                def on_step(name: str) -> None:
                    step_box.info(f"Step: {name}")

                with _session.guard():
                    summary = runs.validate(
                        wb,
                        me,
                        protocol=protocol_ref,
                        model=model_ref,
                        test_set=test_set,
                        device=None if device == "automatic" else device,
                        progress=progress,
                        on_step=on_step,
                    )
                    bar.progress(1.0, text="Done")
                    verdict = summary.verdict.label if summary.verdict else "none"
                    step_box.success(
                        f"Run {summary.run_uid} {summary.status}: verdict {verdict}, "
                        f"{summary.n_completed} completed, {summary.n_failed} failed, "
                        f"{summary.n_excluded} excluded, {summary.n_discrepancies} discrepancies."
                    )

history = views.list_runs(wb, me)
st.subheader("History")
if not history:
    st.info("No runs yet.")
    st.stop()
rows = []
for listing in history:
    r = listing.summary
    rows.append(
        {
            "run": r.run_uid,
            "protocol": r.protocol,
            "model": r.model,
            "test set": r.test_set,
            "status": r.status,
            "verdict": "hidden until adjudicated"
            if listing.hidden
            else (r.verdict.label if r.verdict else ""),
            "why not PASS": "" if listing.hidden else r.verdict_reason,
            "cases": r.n_cases,
            "completed": r.n_completed,
            "failed": r.n_failed,
            "excluded": r.n_excluded,
            "discrepancies": r.n_discrepancies,
            "results SHA-256": r.results_sha256 or "",
            "error": r.error or "",
        }
    )
frame = pd.DataFrame(rows)
picked = st.dataframe(
    frame,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    key="run-table",
)
selected = picked.selection.rows if picked is not None else []
run_uid = frame.iloc[selected[0]]["run"] if selected else None
if run_uid and st.button(f"Open the results of {run_uid}", key="open-results", type="primary"):
    st.switch_page("pages/results.py", query_params={"run": run_uid})
