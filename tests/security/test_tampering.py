"""Attacks on a copy of a workdir: each is refused, or detected by a named command.

Every test starts from :func:`wb_copy` (a locked test set, a model, an approved
protocol, a completed run and a report signed by author, reviewer and approver)
and plays one attacker who can write to the database (and sometimes the files):
names that reach the file system, the blinding of reviewers, records changed
together with the column that describes them, signatures removed or renamed,
forged or rewritten audit entries, dropped triggers, missing keys.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import harness
import pytest

from workbench import errors
from workbench.errors import AuditChainError
from workbench.records import audit
from workbench.services import audit_trail, models, reports, runs, testsets

BAD_NAMES = [
    "../keys",
    "..",
    "/etc",
    "a/b",
    "line\nforged",
    "nul\x00byte",
    "bell\x07",
    "\u202eevil",
    "rtl\u202egpj.exe",
    " leading-space",
    "",
]


def _sql(pipe: harness.Pipeline, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    con = sqlite3.connect(pipe.workdir / "workbench.db")
    try:
        for statement in statements:
            if isinstance(statement, tuple):
                con.execute(*statement)
            else:
                con.execute(statement)
        con.commit()
    finally:
        con.close()


def _rows(pipe: harness.Pipeline, query: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(pipe.workdir / "workbench.db")
    try:
        return list(con.execute(query, args))
    finally:
        con.close()


def _triggers(pipe: harness.Pipeline) -> list[str]:
    return [
        sql for (sql,) in _rows(pipe, "select sql from sqlite_master where type = 'trigger'") if sql
    ]


def _drop_triggers(pipe: harness.Pipeline) -> list[str]:
    saved = _triggers(pipe)
    names = [n for (n,) in _rows(pipe, "select name from sqlite_master where type = 'trigger'")]
    _sql(pipe, *(f"DROP TRIGGER {name}" for name in names))
    return saved


def _audit_verify(pipe: harness.Pipeline) -> audit.ChainStatus:
    wb = harness.open_wb(pipe.workdir)
    try:
        return audit_trail.verify_audit_chain(wb)
    finally:
        wb.close()


def _audit_verify_fails(pipe: harness.Pipeline, match: str) -> str:
    with pytest.raises(AuditChainError, match=match) as info:
        _audit_verify(pipe)
    return str(info.value)


def _seal(pipe: harness.Pipeline) -> reports.ReportInfo:
    wb = harness.open_wb(pipe.workdir)
    try:
        return reports.seal_report(wb, harness.login(wb, "qa2"), pipe.report_uid)
    finally:
        wb.close()


def _verify_report(pipe: harness.Pipeline, path: str | Path) -> reports.ReportCheck:
    wb = harness.open_wb(pipe.workdir)
    try:
        return reports.verify_report_file(wb, path)
    finally:
        wb.close()


def _failed(check: reports.ReportCheck) -> dict[str, str]:
    return {name: detail for name, ok, detail in check.checks if not ok}


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("bad", BAD_NAMES, ids=ascii)
def test_model_names_that_would_leave_the_workdir_are_refused(
    bad: str, wb_copy: harness.Pipeline, tmp_path: Path
) -> None:
    keys_before = sorted(p.name for p in (wb_copy.workdir / "keys").iterdir())
    spec = harness.cls_spec(name="tiny-cls", version="9.9").model_copy(update={"name": bad})
    spec_v = harness.cls_spec(name="tiny-cls", version="9.9").model_copy(update={"version": bad})
    wb = harness.open_wb(wb_copy.workdir)
    try:
        for attempt in (spec, spec_v):
            with pytest.raises(errors.WorkbenchError, match="Invalid model"):
                models.register_model(wb, harness.login(wb, "qa1"), wb_copy.model_path, attempt)
    finally:
        wb.close()
    assert sorted(p.name for p in (wb_copy.workdir / "keys").iterdir()) == keys_before
    assert _rows(wb_copy, "select count(*) from models")[0][0] == 1
    _audit_verify(wb_copy)


def test_model_folder_reached_through_a_symlink_is_refused(
    wb_copy: harness.Pipeline, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (wb_copy.workdir / "models" / "linked").symlink_to(outside, target_is_directory=True)
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with pytest.raises(errors.ConfigurationError):
            models.register_model(
                wb, harness.login(wb, "qa1"), wb_copy.model_path, harness.cls_spec(name="linked")
            )
    finally:
        wb.close()
    assert (outside / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("bad", BAD_NAMES, ids=ascii)
def test_test_set_names_are_checked_at_import(bad: str, wb_copy: harness.Pipeline) -> None:
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with pytest.raises(errors.WorkbenchError, match="Invalid test-set name"):
            testsets.import_test_set(
                wb, harness.login(wb, "qa1"), wb_copy.test_set_root, name=bad, workers=1
            )
        names = [t.name for t in testsets.list_test_sets(wb)]
    finally:
        wb.close()
    assert names == [harness.TEST_SET]  # nothing to forge a line of `testset list` with


# --------------------------------------------------------------------------- blinding


def _open_discrepancy(pipe: harness.Pipeline, case_index: int = 0) -> int:
    """A discrepancy on one case of the run, stored and audited as a run stores it."""
    from sqlalchemy import select

    from workbench.records.models import CaseResult, Discrepancy, Run

    wb = harness.open_wb(pipe.workdir)
    try:
        with wb.transaction() as session:
            run = session.scalars(select(Run).where(Run.run_uid == pipe.run_uid)).one()
            cases = session.scalars(
                select(CaseResult.case_id)
                .where(CaseResult.run_id == run.id)
                .order_by(CaseResult.case_id)
            ).all()
            record = Discrepancy(
                run_id=run.id,
                case_id=cases[case_index],
                rule="score_disagrees",
                details={},
                blinding={"model": "A", "reference": "B"},
                status="open",
            )
            session.add(record)
            session.flush()
            audit.append(
                session,
                actor="qa1",
                action="discrepancy.create",
                record_type="discrepancy",
                record_id=record.id,
                new={"run": pipe.run_uid, "case_id": record.case_id, "rule": record.rule},
            )
            return int(record.id)
    finally:
        wb.close()


def _scores_and_verdicts(entries: list[dict[str, Any]], run_uid: str) -> tuple[list[Any], Any]:
    scores = [
        e["new_value"]["score"]
        for e in entries
        if e["action"] == "case.record" and str(e["record_id"]).startswith(run_uid)
    ]
    [verdict] = [
        e["new_value"]["verdict"]
        for e in entries
        if e["action"] == "run.complete" and e["record_id"] == run_uid
    ]
    return scores, verdict


def _stored_outcome(pipe: harness.Pipeline) -> list[str]:
    """What the trail stores about the run's outcome: verdict reason and results hashes."""
    [(reason, run_sha)] = _rows(
        pipe,
        "select json_extract(new_value, '$.verdict_reason'), "
        "json_extract(new_value, '$.results_sha256') from audit_log "
        "where action = 'run.complete' and record_id = ?",
        pipe.run_uid,
    )
    [(report_sha,)] = _rows(
        pipe,
        "select json_extract(new_value, '$.results_sha256') from audit_log "
        "where action = 'report.build' and record_id = ?",
        pipe.report_uid,
    )
    assert run_sha and report_sha
    return [v for v in (reason, run_sha, report_sha) if v]


def test_blinded_reviewer_sees_no_verdict_or_scores_in_the_audit_trail(
    wb_copy: harness.Pipeline, tmp_path: Path
) -> None:
    discrepancy = _open_discrepancy(wb_copy)
    wb = harness.open_wb(wb_copy.workdir)
    try:
        reviewer, auditor = harness.login(wb, "rev1"), harness.login(wb, "aud")
        scores, verdict = _scores_and_verdicts(
            audit_trail.export_entries(wb, reviewer), wb_copy.run_uid
        )
        assert scores and set(scores) == {audit.REDACTED}
        assert verdict == audit.REDACTED
        for_run = audit_trail.export_entries(wb, reviewer, record_id=wb_copy.run_uid)
        verdicts = [e["new_value"]["verdict"] for e in for_run if e["action"] == "run.complete"]
        assert verdicts == [audit.REDACTED]
        # Nothing else tells the outcome: the verdict's reason (empty for a pass, the failed
        # endpoint otherwise) and the results hashes are hidden wherever they are recorded.
        [complete] = [e for e in for_run if e["action"] == "run.complete"]
        assert complete["new_value"]["verdict_reason"] == audit.REDACTED
        assert {"verdict", "verdict_reason", "results_sha256"} <= set(complete["redacted"])
        for_report = audit_trail.export_entries(wb, reviewer, record_id=wb_copy.report_uid)
        [built] = [e for e in for_report if e["action"] == "report.build"]
        assert built["new_value"]["results_sha256"] == audit.REDACTED
        assert built["new_value"]["attachments"] == audit.REDACTED
        stored = _stored_outcome(wb_copy)
        shown = json.dumps(audit_trail.export_entries(wb, reviewer), ensure_ascii=False)
        assert [value for value in stored if value in shown] == []
        # Auditors (not adjudicating) see the stored values, and their export holds them.
        scores, verdict = _scores_and_verdicts(
            audit_trail.export_entries(wb, auditor), wb_copy.run_uid
        )
        assert audit.REDACTED not in scores and verdict in ("pass", "fail", "not_evaluable")
        out = tmp_path / "audit.json"
        audit_trail.write_export(wb, auditor, out, fmt="json")
        assert audit.REDACTED not in out.read_text()
        with pytest.raises(errors.PermissionDeniedError):  # reviewers cannot export at all
            audit_trail.write_export(wb, reviewer, tmp_path / "r.json", fmt="json")
    finally:
        wb.close()
    from workbench.services import adjudication

    _sql(wb_copy, "update discrepancies set status = 'adjudicated'")  # behind the services
    wb = harness.open_wb(wb_copy.workdir)
    try:
        scores, verdict = _scores_and_verdicts(
            audit_trail.export_entries(wb, harness.login(wb, "rev1")), wb_copy.run_uid
        )
        assert set(scores) == {audit.REDACTED} and verdict == audit.REDACTED  # still blinded
        _sql(wb_copy, "update discrepancies set status = 'open'")
        adjudication.adjudicate(
            wb,
            harness.login(wb, "rev1"),
            discrepancy,
            decision="both_acceptable",
            comment="both calls are defensible",
            password=harness.ACCOUNTS["rev1"][2],
        )
        after = audit_trail.export_entries(wb, harness.login(wb, "rev1"))
    finally:
        wb.close()
    scores, verdict = _scores_and_verdicts(after, wb_copy.run_uid)
    shown_after = json.dumps(after, ensure_ascii=False)
    assert audit.REDACTED not in scores and verdict != audit.REDACTED  # shown again
    assert all(value in shown_after for value in _stored_outcome(wb_copy))


# --------------------------------------------------------------------------- anchors


def test_changed_run_verdict_is_refused_and_named_by_audit_verify(
    wb_copy: harness.Pipeline,
) -> None:
    [(verdict,)] = _rows(wb_copy, "select verdict from runs where run_uid = ?", wb_copy.run_uid)
    forged = "fail" if verdict == "pass" else "pass"
    _sql(wb_copy, ("update runs set verdict = ? where run_uid = ?", (forged, wb_copy.run_uid)))
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with pytest.raises(errors.IntegrityError, match="verdict"):
            runs.get_run(wb, harness.login(wb, "qa1"), wb_copy.run_uid)
    finally:
        wb.close()
    message = _audit_verify_fails(wb_copy, "verdict")
    assert wb_copy.run_uid in message


def test_swapped_model_file_with_rewritten_file_list_is_detected(
    wb_copy: harness.Pipeline, tmp_path: Path
) -> None:
    from workbench.inference.registry import hash_model_files, model_digest

    [(storage,)] = _rows(wb_copy, "select storage_path from models")
    folder = tmp_path / "swapped"
    shutil.copytree(Path(storage).parent, folder)
    swapped = folder / Path(storage).name
    harness.tiny_model(swapped, body="other")  # a different model in the same place
    swapped.write_bytes(swapped.read_bytes() + b"\0")
    hashes = hash_model_files(swapped)
    _sql(
        wb_copy,
        (
            "update models set storage_path = ?, files = ?, digest = ?",
            (str(swapped), json.dumps(hashes), model_digest(hashes)),
        ),
    )
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with pytest.raises(errors.ModelIntegrityError):
            models.verify_model(wb, wb_copy.model_ref)
        with pytest.raises(errors.ModelIntegrityError, match="tiny-cls@1.0"):
            models.registered_files(wb, wb_copy.model_ref)
        with pytest.raises(errors.ModelIntegrityError):  # the run is refused, before inference
            runs.validate(
                wb,
                harness.login(wb, "qa1"),
                protocol=wb_copy.protocol_ref,
                model=wb_copy.model_ref,
                test_set=harness.TEST_SET,
                device="cpu",
            )
    finally:
        wb.close()
    assert _rows(wb_copy, "select count(*) from runs")[0][0] == 1  # no run on the swapped model
    refused = [e for e in _entries(wb_copy) if e["action"] == "run.refused"]
    assert refused and "model changed" in refused[-1]["new_value"]
    _audit_verify_fails(wb_copy, "model tiny-cls@1.0")


def test_rewritten_manifest_after_changed_labels_is_detected(
    wb_copy: harness.Pipeline, tmp_path: Path
) -> None:
    from workbench.dicom.manifest import Manifest

    root = tmp_path / "set"
    shutil.copytree(wb_copy.test_set_root, root)
    labels = root / "reference" / "labels.csv"
    labels.write_text(labels.read_text().replace(",1", ",0"))
    [(text,)] = _rows(wb_copy, "select manifest_json from test_sets")
    entries = dict(Manifest.from_json(text).entries)
    entries["reference/labels.csv"] = hashlib.sha256(labels.read_bytes()).hexdigest()
    forged = Manifest.from_entries(entries)
    _sql(
        wb_copy,
        (
            "update test_sets set root_path = ?, manifest_json = ?, manifest_digest = ?",
            (str(root), forged.to_json(), forged.digest),
        ),
    )
    wb = harness.open_wb(wb_copy.workdir)
    try:
        qa = harness.login(wb, "qa1")
        with pytest.raises(errors.IntegrityError, match="manifest digest"):
            testsets.verify_test_set(wb, qa, harness.TEST_SET)
        with pytest.raises(errors.IntegrityError, match="manifest digest"):
            runs.validate(
                wb,
                qa,
                protocol=wb_copy.protocol_ref,
                model=wb_copy.model_ref,
                test_set=harness.TEST_SET,
                device="cpu",
            )
    finally:
        wb.close()
    _audit_verify_fails(wb_copy, f"test_set {harness.TEST_SET}")


def test_edited_protocol_text_with_matching_hash_column_is_refused(
    wb_copy: harness.Pipeline,
) -> None:
    [(text,)] = _rows(wb_copy, "select yaml_text from protocol_versions")
    edited = text.replace("0.7", "0.1") + "\n# relaxed\n"
    _sql(
        wb_copy,
        (
            "update protocol_versions set yaml_text = ?, sha256 = ?",
            (edited, hashlib.sha256(edited.encode()).hexdigest()),
        ),
    )
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with pytest.raises(errors.IntegrityError, match="text SHA-256"):
            runs.validate(
                wb,
                harness.login(wb, "qa1"),
                protocol=wb_copy.protocol_ref,
                model=wb_copy.model_ref,
                test_set=harness.TEST_SET,
                device="cpu",
            )
    finally:
        wb.close()
    _audit_verify_fails(wb_copy, "protocol_version")


def test_resealed_changed_report_with_updated_hash_column_is_invalid(
    wb_copy: harness.Pipeline, tmp_path: Path
) -> None:
    from workbench.reports import seal_pdf
    from workbench.reports.keys import ensure_signing_identity

    info = _seal(wb_copy)
    assert _verify_report(wb_copy, info.sealed_path or "").valid
    assert info.pdf_path
    forged = tmp_path / "forged.pdf"
    sha = seal_pdf(info.pdf_path, forged, ensure_signing_identity(wb_copy.workdir / "keys"))
    shutil.copy2(forged, info.sealed_path or "")
    _sql(wb_copy, ("update reports set sealed_sha256 = ?", (sha,)))
    check = _verify_report(wb_copy, info.sealed_path or "")
    assert not check.valid
    assert "audited hashes" in _failed(check)
    _audit_verify_fails(wb_copy, "sealed_sha256 column")


def test_raised_role_and_re_enabled_account_are_named_by_audit_verify(
    wb_copy: harness.Pipeline,
) -> None:
    from workbench.services import accounts

    wb = harness.open_wb(wb_copy.workdir)
    try:
        accounts.disable_user(wb, harness.login(wb, "admin"), "aud", reason="left the company")
    finally:
        wb.close()
    _audit_verify(wb_copy)  # changes made through the services are anchored
    _sql(
        wb_copy,
        "update users set role = 'admin' where username = 'rev1'",
        "update users set disabled = 0 where username = 'aud'",
    )
    wb = harness.open_wb(wb_copy.workdir)
    try:  # the raised role grants no sign-in, and the refusal is audited
        for user in ("rev1", "aud"):
            with pytest.raises(errors.IntegrityError, match=f"Account '{user}' differs"):
                harness.login(wb, user)
        with pytest.raises(errors.IntegrityError, match="role is 'admin'"):
            accounts.open_session(wb, "rev1", harness.ACCOUNTS["rev1"][2])
    finally:
        wb.close()
    refused = [e for e in _entries(wb_copy) if e["action"] == "security.login_refused"]
    assert [json.loads(e["new_value"])["fields"] for e in refused] == [
        ["role"],
        ["disabled"],
        ["role"],
    ]
    message = _audit_verify_fails(wb_copy, "user rev1")
    assert "role is 'admin', but the audited value" in message and "'reviewer'" in message
    assert "user aud" in message and "disabled is False" in message
    [(aud,)] = _rows(wb_copy, "select id from users where username = 'aud'")
    _sql(
        wb_copy,
        ("delete from password_history where user_id = ?", (aud,)),
        ("delete from user_sessions where user_id = ?", (aud,)),
        ("delete from users where id = ?", (aud,)),
    )
    _audit_verify_fails(wb_copy, rf"user aud \(id {aud}\): row is none")


def test_signed_in_account_whose_role_is_raised_in_the_database_acts_no_more(
    wb_copy: harness.Pipeline,
) -> None:
    """A role raised under an open session: the next action on its authority is refused."""
    from workbench.services import accounts

    wb = harness.open_wb(wb_copy.workdir)
    try:
        reviewer = harness.login(wb, "rev1")
        _sql(wb_copy, "update users set role = 'admin' where username = 'rev1'")
        with pytest.raises(errors.IntegrityError, match="role is 'admin', audited 'reviewer'"):
            accounts.disable_user(wb, reviewer, "aud", reason="not on a reviewer's authority")
    finally:
        wb.close()
    assert not [e for e in _entries(wb_copy) if e["action"] == "user.disable"]


def test_case_result_changed_or_deleted_is_named_by_audit_verify(
    wb_copy: harness.Pipeline,
) -> None:
    [(case_id, score)] = _rows(
        wb_copy, "select case_id, score from case_results order by case_id limit 1"
    )
    _sql(
        wb_copy,
        ("update case_results set score = ? where case_id = ?", (1.0 - score, case_id)),
        ("update case_results set mask_sha256 = ? where case_id <> ?", ("0" * 64, case_id)),
    )
    message = _audit_verify_fails(wb_copy, f"case_result {wb_copy.run_uid}/{case_id}: score")
    assert "mask_sha256" in message
    _sql(wb_copy, ("delete from case_results where case_id = ?", (case_id,)))
    message = _audit_verify_fails(wb_copy, f"case_result {wb_copy.run_uid}/{case_id}: row")


def test_discrepancy_status_and_decision_changed_are_named_by_audit_verify(
    wb_copy: harness.Pipeline,
) -> None:
    from sqlalchemy import select

    from workbench.records import anchors
    from workbench.records.models import Run
    from workbench.services import adjudication

    decided, still_open = _open_discrepancy(wb_copy, 0), _open_discrepancy(wb_copy, 1)
    wb = harness.open_wb(wb_copy.workdir)
    try:
        status = adjudication.adjudicate(
            wb,
            harness.login(wb, "rev1"),
            decided,
            decision="a_correct",
            comment="A follows the lesion margin",
            password=harness.ACCOUNTS["rev1"][2],
        )
    finally:
        wb.close()
    assert status == "adjudicated"
    _audit_verify(wb_copy)  # decided through the service: nothing differs
    _sql(
        wb_copy,
        ("update discrepancies set status = 'adjudicated' where id = ?", (still_open,)),
        ("update adjudications set decision = 'b_correct' where discrepancy_id = ?", (decided,)),
    )
    message = _audit_verify_fails(wb_copy, f"discrepancy {still_open} ")
    assert "status is 'adjudicated', but the audited value" in message and "'open'" in message
    assert f"adjudication {decided} " in message and "decision is 'b_correct'" in message
    wb = harness.open_wb(wb_copy.workdir)
    try:  # for the gates: the row says adjudicated, the reviewers' audited decisions do not
        with wb.transaction(readonly=True) as session:
            run = session.scalars(select(Run).where(Run.run_uid == wb_copy.run_uid)).one()
            unresolved = [d.id for d in anchors.unresolved_discrepancies(session, run)]
        # the approval and sealing gates and the reviewers' queue count it as open
        pending = adjudication.pending_count(wb, wb_copy.run_uid)
    finally:
        wb.close()
    assert unresolved == [still_open]
    assert pending == 1
    _sql(wb_copy, ("delete from discrepancies where id = ?", (still_open,)))
    _audit_verify_fails(wb_copy, f"discrepancy {still_open} .*: row is none")


# --------------------------------------------------------------------------- signatures


def test_deleted_review_and_approval_signatures_are_detected(wb_copy: harness.Pipeline) -> None:
    info = _seal(wb_copy)
    saved = _drop_triggers(wb_copy)
    _sql(
        wb_copy,
        "delete from signatures where record_type = 'report' "
        "and meaning in ('reviewed', 'approved')",
    )
    check = _verify_report(wb_copy, info.sealed_path or "")
    failed = _failed(check)
    assert not check.valid
    assert "required signatures" in failed and "embedded signature record" in failed
    _audit_verify_fails(wb_copy, "append-only tables")
    _sql(wb_copy, *saved)  # even with the triggers put back
    message = _audit_verify_fails(wb_copy, "signature")
    assert "a reviewed signature by rev1" in message and "a approved signature" in message


def test_renamed_approver_with_recomputed_hash_is_detected(wb_copy: harness.Pipeline) -> None:
    from sqlalchemy import select

    from workbench.records.models import Signature
    from workbench.records.signatures import signature_digest

    info = _seal(wb_copy)
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with wb.transaction(readonly=True) as session:
            row = session.scalars(
                select(Signature).where(
                    Signature.meaning == "approved", Signature.record_type == "report"
                )
            ).one()
            session.expunge(row)
    finally:
        wb.close()
    row.printed_name, row.username = "Quinn Avery", "qa1"
    saved = _drop_triggers(wb_copy)
    _sql(
        wb_copy,
        (
            "update signatures set printed_name = ?, username = ?, signature_sha256 = ? "
            "where id = ?",
            (row.printed_name, row.username, signature_digest(row), row.id),
        ),
        *saved,
    )
    check = _verify_report(wb_copy, info.sealed_path or "")
    failed = _failed(check)
    assert not check.valid, check.checks
    assert any(name.startswith("e-signature approved") for name in failed)
    assert "embedded signature record" in failed
    assert "separation of duties (approved)" in failed  # the author now "approved" it
    _audit_verify_fails(wb_copy, "printed_name")


# --------------------------------------------------------------------------- keyed chain


def _entries(pipe: harness.Pipeline) -> list[dict[str, Any]]:
    columns = [
        "seq",
        "ts",
        "actor",
        "action",
        "record_type",
        "record_id",
        "old_value",
        "new_value",
        "reason",
        "prev_hash",
        "entry_hash",
    ]
    return [
        dict(zip(columns, row, strict=True))
        for row in _rows(pipe, f"select {', '.join(columns)} from audit_log order by seq")
    ]


def _rechain(pipe: harness.Pipeline, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole trail from ``rows`` with correct links and hashes (as a forger would)."""
    from datetime import UTC, datetime

    from workbench.records.models import AuditEntry

    columns = ("seq", "ts", "actor", "action", "record_type", "record_id", "old_value",
               "new_value", "reason", "prev_hash", "entry_hash")  # fmt: skip
    prev = audit.GENESIS_HASH
    rewritten = []
    for seq, row in enumerate(rows, start=1):
        entry = AuditEntry(
            seq=seq,
            ts=datetime.fromisoformat(row["ts"]).replace(tzinfo=UTC),
            actor=row["actor"],
            action=row["action"],
            record_type=row["record_type"],
            record_id=row["record_id"],
            old_value=json.loads(row["old_value"]) if row["old_value"] else None,
            new_value=json.loads(row["new_value"]) if row["new_value"] else None,
            reason=row["reason"],
            prev_hash=prev,
        )
        rewritten.append(
            {**row, "seq": seq, "prev_hash": prev, "entry_hash": audit.entry_hash(entry)}
        )
        prev = rewritten[-1]["entry_hash"]
    saved = _drop_triggers(pipe)
    insert = (
        f"insert into audit_log ({', '.join(columns)}) values ({', '.join('?' * len(columns))})"
    )
    _sql(
        pipe,
        "delete from audit_log",
        *((insert, tuple(r[c] for c in columns)) for r in rewritten),
        *saved,
    )


def _insert_chained(pipe: harness.Pipeline, **fields: Any) -> int:
    """INSERT one correctly chained entry after the head (no trigger stands in the way)."""
    from datetime import UTC, datetime

    from workbench.records.models import AuditEntry

    last = _entries(pipe)[-1]
    entry = AuditEntry(
        seq=last["seq"] + 1,
        ts=datetime.fromisoformat(last["ts"]).replace(tzinfo=UTC),
        old_value=None,
        reason=None,
        prev_hash=last["entry_hash"],
        **fields,
    )
    digest = audit.entry_hash(entry)
    _sql(
        pipe,
        (
            "insert into audit_log (seq, ts, actor, action, record_type, record_id, old_value, "
            "new_value, reason, prev_hash, entry_hash) values (?, ?, ?, ?, ?, ?, null, ?, null, "
            "?, ?)",
            (
                entry.seq,
                last["ts"],
                entry.actor,
                entry.action,
                entry.record_type,
                entry.record_id,
                json.dumps(entry.new_value),
                entry.prev_hash,
                digest,
            ),
        ),
    )
    return int(entry.seq)


def test_forged_entry_inserted_after_the_newest_checkpoint_is_detected(
    wb_copy: harness.Pipeline,
) -> None:
    [(user_id,)] = _rows(wb_copy, "select id from users where username = 'rev1'")
    [(state,)] = _rows(
        wb_copy,
        "select new_value from audit_log where action = 'user.create' and record_id = ?",
        str(user_id),
    )
    _sql(wb_copy, "update users set role = 'admin' where username = 'rev1'")
    _audit_verify_fails(wb_copy, "user rev1")
    # The forger also appends a correctly chained entry that "records" the new role ...
    seq = _insert_chained(
        wb_copy,
        actor="admin",
        action="user.reset_password",
        record_type="user",
        record_id=str(user_id),
        new_value={**json.loads(state), "role": "admin"},
    )
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with wb.transaction(readonly=True) as session:
            assert audit.verify_chain(session).count == seq  # the hash chain alone is fooled
    finally:
        wb.close()
    # ... but the workbench signs a checkpoint straight after every such step.
    message = _audit_verify_fails(wb_copy, f"Audit entry {seq} .user.reset_password on user")
    assert "not covered by a signed checkpoint" in message


def test_signed_checkpoints_are_made_and_audited_automatically(wb_copy: harness.Pipeline) -> None:
    status = _audit_verify(wb_copy)
    recorded = [e for e in _entries(wb_copy) if e["action"] == audit.CHECKPOINT_ACTION]
    assert status.checkpoints >= 4  # lock, approval, three report signatures, run completion
    assert status.checkpoints == len(recorded)
    assert 0 < status.covered <= status.count


def test_forged_entry_inside_a_rechained_trail_is_detected(wb_copy: harness.Pipeline) -> None:
    rows = _entries(wb_copy)
    forged = {**rows[3], "actor": "mallory", "action": "user.note", "reason": None}
    _rechain(wb_copy, [*rows[:4], forged, *rows[4:]])
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with wb.transaction(readonly=True) as session:
            audit.verify_chain(session)  # the hash chain alone is fooled ...
    finally:
        wb.close()
    _audit_verify_fails(wb_copy, "signed checkpoint")  # ... the keyed checkpoints are not


def test_deleted_or_forged_checkpoints_and_dropped_triggers_are_detected(
    wb_copy: harness.Pipeline,
) -> None:
    saved = _drop_triggers(wb_copy)
    _audit_verify_fails(wb_copy, "audit_checkpoints_no_update")  # the triggers are checked
    [(last,)] = _rows(wb_copy, "select max(id) from audit_checkpoints")
    _sql(wb_copy, ("delete from audit_checkpoints where id = ?", (last,)), *saved)
    _audit_verify_fails(wb_copy, "missing from audit_checkpoints")


def test_checkpoint_with_a_forged_signature_is_detected(wb_copy: harness.Pipeline) -> None:
    saved = _drop_triggers(wb_copy)
    _sql(wb_copy, "update audit_checkpoints set entry_count = entry_count - 1", *saved)
    _audit_verify_fails(wb_copy, "not signed by the workbench")


@pytest.mark.slow
def test_cli_audit_verify_names_what_differs(wb_copy: harness.Pipeline) -> None:
    done = harness.cli(wb_copy.workdir, "audit", "verify")
    assert done.returncode == 0, done.stderr
    assert "signed checkpoints:" in done.stdout and "append-only triggers in place" in done.stdout
    [(anchored,)] = _rows(
        wb_copy,
        "select json_extract(new_value, '$.verdict') from audit_log where action = 'run.complete'",
    )
    forged = "pass" if anchored != "pass" else "fail"
    _sql(wb_copy, ("update runs set verdict = ?", (forged,)))
    done = harness.cli(wb_copy.workdir, "audit", "verify")
    assert done.returncode == 1
    assert "verdict" in done.stderr and wb_copy.run_uid in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- keys and inputs


def test_report_verify_without_keys_is_an_error_and_creates_none(
    wb_copy: harness.Pipeline,
) -> None:
    info = _seal(wb_copy)
    shutil.rmtree(wb_copy.workdir / "keys")
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with pytest.raises(errors.ConfigurationError, match="no workbench signing identity"):
            reports.verify_report_file(wb, info.sealed_path or "")
    finally:
        wb.close()
    assert not (wb_copy.workdir / "keys").exists() or not any((wb_copy.workdir / "keys").iterdir())


def test_untrusted_record_ids_are_bounded_and_printable(wb_copy: harness.Pipeline) -> None:
    hostile = "\u202e" + "VR-" + "x" * 3000 + "\n\x1b[2J"
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with wb.transaction() as session:
            entry = audit.append(
                session,
                actor="system",
                action="report.verify",
                record_type="report",
                record_id=hostile,
                new={"valid": False},
            )
            stored = entry.record_id
    finally:
        wb.close()
    assert stored is not None and len(stored) <= 128
    assert stored.isprintable() and "\u202e" not in stored and stored.endswith("...")
    _audit_verify(wb_copy)


def test_report_verify_of_a_pdf_with_a_hostile_report_id_audits_a_bounded_id(
    wb_copy: harness.Pipeline, tmp_path: Path
) -> None:
    import io

    from generate_corpus import pdf_from_elsewhere
    from pyhanko.pdf_utils.embed import EmbeddedFileObject, FileSpec, embed_file
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    hostile = "\u202e" + "VR-" + "A" * 3000 + "\n"
    plain = pdf_from_elsewhere(tmp_path / "plain.pdf")
    writer = IncrementalPdfFileWriter(io.BytesIO(plain.read_bytes()))
    data = json.dumps({"report_id": hostile}).encode()
    stream = EmbeddedFileObject.from_file_data(writer, data=data, mime_type="application/json")
    embed_file(writer, FileSpec(file_spec_string="results.json", embedded_data=stream))
    crafted = tmp_path / "crafted.pdf"
    with crafted.open("wb") as handle:
        writer.write(handle)
    check = _verify_report(wb_copy, crafted)
    assert not check.valid
    assert "\u202e" not in check.reason and len(check.reason) < 1000
    [entry] = [e for e in _entries(wb_copy) if e["action"] == "report.verify"]
    assert len(entry["record_id"]) <= 128 and "\u202e" not in entry["record_id"]
    assert "\u202e" not in entry["new_value"] and "\\u202e" not in entry["new_value"]
    _audit_verify(wb_copy)
