"""Results of a run: endpoints, forest plots, ROC, Dice by scanner, per-case table.

Every number comes from the stored ``Run.results`` and the case results.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _charts, _data, _session
from workbench.protocols import load_protocol
from workbench.services import runs
from workbench.services.context import Actor, Workbench

me = _session.require_page("results")
wb = _session.workbench()
st.title("Results")


@st.cache_data(max_entries=8, show_spinner="Loading the cases ...")
def case_table(run_uid: str, results_sha256: str, _wb: Workbench, _actor: Actor) -> pd.DataFrame:
    """The run's case frame, cached under the SHA-256 of its stored results."""
    return _data.run_case_frame(_wb, _actor, run_uid)


completed = [r for r in runs.list_runs(wb, me) if r.status == "completed"]
if not completed:
    st.info("No completed run yet.")
    st.stop()
uids = [r.run_uid for r in completed]
wanted = st.query_params.get("run")
index = uids.index(wanted) if wanted in uids else 0
run_uid = st.selectbox(
    "Run",
    uids,
    index=index,
    format_func=lambda uid: next(
        f"{r.run_uid} - {r.protocol} - {r.model}" for r in completed if r.run_uid == uid
    ),
    key="results-run",
)
st.query_params["run"] = run_uid

refusal = _data.aggregate_results_refusal(wb, me, run_uid)
if refusal:
    st.warning(_session.esc(refusal))
    st.page_link(
        "pages/adjudication.py", label="Go to the adjudication queue", icon=":material/gavel:"
    )
    st.stop()

summary = next(r for r in completed if r.run_uid == run_uid)
record = _data.run_record(wb, run_uid)
protocol = load_protocol(record.protocol_yaml.encode("utf-8"))
thresholds = {e.id: e.criterion.threshold for e in protocol.endpoints}
results = record.results
supplementary = results.get("supplementary", {})

verdict = (summary.verdict or "").upper()
(st.success if verdict == "PASS" else st.error)(
    f"Verdict **{verdict or 'none'}** - protocol {_session.esc(summary.protocol)}, model "
    f"{_session.esc(summary.model)}, test set {_session.esc(summary.test_set)}"
)
cols = st.columns(5)
cols[0].metric("Cases", summary.n_cases)
cols[1].metric("Completed", summary.n_completed)
cols[2].metric("Failed", summary.n_failed)
cols[3].metric("Excluded", summary.n_excluded)
cols[4].metric("Discrepancies", summary.n_discrepancies)
st.caption(
    f"Results SHA-256 {record.results_sha256}; device {record.device}; "
    f"finished {record.finished_at}"
)

endpoint_rows = []
for e in summary.endpoints:
    est = e.get("estimate") or {}
    endpoint_rows.append(
        {
            "endpoint": e.get("endpoint_id"),
            "primary": bool(e.get("primary")),
            "metric": e.get("metric"),
            "estimate": est.get("value"),
            "CI low": est.get("ci_low"),
            "CI high": est.get("ci_high"),
            "method": est.get("method"),
            "n": est.get("n"),
            "criterion": e.get("criterion_text"),
            "verdict": e.get("verdict"),
            "reason": e.get("reason"),
        }
    )
st.dataframe(pd.DataFrame(endpoint_rows), hide_index=True, width="stretch")

tab_names = ["Forest plots"]
if "roc" in supplementary:
    tab_names.append("ROC")
if supplementary.get("distributions"):
    tab_names.append("Distributions by scanner")
tab_names += ["Agreement and heterogeneity", "Cases"]
tabs = dict(zip(tab_names, st.tabs(tab_names), strict=True))

with tabs["Forest plots"]:
    endpoint_ids = [e.get("endpoint_id") for e in summary.endpoints]
    chosen_id = st.selectbox("Endpoint", endpoint_ids, key="forest-endpoint")
    endpoint = next(e for e in summary.endpoints if e.get("endpoint_id") == chosen_id)
    st.caption(_session.esc(endpoint.get("subgroup_rule_text") or ""))
    strata = list(endpoint.get("strata", []))
    present = {s["factor"] for s in strata}
    factors: list[str | None] = [f.factor for f in protocol.strata if f.factor in present]
    factors += sorted(present - set(factors))
    for factor in factors or [None]:
        rows = [s for s in strata if s["factor"] == factor]
        st.plotly_chart(
            _charts.forest_figure(
                endpoint,
                rows,
                threshold=thresholds.get(str(chosen_id)),
                title=f"{chosen_id} by {factor}" if factor else str(chosen_id),
            ),
            key=f"forest-{chosen_id}-{factor}",
        )
    if strata:
        st.dataframe(pd.DataFrame(strata), hide_index=True, width="stretch")

if "ROC" in tabs:
    with tabs["ROC"]:
        roc = supplementary["roc"]
        if "not_estimable" in roc:
            st.warning(f"ROC not estimable: {_session.esc(roc['not_estimable'])}")
        else:
            st.plotly_chart(_charts.roc_figure(roc), key="roc")

if "Distributions by scanner" in tabs:
    with tabs["Distributions by scanner"]:
        metric = supplementary.get("distribution_metric", "dice")
        st.plotly_chart(
            _charts.distribution_figure(supplementary["distributions"], metric=metric),
            key="distributions",
        )

with tabs["Agreement and heterogeneity"]:
    agreement = supplementary.get("agreement", [])
    if agreement:
        st.markdown("**Agreement (Cohen's kappa)**")
        st.dataframe(pd.DataFrame(agreement), hide_index=True, width="stretch")
    fleiss = supplementary.get("fleiss_kappa_readers")
    if fleiss:
        st.markdown("**Fleiss' kappa among readers**")
        st.json(fleiss)
    heterogeneity = supplementary.get("heterogeneity", [])
    if heterogeneity:
        st.markdown("**Heterogeneity across strata**")
        st.dataframe(pd.DataFrame(heterogeneity), hide_index=True, width="stretch")

with tabs["Cases"]:
    frame = case_table(run_uid, record.results_sha256 or "", wb, me)
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
