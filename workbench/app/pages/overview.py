"""Overview: where the workbench stands and what waits for the signed-in user."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.services import adjudication, views

me = _session.require_page("overview")
wb = _session.workbench()
st.title("Validation Workbench")
st.caption(
    f"Signed in as {_session.esc(me.full_name)} ({me.role}). "
    f"Workdir: {_session.esc(wb.workdir.root)}"
)

if me.role == "admin":
    st.info("Administrators manage accounts; they cannot sign or alter validation records.")
    st.page_link("pages/admin.py", label="Manage users", icon=":material/manage_accounts:")
    st.stop()

all_runs = views.list_runs(wb, me)
cols = st.columns(4)
cols[0].metric("Test sets", len(views.list_test_sets(wb, me)))
cols[1].metric("Models", len(views.list_models(wb, me)))
cols[2].metric("Protocol versions", len(views.list_protocols(wb, me)))
cols[3].metric("Runs", len(all_runs))

if _session.can("discrepancy.adjudicate"):
    st.subheader("Waiting for adjudication")
    waiting = [
        (
            r.summary.run_uid,
            sum(i.status != "adjudicated" for i in adjudication.queue(wb, me, r.summary.run_uid)),
        )
        for r in all_runs
        if r.summary.n_discrepancies
    ]
    waiting = [(uid, n) for uid, n in waiting if n]
    if waiting:
        st.dataframe(pd.DataFrame(waiting, columns=["run", "open discrepancies"]), hide_index=True)
        st.page_link(
            "pages/adjudication.py", label="Open the adjudication queue", icon=":material/gavel:"
        )
    else:
        st.success("No discrepancies wait for adjudication.")

st.subheader("Recent runs")
rows = []
for listing in all_runs[:20]:
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
            "discrepancies": r.n_discrepancies,
        }
    )
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
else:
    st.info("No validation runs yet.")

if _session.can("report.build"):
    drafts = [r for r in views.list_reports(wb, me) if r.status != "sealed"]
    if drafts:
        st.subheader("Reports not yet sealed")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "report": r.report_uid,
                        "run": r.run_uid,
                        "status": r.status,
                        "missing": ", ".join(r.missing_signatures),
                    }
                    for r in drafts
                ]
            ),
            hide_index=True,
        )
