"""Blinded adjudication of discrepancies by clinical reviewers (e-signed)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _session, _viewer
from workbench.errors import WorkbenchError
from workbench.services import adjudication, runs

me = _session.require_page("adjudication")
wb = _session.workbench()
st.title("Adjudication")
st.caption(
    "Two outputs, A and B, are shown in an order drawn at random per case; one is the model's, "
    "one the reference standard. Which is which is hidden unless the protocol says otherwise."
)

DECISIONS = {
    "a_correct": "A is correct",
    "b_correct": "B is correct",
    "both_acceptable": "Both acceptable",
    "neither": "Neither acceptable",
    "indeterminate": "Indeterminate",
}

with_items = [r for r in runs.list_runs(wb, me) if r.n_discrepancies]
if not with_items:
    st.info("No run has discrepancies to adjudicate.")
    st.stop()
uids = [r.run_uid for r in with_items]
wanted = st.query_params.get("run")
run_uid = st.selectbox(
    "Run",
    uids,
    index=uids.index(wanted) if wanted in uids else 0,
    format_func=lambda uid: f"{uid} - {next(r.protocol for r in with_items if r.run_uid == uid)}",
    key="adj-run",
)

items = adjudication.queue(wb, me, run_uid)
st.dataframe(
    pd.DataFrame(
        [
            {
                "discrepancy": i.discrepancy_id,
                "case": i.case_id,
                "rule": i.rule,
                "status": i.status,
                "reads": i.n_reads,
                "read by me": i.read_by_me,
            }
            for i in items
        ]
    ),
    hide_index=True,
    width="stretch",
)
todo = [
    i
    for i in items
    if i.status != "adjudicated" and (i.status == "needs_consensus" or not i.read_by_me)
]
show_all = st.toggle("Include items already decided or read by me", key="adj-all")
choices = items if show_all else todo
if not choices:
    st.success("Nothing left for you to read in this run.")
    st.stop()
labels = {i.discrepancy_id: f"{i.case_id} - {i.rule} ({i.status})" for i in choices}
ids = list(labels)
wanted_id = st.query_params.get("item")
discrepancy_id = st.selectbox(
    "Case",
    ids,
    index=ids.index(int(wanted_id))
    if wanted_id and wanted_id.isdigit() and int(wanted_id) in ids
    else 0,
    format_func=lambda i: labels[i],
    key="adj-item",
)
item = next(i for i in choices if i.discrepancy_id == discrepancy_id)

try:
    case = adjudication.open_case(wb, me, discrepancy_id)
except WorkbenchError as error:
    st.error(_session.esc(error))
    st.stop()

st.subheader(f"Case {case.case_id}")
# boxes and points of the blinded outputs (detection); read with getattr so that cases
# stored before regions existed open as before
regions = {label: list(items) for label, items in (getattr(case, "regions", None) or {}).items()}
regions = {label: items for label, items in regions.items() if items}
# a mark's score would tell the model's output from the reference: never shown
_HIDDEN = ("score", "rating", "prob", "confidence")
details = {
    k: v
    for k, v in case.details.items()
    if isinstance(v, int | float | str)
    and not (regions and any(word in k.lower() for word in _HIDDEN))
}
if details:
    st.dataframe([details], hide_index=True)
if case.unblinded:
    st.info(
        f"The protocol does not blind reviewers: the model's output is {case.unblinded['model']}."
    )
if regions:
    st.caption(
        "A in orange, B in blue: each output's regions drawn as boxes and points on the slices "
        "they cross. Pick a region in the list to go to its slice."
    )
    _viewer.show_viewer(
        f"adj-{discrepancy_id}",
        case.ct_paths,
        {"A": case.overlays.get("A", []), "B": case.overlays.get("B", [])},
        rule=case.reference_rule,
        regions=regions,
    )
elif case.task == "classification":
    cols = st.columns(2)
    cols[0].metric("A says", case.calls.get("A", "?"))
    cols[1].metric("B says", case.calls.get("B", "?"))
    _viewer.show_viewer(f"adj-{discrepancy_id}", case.ct_paths, {})
else:
    st.caption(
        f"A in orange, B in blue. Reference standard rule: {_session.esc(case.reference_rule)}."
    )
    _viewer.show_viewer(
        f"adj-{discrepancy_id}",
        case.ct_paths,
        {"A": case.overlays.get("A", []), "B": case.overlays.get("B", [])},
        rule=case.reference_rule,
    )

if item.status == "adjudicated":
    st.info("This discrepancy is adjudicated.")
    st.stop()
consensus = item.status == "needs_consensus"
if consensus:
    st.warning("The reads of this case disagree: record the consensus decision.")
elif item.read_by_me:
    st.info("You have read this case; a second read must come from another reviewer.")
    st.stop()

with st.form(f"decide-{discrepancy_id}", clear_on_submit=True):
    st.markdown(
        f"**Your {'consensus ' if consensus else ''}decision on case {_session.esc(case.case_id)}**"
    )
    decision = st.radio(
        "Decision", list(DECISIONS), format_func=DECISIONS.__getitem__, key=f"dec-{discrepancy_id}"
    )
    comment = st.text_area("Comment (your reasoning)", key=f"comment-{discrepancy_id}")
    st.info(_session.SIGNATURE_MEANINGS["adjudicated"])
    st.caption(
        f"Signing as {_session.esc(me.full_name)} ({_session.esc(me.username)}). "
        "Re-enter your password."
    )
    password = st.text_input("Password", type="password", key=f"pw-{discrepancy_id}")
    submitted = st.form_submit_button("Sign and record the decision", type="primary")
if submitted:
    if not comment.strip():
        st.error("Give a comment with your decision.")
    elif not password:
        st.error("Enter your password to sign.")
    else:
        with _session.guard():
            status = adjudication.adjudicate(
                wb,
                me,
                discrepancy_id,
                decision=str(decision),
                comment=comment,
                password=password,
                consensus=consensus,
            )
            st.success(f"Decision recorded and signed; the discrepancy is now {status}.")
