"""Reader studies: blinded reading sessions for readers; progress and analysis for QA and auditors.

A reader sees only their own sessions: the images of the next case in their own
order (and, in an aided arm, the model's score and mask), a rating, pause and
resume, and the e-signature that closes an arm. In a detection study the reader
marks lesions instead: on the slice shown, a mark's pixel position and confidence
(converted to patient coordinates by the service with the image's DICOM
geometry); the marks not yet saved are drawn on the images, listed and can be
deleted; saving the case stores them, or records the case as read with no mark.
Nothing of the reference standard or of other readers is shown. QA staff and
auditors see every reader's progress and, once every arm is signed, the
Obuchowski-Rockette analysis and the study's reports (QA builds the draft;
signing and sealing as for run reports). A study whose readers are simulated
says so at the top and in every reader row.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from workbench.app import _imaging, _session, _viewer
from workbench.errors import WorkbenchError
from workbench.services import studies, study_reports, views
from workbench.services.accounts import allowed
from workbench.studies import ReaderStudyDesign


def _mark_case(
    design: ReaderStudyDesign, ref: str, case: studies.ReadingCase, shown_at: datetime
) -> None:
    """The reader's marks of one case: add on the slice shown, list, delete, then save."""
    pending_key = f"marks-{ref}-{case.arm}-{case.case_id}"
    pending: list[dict[str, float | int | str]] = st.session_state.setdefault(pending_key, [])
    try:
        recorded = views.file_sha256s(wb, me, case.image_paths)
        volume = _imaging.load_volume(
            _imaging.content_key(_imaging.hashes_for(list(case.image_paths), recorded)),
            tuple(case.image_paths),
        )
    except WorkbenchError as error:
        st.error(f"The series cannot be loaded: {_session.esc(error)}")
        return
    regions = []
    for mark in pending:
        x, y, z = volume.voxel_to_patient(
            [float(mark["slice"]), float(mark["row"]), float(mark["column"])]
        )
        regions.append({"kind": "point", "x": float(x), "y": float(y), "z": float(z)})
    overlays = {"Model": [case.model_mask]} if case.model_mask else {}
    viewer_key = f"study-{case.case_id}"
    _viewer.show_viewer(viewer_key, case.image_paths, overlays, regions={"Marks": regions})
    n_slices, n_rows, n_columns = (int(n) for n in volume.array.shape)
    index = int(st.session_state.get(f"{viewer_key}-slice", n_slices // 2 + 1)) - 1
    index = min(max(index, 0), n_slices - 1)
    five = design.rating_scale.value == "five_point"
    with st.form(f"add-mark-{case.arm}-{case.case_id}", clear_on_submit=True):
        st.markdown(f"Add a mark on slice **{index + 1}** (pixel position on the image shown)")
        left, right = st.columns(2)
        column = left.number_input(
            f"x (column, 0-{n_columns - 1})", 0, n_columns - 1, n_columns // 2, key="mark-x"
        )
        row = right.number_input(
            f"y (row, 0-{n_rows - 1})", 0, n_rows - 1, n_rows // 2, key="mark-y"
        )
        if five:
            confidence = st.radio(
                "Confidence that a lesion is here",
                [1, 2, 3, 4, 5],
                index=2,
                horizontal=True,
                key="mark-confidence",
            )
        else:
            confidence = st.slider(
                "Probability that a lesion is here (%)", 1, 100, 50, key="mark-confidence"
            )
        if st.form_submit_button("Add mark"):
            pending.append(
                {
                    "slice": index,
                    "sop_instance_uid": volume.sop_instance_uids[index],
                    "column": int(column),
                    "row": int(row),
                    "confidence": int(confidence),
                }
            )
            st.rerun()
    if pending:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "mark": k,
                        "slice": int(m["slice"]) + 1,
                        "x (column)": m["column"],
                        "y (row)": m["row"],
                        "confidence": m["confidence"],
                    }
                    for k, m in enumerate(pending, start=1)
                ]
            ),
            hide_index=True,
        )
        for k in range(len(pending), 0, -1):
            if st.button(f"Delete mark {k}", key=f"delete-mark-{k}"):
                del pending[k - 1]
                st.rerun()
    else:
        st.caption("No mark yet: saving records the case as read with no lesion seen.")
    label = f"Save case ({len(pending)} mark(s))" if pending else "Save case: no lesion seen"
    if st.button(label, key="save-marks", type="primary"):
        with _session.guard():
            studies.mark_case(
                wb,
                me,
                ref,
                case.arm,
                case.case_id,
                [
                    studies.Mark(
                        confidence=float(m["confidence"]),
                        sop_instance_uid=str(m["sop_instance_uid"]),
                        column=float(m["column"]),
                        row=float(m["row"]),
                    )
                    for m in pending
                ],
                shown_at=shown_at,
            )
            del st.session_state[pending_key]
            st.rerun()


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
if design.simulated:
    st.warning(
        "Simulated readers: the ratings of this study are generated by a seeded simulation "
        "pre-specified in its design, not given by people. It demonstrates the workflow only."
    )

if allowed(me.role, "study.view"):
    everyone = studies.reading_progress(wb, me, ref)
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "reader": p.reader,
                    "reader kind": "simulated reader" if design.simulated else "person",
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
                f"Verdict **{result.verdict.label}**: {result.figure_of_merit} difference "
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
                            result.figure_of_merit: r.auc.value,
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
    st.subheader("Study reports")
    made = study_reports.list_study_reports(wb, me, ref)
    if made:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "report": r.report_uid,
                        "status": r.status,
                        "signatures": ", ".join(
                            f"{s['meaning']} ({s['printed_name']})" for s in r.signatures
                        )
                        or "-",
                        "file": r.sealed_path or r.pdf_path,
                    }
                    for r in made
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("No report of this study yet.")
    if allowed(me.role, "report.build") and st.button("Build study report", key="study-report"):
        with _session.guard():
            built = study_reports.build_study_report_pdf(wb, me, ref)
            st.success(
                f"Built {built.report_uid} (draft); sign it with 'workbench study report sign' "
                "(authored, approved) and seal it."
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
if design.reads_marks:
    _mark_case(design, ref, case, shown_at)
    if st.button("Pause", key="study-pause"):
        studies.pause_reading(wb, me, ref, arm)
        st.info("Paused; open the arm again to resume.")
    st.stop()
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
