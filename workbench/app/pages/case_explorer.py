"""Case explorer (QA and auditors): every case of a run, worst first, in three planes.

Unblinded: model output and reference side by side, per-case metrics, strata and
header, explanation maps. The services (:mod:`workbench.services.explorer`) refuse
clinical reviewers; the navigation does not list the page for them either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from workbench.app import _imaging, _mpr, _session
from workbench.errors import WorkbenchError
from workbench.services import explorer, views

me = _session.require_page("case_explorer")
esc = _session.esc
if not explorer.may_explore(me.role):
    st.error(
        f"The case explorer shows unblinded model outputs; the role '{esc(me.role)}' may not "
        "open it."
    )
    st.stop()
wb = _session.workbench()
st.title("Case explorer")
st.caption(
    "Unblinded view for QA and auditors: model output and reference standard of every case. "
    "Not shown to clinical reviewers."
)

completed = [r for r in views.list_runs(wb, me) if r.summary.status == "completed" and not r.hidden]
if not completed:
    st.info("No completed run yet.")
    st.stop()
by_uid = {r.summary.run_uid: r.summary for r in completed}
uids = list(by_uid)
wanted = st.query_params.get("run")
run_uid = st.selectbox(
    "Run",
    uids,
    index=uids.index(wanted) if wanted in uids else 0,
    format_func=lambda uid: f"{uid} - {by_uid[uid].protocol} - {by_uid[uid].model}",
    key="explorer-run",
)
st.query_params["run"] = run_uid

try:
    cases = explorer.explorer_cases(wb, me, run_uid)
except WorkbenchError as error:
    st.warning(esc(error))
    st.stop()

# -- sorting and filtering ------------------------------------------------------------------------
filters = st.columns(5)
metric_options = ["(case order)", *cases.metric_columns]
default_metric = 1 if cases.metric_columns else 0
with filters[0]:
    sort_by = st.selectbox(
        "Sort by", metric_options, index=default_metric, key=f"explorer-sort-{run_uid}"
    )
with filters[1]:
    worst_first = st.toggle("Worst first", value=True, key="explorer-worst")
with filters[2]:
    false_negatives = st.checkbox(
        "False negatives only",
        key="explorer-fn",
        help=(
            "Lesions the model missed"
            if cases.task == "segmentation"
            else f"Positive cases scored below the operating threshold {cases.operating_threshold}"
        ),
    )
    failed = st.checkbox("Failed or excluded only", key="explorer-failed")
with filters[3]:
    with_discrepancy = st.checkbox("With a discrepancy", key="explorer-disc")
    factor = st.selectbox("Stratum", ["(all)", *cases.strata_columns], key="explorer-factor")
stratum = None
with filters[4]:
    if factor != "(all)":
        levels = sorted({str(v) for v in cases.frame[factor].dropna()})
        if levels:
            stratum = (str(factor), str(st.selectbox("Value", levels, key="explorer-level")))

query = explorer.CaseQuery(
    sort_by=None if sort_by == "(case order)" else str(sort_by),
    worst_first=bool(worst_first),
    false_negatives_only=bool(false_negatives),
    failed_only=bool(failed),
    discrepancies_only=bool(with_discrepancy),
    stratum=stratum,
)
table = explorer.query_cases(cases, query)
shown_columns = [
    c
    for c in (
        "case_id",
        "status",
        *cases.metric_columns,
        "false_negative",
        "discrepancy",
        *cases.strata_columns,
    )
    if c in table
]

listing, viewer = st.columns([2, 5])
with listing:
    st.markdown(f"**{len(table)}** of {len(cases.frame)} cases")
    st.dataframe(table[shown_columns], hide_index=True, width="stretch", key="explorer-table")
    if not len(table):
        st.info("No case matches the filters.")
        st.stop()
    ids = [str(c) for c in table["case_id"]]
    previous_run = st.session_state.get("explorer-case-run")
    if previous_run != run_uid:
        st.session_state["explorer-case-run"] = run_uid
        if previous_run is not None:
            # another run chosen: start at its first case in the chosen order, not at the
            # case of the run before (a link's case applies to the run it came with)
            st.query_params.pop("case", None)
            st.session_state["explorer-case"] = ids[0]  # also shown so in the browser
    wanted_case = st.query_params.get("case")
    case_id = st.selectbox(
        "Case",
        ids,
        index=ids.index(wanted_case) if wanted_case in ids else 0,
        key="explorer-case",
    )
    st.query_params["case"] = case_id

try:
    case = explorer.explorer_case(wb, me, run_uid, case_id)
except WorkbenchError as error:
    viewer.warning(esc(error))
    st.stop()

with listing:
    metrics = {
        k: v
        for k, v in case.metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if case.score is not None:
        metrics["score"] = case.score
    st.markdown("**Per-case metrics**")
    st.dataframe(
        [{"metric": k, "value": v} for k, v in metrics.items()], hide_index=True, width="stretch"
    )
    st.markdown("**Strata**")
    st.dataframe(
        [{"attribute": k, "value": str(v)} for k, v in case.strata.items()],
        hide_index=True,
        width="stretch",
    )
    with st.expander("DICOM header summary"):
        st.dataframe(
            [{"attribute": k, "value": v} for k, v in case.header],
            hide_index=True,
            width="stretch",
        )
    if case.discrepancies:
        st.markdown("**Discrepancies**")
        for link in case.discrepancies:
            outcome = f" - **{esc(link.outcome)}**" if link.outcome else ""
            st.markdown(
                f"- #{link.discrepancy_id} rule *{esc(link.rule)}*: {esc(link.status)}{outcome}"
            )
            if link.reads:
                st.dataframe(
                    [
                        {
                            "decided (UTC)": read.decided_at.strftime("%Y-%m-%d %H:%M"),
                            "adjudicator": f"{read.reviewer_name} ({read.reviewer})",
                            "read": read.kind,
                            "decision": f"{read.meaning} ({read.decision})",
                            "comment": read.comment,
                        }
                        for read in link.reads
                    ],
                    hide_index=True,
                    width="stretch",
                    key=f"explorer-reads-{link.discrepancy_id}",
                )
            else:
                st.caption("Not adjudicated yet.")
            st.page_link(
                "pages/audit.py",
                label=f"Discrepancy #{link.discrepancy_id} in the audit trail",
                icon=":material/receipt_long:",
                query_params={"record_type": "discrepancy", "record": str(link.discrepancy_id)},
            )
    else:
        st.caption("No discrepancy was queued for this case.")

with viewer:
    status = case.status.value + (f": {case.reason}" if case.reason else "")
    st.markdown(
        f"**{esc(case_id)}** ({esc(status)}) - model {esc(case.model_ref)}"
        + (" - **false negative**" if case.false_negative else "")
    )
    if not case.ct_paths:
        st.warning("No images were found for this case.")
        st.stop()
    overlays: dict[str, tuple[list[str], tuple[int, int, int]]] = {}
    if case.task == "segmentation":
        overlays[f"Model output ({case.model_ref})"] = (
            [case.model_mask] if case.model_mask else [],
            _imaging.OVERLAY_COLOURS["Model"],
        )
        overlays[f"Reference ({case.reference_rule} of readers)"] = (
            list(case.reference_segs),
            _imaging.OVERLAY_COLOURS["Reference"],
        )
    else:
        truth = case.strata.get("consensus_malignant", case.strata.get("y_true", "?"))
        st.caption(
            f"Classification: model score {case.score if case.score is not None else 'none'}, "
            f"operating threshold {cases.operating_threshold}, reference label {esc(truth)}."
        )

    # -- explanation maps (computed on demand, cached under the workdir) --------------------------
    methods = (
        ["probability"] if case.task == "segmentation" else ["occlusion", "gradcam", "saliency"]
    )
    explain_key = f"explain-{run_uid}-{case_id}"
    with st.expander("Explanation map (aid to review)", expanded=explain_key in st.session_state):
        method = st.selectbox("Method", methods, key=f"{explain_key}-method")
        params: dict[str, Any] = {}
        if method == "occlusion":
            patch = st.select_slider("Patch (voxels)", [4, 8, 16], value=8, key=f"{explain_key}-p")
            params = {"patch": patch, "stride": patch}
        if st.button("Compute or load the map", key=f"{explain_key}-go"):
            bar = st.progress(0.0, text="Explaining ...")

            def _progress(done: int, total: int, message: str) -> None:
                bar.progress(min(done / max(total, 1), 1.0), text=message)

            try:
                found = explorer.case_explanation(
                    wb, me, run_uid, case_id, method=method, params=params, progress=_progress
                )
            except (WorkbenchError, ValueError) as error:
                st.error(esc(error))
            else:
                st.session_state[explain_key] = (method, params)
                st.session_state[f"{explain_key}-result"] = found
            bar.empty()
        result = st.session_state.get(f"{explain_key}-result")
        if result is not None:
            st.info(f"{esc(result.label)}. {esc(result.note)}")
            if result.faithfulness is not None:
                (st.success if result.faithfulness.passed else st.warning)(
                    esc(result.faithfulness.describe())
                )
            show_heat = st.toggle("Show the map", value=True, key=f"{explain_key}-show")
        else:
            show_heat = False

    def _heat(shape: tuple[int, ...]) -> tuple[np.ndarray, str] | None:
        if not show_heat or result is None:
            return None
        if tuple(result.heat.shape) != tuple(shape):
            st.warning(
                f"The explanation map has shape {tuple(result.heat.shape)}; the image has "
                f"{tuple(shape)}. Compute the map again."
            )
            return None
        return result.heat, result.label

    recorded = views.file_sha256s(
        wb, me, [*case.ct_paths, *(p for paths, _c in overlays.values() for p in paths)]
    )

    def _export(png: bytes) -> None:
        st.download_button(
            "Download this view (PNG)",
            png,
            file_name=f"{run_uid}-{case_id}.png",
            mime="image/png",
            key=f"export-{run_uid}-{case_id}",
        )
        if _session.can("report.build"):
            with st.form(f"select-{run_uid}-{case_id}", clear_on_submit=True):
                note = st.text_input("Why this case belongs in the report", key="select-note")
                if st.form_submit_button("Add this view to the report's selected cases"):
                    with _session.guard("Added to the report's selected cases."):
                        explorer.select_case_for_report(wb, me, run_uid, case_id, png, note)

    caption = f"Run {run_uid}, case {case_id}"
    single_image = (
        len(case.ct_paths) == 1
        and case.header
        and dict(case.header).get("Modality", "CT") in {"CR", "DX", "MG", "XA", "RF", "US", "SC"}
    )
    if single_image:
        _mpr.show_image2d(
            f"explorer-{run_uid}-{case_id}",
            case.ct_paths[0],
            caption=caption,
            overlays=overlays,
            rule=case.reference_rule,
            recorded=recorded,
            heat=_heat,
            on_export=_export,
        )
    else:
        _mpr.show_mpr(
            f"explorer-{run_uid}-{case_id}",
            case.ct_paths,
            overlays,
            rule=case.reference_rule,
            recorded=recorded,
            heat=_heat,
            caption=caption,
            on_export=_export,
            focus=next((label for label in overlays if label.startswith("Reference")), None),
        )
    try:
        chosen = explorer.selected_cases(wb, me, run_uid)
    except WorkbenchError as error:
        st.warning(esc(error))
        chosen = ()
    if chosen:
        st.caption(
            "Selected for the report: "
            + ", ".join(f"{esc(c.case_id)} ({esc(c.note)})" for c in chosen)
        )
