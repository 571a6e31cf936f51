"""Reports: build, e-sign (re-authentication, meaning shown), seal, download, verify a PDF."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.services import reports, views

#: Largest PDF accepted for verification, in MB.
MAX_VERIFY_MB = 20

me = _session.require_page("reports")
wb = _session.workbench()
st.title("Reports")

if _session.can("report.build"):
    completed = [
        r.summary.run_uid for r in views.list_runs(wb, me) if r.summary.status == "completed"
    ]
    with st.expander("Build a report", icon=":material/add:"):
        if not completed:
            st.info("No completed run.")
        else:
            run_uid = st.selectbox("Run", completed, key="build-run")
            if st.button("Build the draft PDF", key="build-report", type="primary"):
                with st.spinner("Building ..."), _session.guard():
                    built = reports.build_report(wb, me, run_uid)
                    st.success(f"Built {built.report_uid}; content SHA-256 {built.content_sha256}.")

all_reports = views.list_reports(wb, me) if _session.can("run.view") else []
if all_reports:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "report": r.report_uid,
                    "run": r.run_uid,
                    "status": r.status,
                    "signatures": len(r.signatures),
                    "missing": ", ".join(r.missing_signatures),
                    "created by": r.created_by,
                    "created at": r.created_at,
                    "sealed SHA-256": r.sealed_sha256 or "",
                }
                for r in all_reports
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    chosen_uid = st.selectbox("Report", [r.report_uid for r in all_reports], key="report-choice")
    report = next(r for r in all_reports if r.report_uid == chosen_uid)
    refusal = views.results_refusal(wb, me, report.run_uid)
    st.subheader(f"{report.report_uid} ({report.status})")
    st.caption(f"Content SHA-256 (what signers sign): {report.content_sha256}")
    if report.signatures:
        st.markdown("**Signatures**")
        st.dataframe(pd.DataFrame(report.signatures), hide_index=True, width="stretch")
    if report.missing_signatures:
        st.markdown("**Still required:** " + _session.esc(", ".join(report.missing_signatures)))

    if refusal:
        st.warning(_session.esc(refusal))
    else:
        cols = st.columns(2)
        for column, label, path in (
            (cols[0], "Download the draft PDF", report.pdf_path),
            (cols[1], "Download the sealed PDF", report.sealed_path),
        ):
            if path and Path(path).is_file():
                column.download_button(
                    label,
                    Path(path).read_bytes(),
                    file_name=Path(path).name,
                    mime="application/pdf",
                    key=f"dl-{label}",
                )

    if report.status != "sealed":
        signable = [
            meaning
            for meaning, action in (
                ("authored", "report.sign.author"),
                ("reviewed", "report.sign.review"),
                ("approved", "report.sign.approve"),
            )
            if _session.can(action)
            and f"{me.role} ({meaning})" in report.missing_signatures
            # Separation of duties (the service refuses it too): the author never approves.
            and not (meaning == "approved" and report.created_by == me.username)
        ]
        if signable and not refusal:
            meaning = st.radio(
                "Sign with the meaning", signable, horizontal=True, key="sign-meaning"
            )
            password = _session.signature_form(
                f"sign-{report.report_uid}-{meaning}", meaning, f"report {report.report_uid}"
            )
            if password:
                with _session.guard():
                    signed = reports.sign_report(
                        wb, me, report.report_uid, meaning=meaning, password=password
                    )
                    st.success(f"Signed ({meaning}); report is {signed.status}.")
        if _session.can("report.seal") and report.status == "signed":
            if st.button("Seal the final PDF (PAdES)", key="seal", type="primary"):
                with st.spinner("Sealing ..."), _session.guard():
                    sealed = reports.seal_report(wb, me, report.report_uid)
                    st.success(f"Sealed; SHA-256 {sealed.sealed_sha256}.")
elif _session.can("run.view"):
    st.info("No report yet.")

st.subheader("Verify a report PDF")
st.caption(
    "Checks the PAdES seal, that no byte was added, the certificate, the database record "
    f"and every e-signature. Up to {MAX_VERIFY_MB} MB."
)
upload = st.file_uploader(
    "Report PDF", type=["pdf"], max_upload_size=MAX_VERIFY_MB, key="verify-upload"
)
if upload is not None:
    data = upload.getvalue()
    if len(data) > MAX_VERIFY_MB * 1024 * 1024:
        st.error(f"The file is larger than {MAX_VERIFY_MB} MB.")
    elif not data.startswith(b"%PDF"):
        st.error("The file is not a PDF.")
    elif st.button("Verify", key="verify-pdf", type="primary"):
        with tempfile.TemporaryDirectory(dir=wb.workdir.root) as folder:
            uploaded = Path(folder) / "uploaded.pdf"
            uploaded.write_bytes(data)
            with _session.guard():
                check = reports.verify_report_file(wb, uploaded)
                (st.success if check.valid else st.error)(
                    f"{'VALID' if check.valid else 'NOT VALID'}: report "
                    f"{_session.esc(check.report_uid or '?')} - {_session.esc(check.reason)}"
                )
                st.dataframe(
                    pd.DataFrame(check.checks, columns=["check", "ok", "detail"]),
                    hide_index=True,
                    width="stretch",
                )
