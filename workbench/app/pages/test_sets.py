"""Test sets: import a folder, index summary, data-quality findings, lock (e-signed), verify.

The data-quality tab shows the latest check grouped by check, severity and attribute,
filtered by any of the three, each finding with its waiver, and the gate as the lock
and the run apply it (critical findings waived with two QA signatures do not block).
QA users run the check with the suite and task, or the protocol, and OCR they choose.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from workbench.app import _session
from workbench.protocols.metrics import Task
from workbench.quality import DEFAULT_SUITE, SUITE_DEFINITIONS, QualityReport, Severity
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


_ANY_TASK = "none named (SEG and labels needed)"


def _verdict(check: views.QualitySummary) -> None:
    """The gate as the lock and the run see it, waivers included."""
    waived = check.n_critical - check.n_unwaived_critical
    if check.gate_open and waived > 0:
        st.success(
            f"Data-quality gate: passed; {waived} critical finding(s) waived with two QA "
            "signatures each."
        )
    elif check.gate_open:
        st.success("Data-quality gate: passed; no critical finding.")
    else:
        extra = f" ({waived} more waived)" if waived > 0 else ""
        st.error(
            f"Data-quality gate: BLOCKED by {check.n_unwaived_critical} critical finding(s) "
            f"not waived{extra}."
        )


def _waiver_state(waiver: testsets.Waiver | None) -> str:
    if waiver is None:
        return ""
    signers = ", ".join(waiver.signed_by)
    if waiver.complete:
        return f"waived ({signers})"
    return f"awaiting a second QA signature ({signers})"


def _show_quality(check: views.QualitySummary, name: str) -> None:
    """Grouped findings with filters, each finding with its waiver, and the waivers."""
    report = check.report
    _verdict(check)
    counts = report.counts
    st.markdown(
        f"Latest check {_session.esc(check.created_at)} by {_session.esc(check.created_by)}: "
        f"suite **{_session.esc(report.suite or DEFAULT_SUITE)}**, task "
        f"**{_session.esc(check.task or _ANY_TASK)}**, burned-in text OCR "
        f"**{'on' if check.ocr else 'off'}**; {report.n_files} file(s), "
        + ", ".join(f"{counts[s.value]} {s.value}" for s in Severity)
        + "."
    )
    if not report.findings:
        st.success("No findings.")
        return
    groups = report.grouped()
    left, middle, right = st.columns(3)
    severities = left.multiselect(
        "Severity",
        [s.value for s in Severity if counts[s.value]],
        placeholder="all",
        key=f"q-sev-{name}",
    )
    checks = middle.multiselect(
        "Check", sorted({g.check for g in groups}), placeholder="all", key=f"q-check-{name}"
    )
    attributes = right.multiselect(
        "Attribute",
        sorted({g.attribute for g in groups}),
        placeholder="all",
        key=f"q-attr-{name}",
    )
    shown = report.filtered(severities=severities, checks=checks, attributes=attributes)
    waivers = {w.finding_id: w for w in check.waivers}
    waived = QualityReport.build(
        [f for f in shown.findings if f.id in waivers and waivers[f.id].complete],
        checks_run=list(report.checks_run),
        n_files=report.n_files,
        suite=report.suite,
    )
    n_waived = {(g.check, g.severity, g.attribute): g.count for g in waived.grouped()}
    st.markdown(
        f"**Findings by check, severity and attribute** ({len(shown.findings)} of "
        f"{len(report.findings)} shown)"
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "severity": g.severity.value,
                    "check": g.check,
                    "attribute": g.attribute or "-",
                    "findings": g.count,
                    "files": g.n_paths,
                    "waived": n_waived.get((g.check, g.severity, g.attribute), 0),
                    "example": g.example,
                }
                for g in shown.grouped()
            ],
            columns=["severity", "check", "attribute", "findings", "files", "waived", "example"],
        ),
        hide_index=True,
        width="stretch",
    )
    with st.expander(f"Each finding ({len(shown.findings)})", icon=":material/list:"):
        frame = shown.to_frame()
        frame.insert(1, "waiver", [_waiver_state(waivers.get(i)) for i in frame["id"]])
        st.dataframe(frame, hide_index=True, width="stretch")
    if waivers:
        st.markdown(f"**Waivers** ({len(waivers)})")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "finding": w.finding_id,
                        "severity": w.severity,
                        "check": w.check,
                        "path": w.path,
                        "attribute": w.attribute,
                        "state": "waived" if w.complete else "awaiting a second QA signature",
                        "signed by": ", ".join(w.signed_by),
                        "justification": w.justification,
                    }
                    for w in check.waivers
                ]
            ),
            hide_index=True,
            width="stretch",
        )


def _run_check_form(name: str, latest: views.QualitySummary | None) -> None:
    """Choose the suite and task, or a protocol, and OCR; then run the check."""
    st.markdown("**Run the data-quality check**")
    source = st.radio(
        "Checks from",
        ["a suite and task", "a protocol"],
        horizontal=True,
        key=f"q-source-{name}",
        help="A protocol's data_quality_suite, task and labels key apply, as with "
        "'workbench testset check --protocol'.",
    )
    suite: str | None = None
    task: str | None = None
    protocol: str | None = None
    if source == "a protocol":
        stored = {p.ref: p for p in views.list_protocols(wb, me)}
        if not stored:
            st.info("No protocol stored yet; choose a suite and task instead.")
            return
        protocol = st.selectbox(
            "Protocol",
            list(stored),
            format_func=lambda ref: f"{ref} ({stored[ref].status}): {stored[ref].title}",
            key=f"q-protocol-{name}",
        )
        if protocol is None:
            return
        loaded = stored[protocol].load()
        st.caption(
            f"Suite {_session.esc(loaded.data_quality_suite)}, task "
            f"{_session.esc(loaded.task.value)}."
        )
    else:
        current = latest.report.suite if latest is not None else DEFAULT_SUITE
        left, right = st.columns(2)
        suite = left.selectbox(
            "Suite",
            list(SUITE_DEFINITIONS),
            index=list(SUITE_DEFINITIONS).index(current) if current in SUITE_DEFINITIONS else 0,
            format_func=lambda n: f"{n}: {SUITE_DEFINITIONS[n].title}",
            key=f"q-suite-{name}",
        )
        chosen_task = right.selectbox(
            "Task (the reference standard each case needs)",
            [_ANY_TASK, *(t.value for t in Task)],
            key=f"q-task-{name}",
            help="Segmentation needs a reference SEG per case; classification and detection "
            "one row of reference/labels.csv.",
        )
        task = None if chosen_task == _ANY_TASK else chosen_task
    ocr = st.checkbox(
        "Also search the pixels for burned-in text (OCR; slower)", key=f"q-ocr-{name}"
    )
    if st.button("Run the data-quality check", key="run-quality"):
        with st.spinner("Checking ..."), _session.guard():
            result = testsets.check_quality(
                wb, me, name, suite=suite, task=task, ocr=ocr, protocol=protocol
            )
            st.success(f"Data-quality check done: {len(result.findings)} finding(s).")
            st.rerun()


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
        _show_quality(quality_check, info.name)
    if _session.can("testset.import") and info.status == "draft":
        _run_check_form(info.name, quality_check)

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
            "data-quality findings stand that are not waived with two QA signatures. A locked "
            "test set never changes."
        )
        password = _session.signature_form("lock-ts", "responsibility", f"test set {info.name}")
        if password:
            with st.spinner("Re-hashing and locking ..."), _session.guard():
                locked = testsets.lock_test_set(wb, me, info.name, password=password)
                st.success(f"Locked; manifest digest {locked.manifest_digest}.")
    else:
        st.info("This test set is a draft; a QA user locks it.")
