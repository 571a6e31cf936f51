"""Protocols: versions, differences between versions, approval (e-signed)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.services import protocols, views

me = _session.require_page("protocols")
wb = _session.workbench()
st.title("Protocols")

if _session.can("protocol.create"):
    with st.expander("Add a protocol version", icon=":material/add:"):
        with st.form("add-protocol"):
            upload = st.file_uploader("Protocol YAML", type=["yaml", "yml"], max_upload_size=1)
            reason = st.text_input("Reason for the new version (required after the first)")
            submitted = st.form_submit_button("Add as draft", type="primary")
        if submitted and upload is not None:
            with _session.guard():
                added = protocols.add_protocol_version(
                    wb, me, upload.getvalue(), reason=reason or None
                )
                st.success(
                    f"Stored {_session.esc(added.ref)} ({added.status}), SHA-256 {added.sha256}."
                )

versions = views.list_protocols(wb, me)
if not versions:
    st.info("No protocol stored yet.")
    st.stop()
st.dataframe(
    pd.DataFrame(
        [
            {
                "protocol": p.ref,
                "title": p.title,
                "status": p.status,
                "SHA-256": p.sha256,
                "created by": p.created_by,
                "approved by": p.approved_by or "",
                "approved at": p.approved_at or "",
                "reason": p.reason or "",
            }
            for p in versions
        ]
    ),
    hide_index=True,
    width="stretch",
)

ids = sorted({p.protocol_id for p in versions})
protocol_id = st.selectbox("Protocol", ids, key="protocol-choice")
mine = [p for p in versions if p.protocol_id == protocol_id]
refs = [p.ref for p in mine]
chosen_ref = st.selectbox("Version", refs, index=len(refs) - 1, key="protocol-version")
chosen = next(p for p in mine if p.ref == chosen_ref)

text_tab, diff_tab, approve_tab = st.tabs(["Text", "Differences", "Approve"])
with text_tab:
    st.caption(f"{chosen.status}; SHA-256 {chosen.sha256}")
    st.code(chosen.yaml_text, language="yaml")
with diff_tab:
    if len(refs) < 2:
        st.info("Only one version: nothing to compare.")
    else:
        left, right = st.columns(2)
        old_ref = left.selectbox("From", refs, index=0, key="diff-old")
        new_ref = right.selectbox("To", refs, index=len(refs) - 1, key="diff-new")
        with _session.guard():
            diff = views.protocol_diff(wb, me, old_ref, new_ref)
            st.code(diff or "(identical)", language="diff")
with approve_tab:
    if chosen.status != "draft":
        st.info(
            f"{chosen.ref} is {chosen.status}"
            + (f" (approved by {chosen.approved_by})." if chosen.approved_by else ".")
        )
    elif not _session.can("protocol.approve"):
        st.info("A QA user approves protocol versions.")
    else:
        st.markdown(
            "Approving makes this version immutable and supersedes the previously approved one."
        )
        password = _session.signature_form(
            "approve-protocol", "approved", f"protocol {chosen.ref} (SHA-256 {chosen.sha256[:16]})"
        )
        if password:
            with _session.guard():
                done = protocols.approve_protocol(wb, me, chosen.ref, password=password)
                st.success(f"{_session.esc(done.ref)} approved.")
