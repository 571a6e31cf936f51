"""Terminal rendering of typed results: the run's pass/fail table and the demo summary.

The services return :class:`~workbench.services.runs.RunSummary` and
:class:`~workbench.services.demo.DemoSummary`; only the command line turns them into text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.vocabulary import CaseStatus, Verdict

if TYPE_CHECKING:
    from workbench.services.demo import DemoSummary
    from workbench.services.runs import RunSummary
    from workbench.stats import Estimate

__all__ = ["render_demo", "render_run"]


def _estimate_text(estimate: Estimate | None, reason: str = "") -> str:
    if estimate is None:
        return "not estimable" + (f": {reason}" if reason else "")
    return f"{estimate.value:.3f} [{estimate.ci_low:.3f}, {estimate.ci_high:.3f}]"


def render_run(summary: RunSummary) -> str:
    """A plain-text pass/fail table of a run, with the reasons behind every case not analysed."""
    lines = [
        f"Run {summary.run_uid}: {summary.model} on {summary.test_set} under {summary.protocol}",
        f"  cases {summary.n_cases}: completed {summary.n_completed}, failed {summary.n_failed}, "
        f"excluded {summary.n_excluded}; discrepancies queued {summary.n_discrepancies}",
    ]
    results = summary.results
    if results is not None:
        for status in (CaseStatus.EXCLUDED, CaseStatus.FAILED):
            for reason, count in results.accounting.reasons(status):
                lines.append(f"    {status.value} {count}: {reason}")
        for structure in results.accounting.structures:
            if structure.excluded:
                lines.append(
                    f"    {structure.structure}: {len(structure.excluded)} of "
                    f"{structure.n_cases} cases lack it in the reference "
                    f"(left out of its endpoints only)"
                )
    for endpoint in summary.endpoints:
        lines.append(
            f"  {endpoint.verdict.label:14} {endpoint.display_name}: "
            f"{_estimate_text(endpoint.estimate, endpoint.reason)}  ({endpoint.criterion_text})"
        )
        if endpoint.verdict is not Verdict.PASS and endpoint.reason:
            lines.append(f"  {'':14}   why: {endpoint.reason}")
        for stratum in endpoint.strata:
            if stratum.verdict in (Verdict.FAIL, Verdict.NOT_EVALUABLE):
                lines.append(
                    f"  {'':14}   {stratum.verdict.label} in {stratum.factor}={stratum.stratum}: "
                    f"{_estimate_text(stratum.estimate, stratum.reason)} (n={stratum.n})"
                )
    if summary.status == "failed" and summary.error:
        lines.append(f"  RUN FAILED: {summary.error}")
    verdict = summary.verdict.label if summary.verdict is not None else "NONE"
    lines.append(f"  VERDICT: {verdict}")
    if summary.verdict_reason:
        lines.append(f"  because: {summary.verdict_reason}")
    return "\n".join(lines)


def render_demo(demo: DemoSummary) -> str:
    """Plain-text summary of ``workbench demo``: one table per run, then the report paths."""
    lines = [
        "",
        "=" * 78,
        f"Validation Workbench demo - workdir {demo.workdir}",
        f"Test set {demo.test_set} locked, manifest {demo.manifest_digest}",
        "=" * 78,
    ]
    for summary in demo.runs:
        lines.append(render_run(summary))
        lines.append("")
    lines.append("Reports:")
    for report in demo.reports:
        path = report.sealed_path or report.pdf_path
        lines.append(f"  {report.report_uid} [{report.status}] {report.run_uid}: {path}")
    lines.extend(f"Note: {note}" for note in demo.notes)
    return "\n".join(lines)
