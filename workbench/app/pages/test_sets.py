"""Test sets: import a folder, index summary, data-quality findings, lock (e-signed), verify."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from workbench.app import _session
from workbench.services import testsets, views

me = _session.require_page("test_sets")
wb = _session.workbench()
st.title("Test sets")

if _session.can("testset.import"):
    with st.expander("Import a test-set folder", icon=":material/upload:"):
        with st.form("import-test-set"):
            folder = st.text_input(
                "Folder on the workbench server", help="Root of the DICOM test set."
            )
            name = st.text_input("Name", help="Unique; a test set is never replaced.")
            submitted = st.form_submit_button("Import and index", type="primary")
        if submitted:
            if not folder or not name:
                st.error("Give the folder and a name.")
            else:
                bar = st.progress(0.0, text="Indexing ...")

                def progress(done: int, total: int, message: str) -> None:
                    bar.progress(min(done / max(total, 1), 1.0), text=f"{done}/{total} {message}")

                with _session.guard():
                    info = testsets.import_test_set(wb, me, folder, name=name, progress=progress)
                    st.success(
                        f"Imported {info.n_files} files as draft test set "
                        f"{_session.esc(info.name)}."
                    )

all_sets = views.list_test_sets(wb, me)
if not all_sets:
    st.info("No test set yet.")
    st.stop()

st.dataframe(
    pd.DataFrame(
        [
            {
                "name": t.name,
                "status": t.status,
                "files": t.n_files,
                "DICOM": t.n_dicom,
                "unreadable": t.n_unreadable,
                "manifest digest": t.manifest_digest or "",
                "locked by": t.locked_by or "",
                "locked at": t.locked_at or "",
            }
            for t in all_sets
        ]
    ),
    hide_index=True,
    width="stretch",
)

names = [t.name for t in all_sets]
chosen = st.selectbox("Test set", names, key="test-set-choice")
info = next(t for t in all_sets if t.name == chosen)
summary = info.summary
st.subheader(f"{info.name} ({info.status})")
cols = st.columns(5)
cols[0].metric("Files", summary.get("n_files", info.n_files))
cols[1].metric("DICOM files", summary.get("n_dicom", info.n_dicom))
cols[2].metric("Studies", summary.get("n_studies", 0))
cols[3].metric("Series", summary.get("n_series", 0))
cols[4].metric("Unreadable", summary.get("n_unreadable", info.n_unreadable))

overview, quality, actions = st.tabs(["Index summary", "Data quality", "Lock and verify"])
with overview:
    series = views.series_demographics(wb, me, info.name)
    left, middle, right = st.columns(3)
    by_scanner = summary.get("series_by_scanner", {})
    if by_scanner:
        left.plotly_chart(
            px.bar(
                x=list(by_scanner),
                y=list(by_scanner.values()),
                labels={"x": "scanner", "y": "series"},
                title="Series by scanner",
            ),
            key="ts-scanner",
        )
    by_sex = summary.get("series_by_sex", {})
    if by_sex:
        middle.plotly_chart(
            px.bar(
                x=list(by_sex),
                y=list(by_sex.values()),
                labels={"x": "sex", "y": "series"},
                title="Series by sex",
            ),
            key="ts-sex",
        )
    ages = [s.age_years for s in series if s.age_years is not None]
    if series:
        right.plotly_chart(
            px.histogram(
                x=ages,
                nbins=10,
                labels={"x": "age (years)"},
                title="Series by patient age",
            ),
            key="ts-age",
        )
    st.caption(f"Root folder: {_session.esc(info.root_path)}")

with quality:
    quality_check = views.latest_quality(wb, me, info.name)
    if quality_check is None:
        st.info("No data-quality check yet.")
    else:
        verdict = "passed" if quality_check.passed else "BLOCKED (critical findings)"
        st.markdown(
            f"Latest check {_session.esc(quality_check.created_at)} by "
            f"{_session.esc(quality_check.created_by)}: **{verdict}** - "
            f"{quality_check.n_critical} critical, {quality_check.n_major} major, "
            f"{quality_check.n_minor} minor."
        )
        frame = quality_check.report.to_frame()
        if len(frame):
            severities = st.multiselect(
                "Severity",
                sorted(frame["severity"].unique()),
                default=sorted(frame["severity"].unique()),
                key="q-sev",
            )
            st.dataframe(
                frame[frame["severity"].isin(severities)], hide_index=True, width="stretch"
            )
        else:
            st.success("No findings.")
    if _session.can("testset.import") and info.status == "draft":
        if st.button("Run the data-quality check", key="run-quality"):
            with st.spinner("Checking ..."), _session.guard():
                result = testsets.check_quality(wb, me, info.name)
                st.success(f"Data-quality check done: {len(result.findings)} finding(s).")
                st.rerun()

with actions:
    if info.status == "locked":
        st.success(f"Locked by {_session.esc(info.locked_by)} at {_session.esc(info.locked_at)}.")
        st.code(f"manifest digest {info.manifest_digest}", language=None)
        if _session.can("testset.verify"):
            if st.button("Verify every file against the manifest", key="verify-ts"):
                bar = st.progress(0.0, text="Re-hashing ...")

                def progress(done: int, total: int, message: str) -> None:
                    bar.progress(min(done / max(total, 1), 1.0), text=f"{done}/{total}")

                with _session.guard():
                    diff = testsets.verify_test_set(wb, me, info.name, progress=progress)
                    if diff.ok:
                        st.success("Intact: every file matches the locked manifest.")
                    else:
                        st.error(
                            f"Changed since locking: {len(diff.added)} added, "
                            f"{len(diff.removed)} removed, {len(diff.changed)} changed."
                        )
                        st.dataframe(
                            pd.DataFrame(
                                [("added", p) for p in diff.added]
                                + [("removed", p) for p in diff.removed]
                                + [("changed", p) for p in diff.changed],
                                columns=["change", "path"],
                            ),
                            hide_index=True,
                        )
    elif _session.can("testset.lock"):
        st.markdown(
            "Locking re-hashes every file and freezes the manifest. It is refused while critical "
            "data-quality findings stand. A locked test set never changes."
        )
        password = _session.signature_form("lock-ts", "responsibility", f"test set {info.name}")
        if password:
            with st.spinner("Re-hashing and locking ..."), _session.guard():
                locked = testsets.lock_test_set(wb, me, info.name, password=password)
                st.success(f"Locked; manifest digest {locked.manifest_digest}.")
    else:
        st.info("This test set is a draft; a QA user locks it.")
