"""Audit trail: search by user, record and time; verify the hash chain; export CSV.

Presets narrow the list to one kind of step; "PACS transfers" also sums up each
import from and export to a PACS (server, studies, instances, stored or already
present).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.errors import AuditChainError
from workbench.services import audit_trail

#: Entries shown on screen at most (the CSV export has them all).
MAX_ROWS = 2000

RECORD_TYPES = [
    "(any)",
    "test_set",
    "model",
    "protocol_version",
    "run",
    "case_result",
    "discrepancy",
    "report",
    "user",
    "pacs_server",
    "audit_log",
]

#: Preset -> the actions it shows (None: every action).
PRESETS: dict[str, tuple[str, ...] | None] = {
    "Everything": None,
    "PACS transfers (imports and exports)": (
        "testset.import.dicomweb",
        "testset.import.dimse",
        "run.export.dicomweb",
        "run.export.dimse",
    ),
    "PACS server configuration": ("pacs_server.add", "pacs_server.update", "pacs_server.retire"),
}
TRANSFERS = "PACS transfers (imports and exports)"


def _transfer_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One PACS transfer as a table row, from its audit entry's recorded values."""
    new = entry.get("new_value") or {}
    exported = entry["action"].startswith("run.export.")
    return {
        "seq": entry["seq"],
        "time (UTC)": entry["ts"],
        "user": entry["actor"],
        "direction": "export to PACS" if exported else "import from PACS",
        "protocol": "DIMSE" if entry["action"].endswith(".dimse") else "DICOMweb",
        "record": f"{entry['record_type']} {entry['record_id']}",
        "server": new.get("server", ""),
        "studies": len({o.get("study") for o in new.get("objects", [])})
        if exported
        else len(new.get("studies", [])),
        "instances": len(new.get("objects", [])) if exported else new.get("n_instances"),
        "sent or retrieved now": len(new.get("stored", [])) if exported else new.get("n_fetched"),
        "already present": len(new.get("already_present", []))
        if exported
        else new.get("n_resumed"),
    }


me = _session.require_page("audit")
wb = _session.workbench()
st.title("Audit trail")

if _session.can("audit.verify"):
    if st.button("Verify the hash chain", key="verify-chain", icon=":material/link:"):
        try:
            status = audit_trail.verify_audit_chain(wb)
        except AuditChainError as error:
            st.error(f"The chain is BROKEN: {_session.esc(error)}")
        else:
            st.success(
                f"Intact: {status.count} entries; head #{status.head_seq} {status.head_hash}."
            )

# A link from another page (e.g. a discrepancy in the case explorer) opens the trail of
# one record, whenever it was written: the link's filters fill the form once.
linked_record = st.query_params.get("record")
if linked_record and st.session_state.get("audit-linked") != linked_record:
    st.session_state["audit-linked"] = linked_record
    st.session_state["audit-record"] = linked_record
    linked_type = st.query_params.get("record_type", "(any)")
    st.session_state["audit-type"] = linked_type if linked_type in RECORD_TYPES else "(any)"
    st.session_state["audit-since"] = None
    st.info(f"Showing the entries of record {_session.esc(linked_record)} from the link.")

preset = st.selectbox("Preset", list(PRESETS), key="audit-preset")
with st.form("audit-filter"):
    cols = st.columns(3)
    user = cols[0].text_input("User", key="audit-user")
    record_type = cols[1].selectbox("Record type", RECORD_TYPES, key="audit-type")
    record_id = cols[2].text_input("Record id", key="audit-record")
    cols = st.columns(3)
    today = datetime.now(UTC).date()
    since_day = cols[0].date_input(
        "From (UTC)",
        value=None if "audit-linked" in st.session_state else today - timedelta(days=30),
        key="audit-since",
    )
    until_day = cols[1].date_input("Until (UTC, inclusive)", value=today, key="audit-until")
    action_text = cols[2].text_input("Action contains", key="audit-action")
    st.form_submit_button("Search", type="primary")

filters: dict[str, Any] = {
    "user": user.strip() or None,
    "record_type": None if record_type == "(any)" else record_type,
    "record_id": record_id.strip() or None,
    "since": datetime.combine(since_day, time.min, tzinfo=UTC) if since_day else None,
    "until": datetime.combine(until_day, time.min, tzinfo=UTC) + timedelta(days=1)
    if until_day
    else None,
}
with _session.guard():
    entries = audit_trail.export_entries(
        wb,
        me,
        user=filters["user"],
        record_type=filters["record_type"],
        record_id=filters["record_id"],
        since=filters["since"],
        until=filters["until"],
    )
    if action_text.strip():
        entries = [e for e in entries if action_text.strip() in str(e.get("action", ""))]
    wanted_actions = PRESETS[preset]
    if wanted_actions is not None:
        entries = [e for e in entries if e.get("action") in wanted_actions]
    if preset == TRANSFERS and entries:
        st.markdown("**PACS transfers**")
        st.dataframe(
            pd.DataFrame([_transfer_row(e) for e in entries[-MAX_ROWS:][::-1]]),
            hide_index=True,
            width="stretch",
        )
    st.caption(
        f"{len(entries)} entries"
        + (f"; the newest {MAX_ROWS} are shown" if len(entries) > MAX_ROWS else "")
    )
    shown = entries[-MAX_ROWS:][::-1]
    frame = pd.DataFrame(
        [
            {
                "seq": e["seq"],
                "time (UTC)": e["ts"],
                "user": e["actor"],
                "action": e["action"],
                "record type": e["record_type"],
                "record id": e["record_id"],
                "old": json.dumps(e.get("old_value"), sort_keys=True)
                if e.get("old_value") is not None
                else "",
                "new": json.dumps(e.get("new_value"), sort_keys=True)
                if e.get("new_value") is not None
                else "",
                "reason": e.get("reason") or "",
                "entry hash": e["entry_hash"],
            }
            for e in shown
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch", height=480)

if _session.can("audit.export"):
    st.subheader("Export")
    st.caption(
        "The export is itself recorded in the audit trail. "
        "Cells are neutralized against spreadsheet formulas."
    )
    if st.button("Prepare a CSV export of these filters", key="prepare-export"):
        with _session.guard(), tempfile.TemporaryDirectory(dir=wb.workdir.root) as folder:
            out = Path(folder) / "audit.csv"
            count = audit_trail.write_export(
                wb, me, out, fmt="csv", **{k: v for k, v in filters.items() if v}
            )
            st.download_button(
                f"Download {count} entries (CSV)",
                out.read_bytes(),
                file_name=f"audit-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.csv",
                mime="text/csv",
                key="download-export",
                on_click="ignore",
            )
