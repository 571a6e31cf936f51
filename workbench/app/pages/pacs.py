"""PACS: query a configured server, import studies as a draft test set, export a run.

Servers are the ones an administrator configured (Users and PACS page): DICOMweb
servers, and DIMSE nodes (C-FIND, C-GET, C-STORE) for a PACS without DICOMweb; the
credentials never pass through the page. Imports and exports are audited by the
services (``testset.import.dicomweb``, ``testset.import.dimse``,
``run.export.dicomweb``, ``run.export.dimse``) and shown on the Audit trail page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.services import pacs_servers, views

#: Session-state key of the last query and what it found: the server is asked when
#: "Search" is pressed, not again on every rerun of the page (choosing studies, typing
#: the name), which would repeat a C-FIND or QIDO-RS query each time.
QUERY_KEY = "pacs-query"
LIMIT_MAX = 500
EARLIEST = dt.date(1900, 1, 1)
LATEST = dt.date(2999, 12, 31)

me = _session.require_page("pacs")
wb = _session.workbench()
st.title("PACS")
st.caption(
    "Import studies from a PACS as a draft test set, and store a run's results back "
    "(DICOM SEG, TID 1500 structured reports, the sealed report as Encapsulated PDF). "
    "Every transfer is recorded in the audit trail."
)

servers = pacs_servers.list_servers(wb, me)
if not servers:
    st.info(
        "No PACS server is configured. An administrator adds servers on the 'Users and PACS' page."
    )
    st.stop()
names = [s.name for s in servers]
by_name = {s.name: s for s in servers}


def _server_label(name: str) -> str:
    server = by_name[name]
    return f"{name} ({server.address}{', DIMSE' if server.is_dimse else ''})"


def _date(value: str) -> str:
    """A DICOM date (DA, ``YYYYMMDD``) as ``YYYY-MM-DD``; anything else as given."""
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def _progress_bar(start: str) -> Callable[[int, int, str], None]:
    """A progress bar and the service callback that feeds it."""
    bar = st.progress(0.0, text=start)

    def progress(done: int, total: int, message: str) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{message}: {done} of {total}")

    return progress


def _import_tab() -> None:
    server = st.selectbox("Server", names, format_func=_server_label, key="pacs-server")
    with st.form("pacs-query-form"):
        st.markdown("**Find studies** (no patient fields: the query never names a patient)")
        cols = st.columns(4)
        modality = cols[0].text_input("Modality", placeholder="CT", key="pacs-modality")
        # The widget's default range is the last ten years only; PACS archives go further back.
        date_from = cols[1].date_input(
            "Study date from", value=None, min_value=EARLIEST, max_value=LATEST, key="pacs-from"
        )
        date_to = cols[2].date_input(
            "Study date until", value=None, min_value=EARLIEST, max_value=LATEST, key="pacs-to"
        )
        accession = cols[3].text_input("Accession number", key="pacs-accession")
        lower = st.columns([3, 1])
        uid_text = lower[0].text_area(
            "Study Instance UIDs (one per line, optional)", height=80, key="pacs-uids"
        )
        limit = lower[1].number_input(
            "At most", min_value=1, max_value=LIMIT_MAX, value=50, step=10, key="pacs-limit"
        )
        searched = st.form_submit_button("Search", type="primary", icon=":material/search:")
    if searched:
        query = pacs_servers.StudyQuery(
            modality=modality or None,
            date_from=date_from if not isinstance(date_from, tuple) else None,
            date_to=date_to if not isinstance(date_to, tuple) else None,
            accession_number=accession or None,
            study_uids=tuple(uid_text.replace(",", "\n").split()),
            limit=int(limit),
        )
        st.session_state.pop("pacs-selected", None)
        st.session_state.pop(QUERY_KEY, None)
        with _session.guard():
            found = pacs_servers.find_studies(wb, me, server, query)
            st.session_state[QUERY_KEY] = (server, query, found)
    last = st.session_state.get(QUERY_KEY)
    if last is None or last[0] != server:
        return
    _, query, matches = last
    if not matches:
        st.info("No study matches the query on this server.")
        return
    more = (
        " (the limit: the server may hold more; narrow the query or raise 'At most')"
        if len(matches) >= query.limit
        else ""
    )
    st.caption(
        f"{len(matches)} {'study' if len(matches) == 1 else 'studies'} on "
        f"{_session.esc(server)}{more}"
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "study date": _date(m.study_date),
                    "modalities": ", ".join(m.modalities),
                    "description": m.description,
                    "accession number": m.accession_number,
                    "series": m.n_series,
                    "instances": m.n_instances,
                    "Study Instance UID": m.study_uid,
                }
                for m in matches
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    labels = {
        m.study_uid: f"{_date(m.study_date) or '(no date)'} {'/'.join(m.modalities)} "
        f"{m.description or m.study_uid}"
        for m in matches
    }
    # Keep only studies still listed (another server or query may list others).
    kept = [u for u in st.session_state.get("pacs-selected", []) if u in labels]
    st.session_state["pacs-selected"] = kept
    selected = st.multiselect(
        "Studies to import",
        list(labels),
        format_func=lambda uid: labels[uid],
        placeholder="Choose the studies",
        key="pacs-selected",
    )
    name = st.text_input(
        "New test-set name",
        help="Letters, digits, '.', '_' or '-'; a test set is never replaced.",
        key="pacs-name",
    )
    deidentify = None
    if st.toggle(
        "De-identify on intake (DICOM PS3.15 Basic Profile)",
        help="Only the de-identified files enter the test set; the raw retrieval is deleted.",
        key="pacs-deidentify",
    ):
        deid_cols = st.columns(3)
        deidentify = pacs_servers.DeidentificationOptions(
            retain_dates_shifted=deid_cols[0].checkbox(
                "Keep dates, shifted per patient", key="pacs-deid-dates"
            ),
            retain_patient_characteristics=deid_cols[0].checkbox(
                "Keep sex, age, size and weight", key="pacs-deid-patient"
            ),
            retain_device_identity=deid_cols[1].checkbox(
                "Keep device identity", key="pacs-deid-device"
            ),
            retain_institution_identity=deid_cols[1].checkbox(
                "Keep institution identity", key="pacs-deid-institution"
            ),
            clean_pixel_data=deid_cols[2].checkbox(
                "Black out burned-in text (OCR)", key="pacs-deid-pixels"
            ),
        )
    go = st.button(
        f"Import {len(selected)} {'study' if len(selected) == 1 else 'studies'}",
        type="primary",
        icon=":material/download:",
        disabled=not selected or not name.strip(),
        key="pacs-import",
    )
    if go:
        progress = _progress_bar("Listing the instances ...")
        with _session.guard():
            done = pacs_servers.import_studies(
                wb,
                me,
                server,
                name=name.strip(),
                studies=selected,
                deidentify=deidentify,
                progress=progress,
            )
            st.success(
                f"Imported {done.n_instances} instances of {len(selected)} studies into the "
                f"draft test set {_session.esc(done.test_set.name)} ({done.n_fetched} "
                f"retrieved now, {done.n_skipped} already here from an interrupted try)."
            )
            st.page_link(
                "pages/test_sets.py",
                label=f"Open Test sets to check and lock {done.test_set.name}",
                icon=":material/folder_zip:",
            )


def _export_tab() -> None:
    completed = [r.summary for r in views.list_runs(wb, me) if r.summary.status == "completed"]
    if not completed:
        st.info("No completed run to export yet.")
        return
    runs_by_uid = {r.run_uid: r for r in completed}
    run_uid = st.selectbox(
        "Run",
        list(runs_by_uid),
        format_func=lambda uid: (
            f"{uid}: {runs_by_uid[uid].protocol}, {runs_by_uid[uid].model}, "
            f"test set {runs_by_uid[uid].test_set}"
        ),
        key="pacs-run",
    )
    server = st.selectbox("Server", names, format_func=_server_label, key="pacs-export-server")
    include_report = st.checkbox(
        "Include the sealed report (Encapsulated PDF) when the run has one",
        value=True,
        key="pacs-include-report",
    )
    st.caption(
        "Per completed case the model's DICOM SEG and a TID 1500 measurement report. UIDs "
        "derive from the run, the case and the object kind: exporting again sends nothing twice."
    )
    if st.button("Export", type="primary", icon=":material/upload:", key="pacs-export"):
        progress = _progress_bar("Building the DICOM objects ...")
        with _session.guard():
            done = pacs_servers.export_run_to(
                wb, me, server, run_uid, include_report=include_report, progress=progress
            )
            stored = set(done.stored)
            st.success(
                f"{len(done.stored)} object(s) stored on {_session.esc(done.server)}, "
                f"{len(done.already_present)} already there (not sent again)."
            )
            if done.skipped_cases:
                st.warning(
                    "Cases without output to export: "
                    + ", ".join(_session.esc(c) for c in done.skipped_cases)
                )
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "kind": o.kind.upper(),
                            "case": o.case_id or "",
                            "on the server": "stored now"
                            if o.sop_uid in stored
                            else "already present",
                            "SOP Instance UID": o.sop_uid,
                            "SHA-256": o.sha256,
                        }
                        for o in done.objects
                    ]
                ),
                hide_index=True,
                width="stretch",
            )


tabs = []
if _session.can("testset.import"):
    tabs.append(("Import studies", _import_tab))
if _session.can("run.start"):
    tabs.append(("Export a run", _export_tab))
for tab, (_, render) in zip(st.tabs([label for label, _ in tabs]), tabs, strict=True):
    with tab:
        render()
