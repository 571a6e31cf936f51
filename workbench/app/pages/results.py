"""Results of a run: verdict, endpoints, case accounting, forest plots, ROC, FROC, per-case table.

Every number comes from the run's typed results (:class:`~workbench.protocols.RunResults`)
as :mod:`workbench.services` return them; the page only lays them out.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _cached, _charts, _session
from workbench.protocols.results import FrocSummary
from workbench.services import views
from workbench.stats import Estimate
from workbench.vocabulary import CaseStatus, Verdict

me = _session.require_page("results")
wb = _session.workbench()
st.title("Results")

completed = [r for r in views.list_runs(wb, me) if r.summary.status == "completed"]
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
    key="results-run",
)
st.query_params["run"] = run_uid

detail = views.run_detail(wb, me, run_uid)
if detail.hidden_reason:
    st.warning(_session.esc(detail.hidden_reason))
    st.page_link(
        "pages/adjudication.py", label="Go to the adjudication queue", icon=":material/gavel:"
    )
    st.stop()

summary = detail.summary
results, frame = _cached.run_results(wb, me, run_uid, summary.results_sha256 or "")
supplementary = results.supplementary
# detection runs carry an FROC summary; results of other tasks (and older ones) have none
froc: FrocSummary | None = getattr(results, "froc", None)
froc_reason = str(getattr(results, "froc_reason", "") or "")
esc = _session.esc


def _estimate_cells(estimate: Estimate | None) -> dict[str, object]:
    if estimate is None:
        return {"estimate": None, "CI low": None, "CI high": None, "method": "", "n": None}
    return {
        "estimate": estimate.value,
        "CI low": estimate.ci_low,
        "CI high": estimate.ci_high,
        "method": estimate.method,
        "n": estimate.n,
    }


verdict = results.verdict
banner = (
    f"Verdict **{verdict.label}** - protocol {esc(summary.protocol)}, model "
    f"{esc(summary.model)}, test set {esc(summary.test_set)}"
)
if results.verdict_reason:
    banner += f"  \n{esc(results.verdict_reason)}"
{Verdict.PASS: st.success, Verdict.FAIL: st.error}.get(verdict, st.warning)(banner)

accounting = results.accounting
cols = st.columns(5)
cols[0].metric("Cases", accounting.n_cases)
cols[1].metric("Completed", accounting.n_completed)
cols[2].metric("Failed", accounting.n_failed)
cols[3].metric("Excluded", accounting.n_excluded)
cols[4].metric("Discrepancies", summary.n_discrepancies)
st.caption(
    f"Results SHA-256 {summary.results_sha256}; device {esc(detail.device or '?')}; "
    f"finished {detail.finished_at or '?'}"
)

st.dataframe(
    pd.DataFrame(
        [
            {
                "endpoint": e.endpoint_id,
                **(
                    {"structure": e.structure}
                    if any(x.structure for x in results.endpoints)
                    else {}
                ),
                "primary": e.primary,
                "metric": e.metric,
                **_estimate_cells(e.estimate),
                "criterion": e.criterion_text,
                "verdict": e.verdict.label,
                "reason": e.reason,
            }
            for e in results.endpoints
        ]
    ),
    hide_index=True,
    width="stretch",
    key="endpoint-table",
)
for e in results.endpoints:
    if e.verdict is Verdict.NOT_EVALUABLE:
        st.warning(f"{esc(e.display_name)} is NOT EVALUABLE: {esc(e.reason or 'no reason given')}")

excluded = accounting.reasons(CaseStatus.EXCLUDED)
failed = accounting.reasons(CaseStatus.FAILED)
if excluded or failed:
    left, right = st.columns(2)
    for column, title, reasons in (
        (left, "Excluded cases by reason", excluded),
        (right, "Failed cases by reason", failed),
    ):
        if reasons:
            column.markdown(f"**{title}**")
            column.dataframe(
                pd.DataFrame(reasons, columns=["reason", "cases"]),
                hide_index=True,
                width="stretch",
            )
for structure in accounting.structures:
    if structure.excluded:
        st.markdown(
            f"**Structure {esc(structure.structure)}**: {len(structure.excluded)} case(s) "
            f"without its reference, left out of its endpoints ({structure.n_analysed} of "
            f"{structure.n_cases} analysed)"
        )
        st.dataframe(
            pd.DataFrame([{"case": n.case_id, "reason": n.reason} for n in structure.excluded]),
            hide_index=True,
            width="stretch",
            key=f"structure-excluded-{structure.structure}",
        )
for note in results.evaluation.notes:
    st.caption(esc(note))

tab_names = ["Forest plots"]
if supplementary.roc is not None or supplementary.roc_reason:
    tab_names.append("ROC")
if froc is not None or froc_reason:
    tab_names.append("FROC and wAFROC")
if supplementary.distributions:
    tab_names.append("Distributions by scanner")
if supplementary.calibration or supplementary.decision_curve is not None:
    tab_names.append("Calibration and decision curve")
tab_names += ["Agreement and heterogeneity", "Cases"]
tabs = dict(zip(tab_names, st.tabs(tab_names), strict=True))

with tabs["Forest plots"]:
    endpoint_ids = [e.endpoint_id for e in results.endpoints]
    names = {e.endpoint_id: e.display_name for e in results.endpoints}
    chosen_id = st.selectbox(
        "Endpoint", endpoint_ids, key="forest-endpoint", format_func=lambda i: names[i]
    )
    endpoint = results.evaluation.endpoint(str(chosen_id))
    if endpoint.subgroup_rule_text:
        st.caption(esc(endpoint.subgroup_rule_text))
    present = list(dict.fromkeys(s.factor for s in endpoint.strata))
    factors: list[str | None] = [f for f in detail.strata_order if f in present]
    factors += [f for f in present if f not in factors]
    threshold = detail.acceptance_thresholds.get(endpoint.endpoint_id)
    for factor in factors or [None]:
        st.plotly_chart(
            _charts.forest_figure(
                endpoint,
                endpoint.strata_of(factor) if factor else (),
                threshold=threshold,
                title=f"{endpoint.display_name} by {factor}" if factor else endpoint.display_name,
            ),
            key=f"forest-{chosen_id}-{factor}",
        )
    if endpoint.strata:
        strata = endpoint.strata_frame()
        strata["verdict"] = [s.verdict.label for s in endpoint.strata]
        st.dataframe(strata, hide_index=True, width="stretch", key="strata-table")

if "Calibration and decision curve" in tabs:
    with tabs["Calibration and decision curve"]:
        point = supplementary.operating_point
        if point is not None:
            st.markdown(
                f"Operating point: score >= **{point.threshold:g}** ({esc(point.description)})"
                + (
                    f"; deployment prevalence {point.deployment_prevalence:g}"
                    if point.deployment_prevalence is not None
                    else ""
                )
            )
        if supplementary.calibration:
            rows = []
            for panel in supplementary.calibration:
                row: dict[str, object] = {
                    "stratum": "overall"
                    if panel.factor in ("", "overall")
                    else f"{panel.factor} = {panel.stratum}",
                    "n": panel.n,
                }
                for name in ("intercept", "slope", "brier", "ece"):
                    est = getattr(panel, name)
                    row[name] = (
                        "not estimable"
                        if est is None
                        else f"{est.value:.3f} [{est.ci_low:.3f}, {est.ci_high:.3f}]"
                    )
                rows.append(row)
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="calib-table")
            st.plotly_chart(
                _charts.reliability_figure(supplementary.calibration), key="reliability"
            )
        elif supplementary.calibration_reason:
            st.info(f"Calibration: {esc(supplementary.calibration_reason)}")
        if supplementary.decision_curve is not None:
            curve = supplementary.decision_curve
            st.plotly_chart(_charts.decision_curve_figure(curve), key="decision-curve")
            st.dataframe(
                _charts.decision_curve_table(curve),
                hide_index=True,
                width="stretch",
                key="decision-table",
            )
            st.caption(
                f"Net benefit at a prevalence of {curve.prevalence:.3f} (n={curve.n}); "
                "interventions avoided: net reduction in interventions per 100 patients against "
                "treating all, at no loss of true positives (Vickers & Elkin 2006)."
            )
        elif supplementary.decision_curve_reason:
            st.info(f"Decision curve: {esc(supplementary.decision_curve_reason)}")

if "ROC" in tabs:
    with tabs["ROC"]:
        if supplementary.roc is None:
            st.warning(f"ROC not estimable: {esc(supplementary.roc_reason)}")
        else:
            st.plotly_chart(_charts.roc_figure(supplementary.roc), key="roc")

if froc is None and froc_reason:
    with tabs["FROC and wAFROC"]:
        st.warning(f"FROC not estimable: {esc(froc_reason)}")
elif froc is not None:
    with tabs["FROC and wAFROC"]:
        counts = st.columns(4)
        counts[0].metric("Cases", froc.n_cases)
        counts[1].metric("With lesions", froc.n_diseased)
        counts[2].metric("Lesions", froc.n_lesions)
        counts[3].metric("Marks kept", froc.n_marks)
        if froc.sensitivity_at_fppi:
            st.dataframe(
                pd.DataFrame(
                    [
                        {"false positives per image": fppi, **_estimate_cells(est)}
                        for fppi, est in froc.sensitivity_at_fppi
                    ]
                ),
                hide_index=True,
                width="stretch",
                key="froc-sensitivity-table",
            )
        panels = [(summary.model, froc)]
        st.plotly_chart(_charts.froc_figure(panels), key="froc")
        if froc.wafroc is None:
            st.warning("wAFROC figure of merit not estimable for this run.")
        st.plotly_chart(_charts.wafroc_figure(panels), key="wafroc")

if "Distributions by scanner" in tabs:
    with tabs["Distributions by scanner"]:
        st.plotly_chart(
            _charts.distribution_figure(
                supplementary.distributions, metric=supplementary.distribution_metric or "value"
            ),
            key="distributions",
        )

with tabs["Agreement and heterogeneity"]:
    if supplementary.agreement:
        st.markdown("**Agreement (Cohen's kappa)**")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "comparison": a.kind,
                        "rater A": a.rater_a,
                        "rater B": a.rater_b,
                        "n": a.n,
                        "kappa": None if a.kappa is None else a.kappa.value,
                        "CI low": None if a.kappa is None else a.kappa.ci_low,
                        "CI high": None if a.kappa is None else a.kappa.ci_high,
                        "agreement": a.percent_agreement,
                        "reason": a.reason,
                    }
                    for a in supplementary.agreement
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    fleiss = supplementary.readers_fleiss_kappa
    if fleiss is not None:
        st.markdown(
            f"**Fleiss' kappa among the readers** ({esc(', '.join(supplementary.reader_columns))}):"
            f" {fleiss.value:.3f} ({fleiss.level:.0%} CI {fleiss.ci_low:.3f}-{fleiss.ci_high:.3f},"
            f" {esc(fleiss.method)}, n={fleiss.n})"
        )
    elif supplementary.readers_fleiss_reason:
        st.markdown(
            f"**Fleiss' kappa among the readers** not estimable: "
            f"{esc(supplementary.readers_fleiss_reason)}"
        )
    if supplementary.heterogeneity:
        st.markdown("**Heterogeneity across strata**")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "endpoint": h.endpoint_id,
                        "factor": h.factor,
                        "statistic": h.statistic,
                        "df": h.df if h.estimable else None,
                        "p-value": h.p_value,
                        "method": h.method,
                        "reason": h.reason,
                    }
                    for h in supplementary.heterogeneity
                ]
            ),
            hide_index=True,
            width="stretch",
        )
    if not (supplementary.agreement or supplementary.heterogeneity or fleiss is not None):
        st.info("No agreement or heterogeneity analysis is stored with this run.")

with tabs["Cases"]:
    if not len(frame):
        st.info("No case results stored.")
    else:
        filters = st.columns(3)
        statuses = sorted(frame["status"].dropna().unique())
        keep_status = filters[0].multiselect(
            "Status", statuses, default=statuses, key="case-status"
        )
        view = frame[frame["status"].isin(keep_status)]
        if "manufacturer" in frame:
            scanners = sorted(frame["manufacturer"].dropna().astype(str).unique())
            keep_scanner = filters[1].multiselect(
                "Scanner", scanners, default=scanners, key="case-scanner"
            )
            view = view[view["manufacturer"].astype(str).isin(keep_scanner)]
        value_column = "dice" if "dice" in frame else ("score" if "score" in frame else None)
        if value_column is not None:
            numbers = pd.to_numeric(view[value_column], errors="coerce")
            low, high = filters[2].slider(
                f"{value_column} range", 0.0, 1.0, (0.0, 1.0), 0.01, key="case-range"
            )
            view = view[numbers.between(low, high) | numbers.isna()]
        search = st.text_input("Case id contains", key="case-search")
        if search:
            view = view[view["case_id"].astype(str).str.contains(search, regex=False)]
        preferred = [
            c
            for c in (
                "case_id",
                "status",
                "reason",
                "score",
                "y_true",
                "dice",
                "hd95",
                "surface_dice",
                "manufacturer",
                "patient_sex",
                "patient_age_years",
            )
            if c in view
        ]
        view = view[preferred + [c for c in view.columns if c not in preferred]].reset_index(
            drop=True
        )
        st.caption(
            f"{len(view)} of {len(frame)} cases. Select a row to open the case in the viewer."
        )
        picked = st.dataframe(
            view,
            hide_index=True,
            width="stretch",
            on_select="rerun",
            selection_mode="single-row",
            key="case-table",
        )
        selected = picked.selection.rows if picked is not None else []
        if selected:
            case_id = str(view.iloc[selected[0]]["case_id"])
            if st.button(f"Open {case_id} in the viewer", key="open-viewer", type="primary"):
                st.switch_page(
                    "pages/case_viewer.py", query_params={"run": run_uid, "case": case_id}
                )
        st.download_button(
            "Download the filtered cases (CSV)",
            view.to_csv(index=False).encode("utf-8"),
            file_name=f"{run_uid}-cases.csv",
            mime="text/csv",
            key="cases-csv",
        )
