"""Re-derive every completed run's results from its stored per-case outcomes and compare.

For each completed run of a workdir, the stored case outcomes (status, score,
per-case metrics and case attributes) are analysed again with the current
release's protocol evaluation and supplementary analyses, and the resulting
:class:`~workbench.protocols.RunResults` is compared field by field with the
stored results (read through :meth:`RunResults.from_dict`, which migrates
results stored by earlier releases). Identifiers and timestamps are not part of
``RunResults``; the workbench version and the protocol's hash are reported but
not compared.

With ``--reports``, every stored report is also rebuilt from the records with
the current release and its attachments compared with those of the stored PDF
(``results.json``: every number the report prints; ``per-case.csv``,
``manifest.json``, ``protocol.yaml``). The audit-trail appendix and the
software commit are expected to differ (entries written since) and are listed
but not counted.

With ``--against DIR``, every ``run-results-*.json`` in ``DIR`` (results stored
by an earlier release, e.g. ``tests/data/legacy/``) is compared with the run of
the same protocol and model in the workdir, as re-derived by this release: the
verdict, every endpoint the earlier release evaluated (estimate, interval,
verdict, strata) and the case accounting. Endpoints the earlier release did not
have are listed as additions, not differences.

Usage::

    python scripts/reevaluate_runs.py --workdir var/demo [--reports] [--against tests/data/legacy]

Exit status 0 when every run's verdict, endpoints, strata, case accounting and
supplementary analyses are identical; 1 otherwise, with the differences listed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

from workbench.protocols import (
    CaseAccounting,
    RunResults,
    SupplementaryAnalyses,
    Task,
    evaluate_detection,
    evaluate_endpoints,
)
from workbench.protocols.supplementary import supplementary_analysis
from workbench.records.models import ProtocolVersion, Run
from workbench.services.context import Workbench
from workbench.services.protocols import parsed_protocol
from workbench.services.runs import case_frame, detection_frames, stored_results
from workbench.vocabulary import Verdict


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if dataclasses.is_dataclass(old) and dataclasses.is_dataclass(new):
        out: list[str] = []
        for f in dataclasses.fields(old):
            out += _differences(getattr(old, f.name), getattr(new, f.name), f"{path}.{f.name}")
        return out
    if isinstance(old, tuple) and isinstance(new, tuple):
        if len(old) != len(new):
            return [f"{path}: {len(old)} items stored, {len(new)} re-derived"]
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _differences(a, b, f"{path}[{i}]")
        return out
    if isinstance(old, float) and isinstance(new, float) and old == new:
        return []
    return [] if old == new else [f"{path}: stored {old!r}, re-derived {new!r}"]


def reevaluate(workdir: Path, derived_runs: dict[tuple[str, str], RunResults] | None = None) -> int:
    """Compare every completed run of ``workdir``; return the number of runs that differ.

    ``derived_runs``, when given, receives each re-derived result keyed by
    ``(protocol, model)`` (the newest run of each pair).
    """
    wb = Workbench.open(workdir)
    failures = 0
    try:
        with wb.transaction(readonly=True) as session:
            for run in session.query(Run).order_by(Run.id):
                stored = stored_results(run)
                if stored is None:
                    continue
                pv = session.get(ProtocolVersion, run.protocol_version_id)
                assert pv is not None
                protocol = parsed_protocol(pv)
                readers = stored.supplementary.reader_columns
                if readers and not protocol.reference_standard.reader_label_columns:
                    # Release 0.1 found the readers' columns by name; the protocol names them now.
                    reference = protocol.reference_standard.model_copy(
                        update={"reader_label_columns": list(readers)}
                    )
                    protocol = protocol.model_copy(update={"reference_standard": reference})
                frame = case_frame(session, run.id, protocol)
                froc, froc_reason = None, ""
                if protocol.task is Task.DETECTION:
                    # from the run's stored lesions and matches, each file checked by its hash
                    lesions, matches = detection_frames(wb.workdir.runs_dir, run.run_uid, frame)
                    analysis = evaluate_detection(protocol, frame, lesions, matches)
                    evaluation, supplementary = analysis.evaluation, SupplementaryAnalyses()
                    froc, froc_reason = analysis.froc, analysis.froc_reason
                else:
                    evaluation = evaluate_endpoints(protocol, frame)
                    supplementary = supplementary_analysis(protocol, frame)
                derived = RunResults(
                    run_uid=run.run_uid,
                    context=stored.context,
                    workbench_version=stored.workbench_version,
                    surface_dice_tolerance_mm=stored.surface_dice_tolerance_mm,
                    accounting=CaseAccounting.from_frame(frame, n_cases=stored.accounting.n_cases),
                    evaluation=evaluation,
                    supplementary=supplementary,
                    froc=froc,
                    froc_reason=froc_reason,
                    schema_version=stored.schema_version,
                )
                if derived_runs is not None:
                    derived_runs[(stored.context.protocol, stored.context.model)] = derived
                diffs = _differences(stored, derived, run.run_uid)
                # What an earlier release did not store (a verdict's reason, a stratum's
                # standard error) is new information, not a change.
                # Schema version 1 kept a stratum's n but not its estimate's own n.
                diffs = [
                    d
                    for d in diffs
                    if ".verdict_reason: stored " not in d
                    and ".se: stored None" not in d
                    and not (
                        stored.schema_version == 1 and re.search(r"strata\[\d+\]\.estimate\.n:", d)
                    )
                ]
                # Release 0.1 stored a not-evaluable run as 'fail' in the run record; the
                # protocol's default now says so in the results too (with the reason).
                if (
                    stored.verdict is Verdict.NOT_EVALUABLE
                    and derived.verdict is Verdict.FAIL
                    and Verdict.parse(run.verdict) is Verdict.FAIL
                ):
                    diffs = [d for d in diffs if ".evaluation.verdict:" not in d]
                status = "identical" if not diffs else f"{len(diffs)} difference(s)"
                print(
                    f"{run.run_uid} {stored.context.protocol} {stored.context.model}: "
                    f"{stored.verdict.label} -> {derived.verdict.label}; {status}"
                )
                for line in diffs[:40]:
                    print(f"    {line}")
                failures += bool(diffs)
    finally:
        wb.close()
    return failures


_EXPECTED_REPORT_CHANGES = ("audit_trail", "audit_chain_head", "workbench_commit")


def _json_differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                out.append(f"{path}.{key}: only in the {'stored' if key in old else 'rebuilt'}")
            else:
                out += _json_differences(old[key], new[key], f"{path}.{key}")
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} items stored, {len(new)} rebuilt"]
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _json_differences(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [f"{path}: stored {str(old)[:80]!r}, rebuilt {str(new)[:80]!r}"]


def compare_reports(workdir: Path) -> int:
    """Rebuild every stored report's attachments; return the number of reports that differ."""
    from sqlalchemy import select

    from workbench.records.models import Report, Signature
    from workbench.reports import extract_attachments
    from workbench.reports.attachments import report_attachments
    from workbench.services.report_content import gather_report_inputs, report_content

    wb = Workbench.open(workdir)
    failures = 0
    try:
        with wb.transaction(readonly=True) as session:
            for report in session.scalars(select(Report).order_by(Report.id)):
                path = report.sealed_path or report.pdf_path
                if not path or not Path(path).is_file():
                    continue
                stored = extract_attachments(path)
                sealed = bool(report.sealed_path)
                signatures = list(
                    session.scalars(
                        select(Signature)
                        .where(
                            Signature.record_type == "report",
                            Signature.record_id == report.report_uid,
                        )
                        .order_by(Signature.id)
                    )
                )
                content = report_content(
                    gather_report_inputs(
                        session, report, final=sealed, signatures_list=signatures if sealed else []
                    )
                )
                rebuilt = {a.name: a.data for a in report_attachments(content)}
                diffs: list[str] = []
                for name in sorted(stored):
                    if stored[name] == rebuilt.get(name):
                        continue
                    if name.endswith(".json") and name in rebuilt:
                        diffs += _json_differences(
                            json.loads(stored[name]), json.loads(rebuilt[name]), name
                        )
                    else:
                        diffs.append(f"{name}: bytes differ")
                expected = [d for d in diffs if any(k in d for k in _EXPECTED_REPORT_CHANGES)]
                real = [d for d in diffs if d not in expected]
                print(
                    f"{report.report_uid} ({'sealed' if sealed else 'draft'}): "
                    + ("identical" if not real else f"{len(real)} difference(s)")
                    + (
                        f"; {len(expected)} expected (audit trail since, commit)"
                        if expected
                        else ""
                    )
                )
                for line in real[:40]:
                    print(f"    {line}")
                failures += bool(real)
    finally:
        wb.close()
    return failures


def _endpoint_differences(old: RunResults, new: RunResults) -> tuple[list[str], list[str]]:
    """Differences in what ``old`` evaluated, and the endpoints only ``new`` has."""
    diffs: list[str] = []
    # Release 0.1 left a run with a not-evaluable primary endpoint NOT EVALUABLE; it now
    # counts as the protocol's not_evaluable_counts_as says (default FAIL), with the reason.
    counted = old.verdict is Verdict.NOT_EVALUABLE and new.verdict is Verdict.FAIL
    if old.verdict is not new.verdict and not counted:
        diffs.append(f"verdict: {old.verdict.label} -> {new.verdict.label}")
    for field in ("n_cases", "n_completed", "n_failed", "n_excluded"):
        before, after = getattr(old.accounting, field), getattr(new.accounting, field)
        if before != after:
            diffs.append(f"accounting.{field}: {before} -> {after}")
    current = {e.endpoint_id: e for e in new.endpoints}
    for endpoint in old.endpoints:
        now = current.pop(endpoint.endpoint_id, None)
        if now is None:
            diffs.append(f"{endpoint.endpoint_id}: no longer evaluated")
            continue
        before = (
            endpoint.verdict,
            endpoint.estimate and dataclasses.astuple(endpoint.estimate)[:3],
        )
        after = (now.verdict, now.estimate and dataclasses.astuple(now.estimate)[:3])
        if before != after:
            diffs.append(f"{endpoint.endpoint_id}: {before} -> {after}")
        strata_now = {(s.factor, s.stratum): s for s in now.strata}
        for stratum in endpoint.strata:
            match = strata_now.get((stratum.factor, stratum.stratum))
            old_value = stratum.estimate and dataclasses.astuple(stratum.estimate)[:3]
            new_value = match and match.estimate and dataclasses.astuple(match.estimate)[:3]
            if match is None or (stratum.verdict, old_value) != (match.verdict, new_value):
                diffs.append(
                    f"{endpoint.endpoint_id} {stratum.factor}={stratum.stratum}: "
                    f"{stratum.verdict.label} {old_value} -> "
                    f"{'absent' if match is None else f'{match.verdict.label} {new_value}'}"
                )
    return diffs, sorted(current)


def compare_with_earlier(workdir: Path, earlier: Path) -> int:
    """Compare the workdir's re-derived runs with results stored by an earlier release."""
    derived: dict[tuple[str, str], RunResults] = {}
    reevaluate(workdir, derived)
    failures = 0
    for path in sorted(earlier.glob("run-results-*.json")):
        old = RunResults.from_dict(json.loads(path.read_text()))
        new = derived.get((old.context.protocol, old.context.model))
        if new is None:
            continue
        diffs, added = _endpoint_differences(old, new)
        estimate = next((e.estimate for e in new.endpoints if e.primary), None)
        figure = (
            ""
            if estimate is None
            else f" {estimate.value:.3f} [{estimate.ci_low:.3f}, {estimate.ci_high:.3f}]"
        )
        print(
            f"{path.name}: {old.context.protocol} {old.context.model}: "
            f"{old.verdict.label} -> {new.verdict.label}{figure}; "
            f"{len(old.endpoints)} endpoint(s) compared, "
            + ("identical" if not diffs else f"{len(diffs)} difference(s)")
            + (f"; added since: {', '.join(added)}" if added else "")
        )
        for line in diffs[:40]:
            print(f"    {line}")
        failures += bool(diffs)
    return failures


def main() -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--reports", action="store_true", help="also rebuild every report")
    parser.add_argument(
        "--against", type=Path, help="folder of results stored by an earlier release"
    )
    args = parser.parse_args()
    if args.against:
        failures = compare_with_earlier(args.workdir, args.against)
    else:
        failures = reevaluate(args.workdir)
    if args.reports:
        failures += compare_reports(args.workdir)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
