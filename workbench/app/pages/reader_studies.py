"""Reader studies: blinded reading sessions for readers; progress and analysis for QA and auditors.

A reader sees only their own sessions: the images of the next case in their own
order (and, in an aided arm, the model's score and mask), a rating, pause and
resume, and the e-signature that closes an arm. Nothing of the reference
standard or of other readers is shown. QA staff and auditors see every reader's
progress and, once every arm is signed, the Obuchowski-Rockette analysis.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _session, _viewer
from workbench.errors import WorkbenchError
from workbench.services import studies
from workbench.services.accounts import allowed

me = _session.require_page("reader_studies")
wb = _session.workbench()
st.title("Reader studies")

try:
    available = studies.list_studies(wb, me)
except WorkbenchError as error:
    st.warning(_session.esc(error))
    st.stop()
if not available:
    st.info("No reader study is open for you.")
    st.stop()
refs = [s.ref for s in available]
ref = st.selectbox(
    "Study",
    refs,
    format_func=lambda r: f"{r} - {next(s.title for s in available if s.ref == r)}",
    key="study-ref",
)
design = studies.study_design(wb, me, ref)
st.caption(design.criterion_text)

if allowed(me.role, "study.view"):
    everyone = studies.reading_progress(wb, me, ref)
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "reader": p.reader,
                    "arm": p.arm,
                    "status": p.status,
                    "rated": f"{p.n_rated} / {p.n_cases}",
                }
                for p in everyone
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    if st.button("Analyse", key="study-analyse", type="primary"):
        try:
            result = studies.analyze_study(wb, me, ref)
        except WorkbenchError as error:
            st.warning(_session.esc(error))
        else:
            d = result.difference
            (st.success if result.verdict.value == "pass" else st.error)(
                f"Verdict **{result.verdict.label}**: AUC difference "
                f"({result.arms[1]} minus {result.arms[0]}) {d.value:.3f} "
                f"[{d.ci_low:.3f}, {d.ci_high:.3f}], p = {result.p_value:.4f}"
                + (f" ({_session.esc(result.reason)})" if result.reason else "")
            )
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "reader": r.reader,
                            "arm": r.arm,
                            "AUC": r.auc.value,
                            "CI low": r.auc.ci_low,
                            "CI high": r.auc.ci_high,
                        }
                        for r in result.per_reader
                    ]
                ),
                hide_index=True,
            )
            st.caption(
                "Random readers and random cases (Obuchowski-Rockette, Hillis df); reading "
                "time per case (median, s): "
                + ", ".join(f"{k} {v:.1f}" for k, v in result.reading_seconds.items())
            )
    st.stop()

# A reader: their own arms, in their own order.
arms = studies.arm_order(design, me.username)
arm = st.radio("Arm", arms, horizontal=True, key="study-arm")
try:
    progress = studies.open_reading(wb, me, ref, arm)
except WorkbenchError as error:
    st.info(_session.esc(error))
    st.stop()
st.progress(
    progress.n_rated / max(progress.n_cases, 1), text=f"{progress.n_rated} of {progress.n_cases}"
)
if progress.status == "signed":
    st.success(f"You signed the reading of arm '{_session.esc(arm)}'.")
    st.stop()

case = studies.next_case(wb, me, ref, arm)
if case is None:
    st.success("Every case of this arm is rated. Sign the reading to close it.")
    password = _session.signature_form(
        "study-sign", "read", f"your ratings of arm '{arm}' of reader study {ref}"
    )
    if password:
        with _session.guard():
            studies.sign_arm(wb, me, ref, arm, password=password)
            st.rerun()
    st.stop()

# The reading time runs from when the case was first shown, across reruns of the page.
shown_at = st.session_state.setdefault(f"shown-{ref}-{arm}-{case.case_id}", case.shown_at)
st.markdown(f"Case **{case.position} of {case.n_cases}**")
if case.model_score is not None:
    st.info(f"Model score: **{case.model_score:.3f}** (aid: the model's output, not the truth)")
overlays = {"Model": [case.model_mask]} if case.model_mask else {}
_viewer.show_viewer(f"study-{case.case_id}", case.image_paths, overlays)
scale = design.rating_scale.value
with st.form(f"rate-{arm}-{case.case_id}", clear_on_submit=True):
    if scale == "five_point":
        rating = st.radio(
            "Confidence that the case is abnormal",
            [1, 2, 3, 4, 5],
            horizontal=True,
            format_func=lambda v: {1: "1 definitely not", 3: "3 unsure", 5: "5 definitely"}.get(
                v, str(v)
            ),
            key=f"rating-{case.case_id}",
        )
    else:
        rating = st.slider(
            "Probability of abnormality (%)", 0, 100, 50, key=f"rating-{case.case_id}"
        )
    if st.form_submit_button("Save rating", type="primary"):
        with _session.guard():
            studies.rate_case(wb, me, ref, arm, case.case_id, float(rating), shown_at=shown_at)
            st.rerun()
if st.button("Pause", key="study-pause"):
    studies.pause_reading(wb, me, ref, arm)
    st.info("Paused; open the arm again to resume.")
