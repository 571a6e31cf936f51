"""Authorization: every guarded service action x every role, plus calls without an account,
from the service layer and from the CLI. The matrix ``permissions.PERMISSIONS`` is the
specification; a denied call raises PermissionDeniedError and is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import pytest
from sqlalchemy import func, select

from workbench import errors
from workbench.records.models import AuditEntry, Role
from workbench.records.permissions import PERMISSIONS, Action
from workbench.services import (
    accounts,
    adjudication,
    audit_trail,
    models,
    pacs_servers,
    protocols,
    reports,
    runs,
    studies,
    testsets,
)

Call = Callable[[Any, Any, harness.Pipeline, str], Any]


def _pw(role: str) -> str:
    return harness.ACCOUNTS[harness.ROLE_USER[role]][2]


#: One service call per guarded action (the permission is checked before anything else).
CALLS: dict[Action, Call] = {
    Action.TESTSET_IMPORT: lambda wb, a, p, r: testsets.import_test_set(
        wb, a, p.test_set_root, name=f"authz-{r}", workers=1
    ),
    Action.TESTSET_LOCK: lambda wb, a, p, r: testsets.lock_test_set(
        wb, a, harness.TEST_SET, password=_pw(r)
    ),
    Action.TESTSET_VERIFY: lambda wb, a, p, r: testsets.verify_test_set(wb, a, harness.TEST_SET),
    Action.MODEL_REGISTER: lambda wb, a, p, r: models.register_model(
        wb, a, p.model_path, harness.cls_spec(name=f"authz-{r}")
    ),
    Action.PROTOCOL_CREATE: lambda wb, a, p, r: protocols.add_protocol_version(
        wb, a, _protocol_file(p, r)
    ),
    Action.PROTOCOL_APPROVE: lambda wb, a, p, r: protocols.approve_protocol(
        wb, a, p.protocol_ref, password=_pw(r)
    ),
    Action.RUN_START: lambda wb, a, p, r: runs.validate(
        wb, a, protocol=p.protocol_ref, model=p.model_ref, test_set="no-such-set"
    ),
    Action.RUN_VIEW: lambda wb, a, p, r: adjudication.queue(wb, a, p.run_uid),
    Action.DISCREPANCY_ADJUDICATE: lambda wb, a, p, r: adjudication.adjudicate(
        wb, a, 999, decision="a_correct", comment="c", password=_pw(r)
    ),
    Action.REPORT_BUILD: lambda wb, a, p, r: reports.build_report(wb, a, p.run_uid),
    Action.REPORT_SIGN_AUTHOR: lambda wb, a, p, r: reports.sign_report(
        wb, a, p.report_uid, meaning="authored", password=_pw(r)
    ),
    Action.REPORT_SIGN_REVIEW: lambda wb, a, p, r: reports.sign_report(
        wb, a, p.report_uid, meaning="reviewed", password=_pw(r)
    ),
    Action.REPORT_SIGN_APPROVE: lambda wb, a, p, r: reports.sign_report(
        wb, a, p.report_uid, meaning="approved", password=_pw(r)
    ),
    Action.REPORT_SEAL: lambda wb, a, p, r: reports.seal_report(wb, a, p.report_uid),
    Action.AUDIT_VIEW: lambda wb, a, p, r: audit_trail.export_entries(wb, a),
    Action.AUDIT_EXPORT: lambda wb, a, p, r: audit_trail.write_export(
        wb, a, p.workdir.parent / f"export-{r}.csv"
    ),
    Action.AUDIT_VERIFY: lambda wb, a, p, r: audit_trail.write_checkpoint(
        wb, a, p.workdir.parent / f"checkpoint-{r}.json"
    ),
    Action.USER_MANAGE: lambda wb, a, p, r: accounts.list_users(wb, a),
    Action.STUDY_DESIGN: lambda wb, a, p, r: studies.add_study(wb, a, b"kind: reader_study"),
    Action.STUDY_READ: lambda wb, a, p, r: studies.open_reading(wb, a, "none@1", "unaided"),
    Action.STUDY_VIEW: lambda wb, a, p, r: studies.analyze_study(wb, a, "none@1"),
    Action.PACS_CONFIGURE: lambda wb, a, p, r: pacs_servers.add_server(
        wb, a, f"authz-{r}", pacs_servers.PacsServerConfig(url="http://127.0.0.1:1/dicom-web")
    ),
}

#: Actions in the matrix that no service guards, with why.
UNGUARDED = {
    Action.REPORT_VERIFY: "verify_report_file needs no account so that inspectors can run it",
}


def _protocol_file(pipe: harness.Pipeline, role: str) -> Path:
    path = pipe.workdir.parent / f"authz-{role}.yaml"
    path.write_text(harness.protocol_text(protocol_id=f"authz-{role}"))
    return path


def _denials(wb: Any) -> int:
    with wb.transaction(readonly=True) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action.like("%permission_denied%"))
            )
        )


def test_every_action_has_a_probe() -> None:
    assert set(CALLS) | set(UNGUARDED) == set(Action)


@pytest.mark.parametrize("action", list(CALLS), ids=lambda a: a.value)
def test_action_by_every_role(action: Action, wb_copy: harness.Pipeline) -> None:
    wb = harness.open_wb(wb_copy.workdir)
    try:
        for role in Role:
            actor = harness.login(wb, harness.ROLE_USER[role.value])
            allowed = action in PERMISSIONS[role]
            before = _denials(wb)
            try:
                CALLS[action](wb, actor, wb_copy, role.value)
                outcome: BaseException | None = None
            except errors.WorkbenchError as error:
                outcome = error
            if allowed:
                assert not isinstance(outcome, errors.PermissionDeniedError), (role, outcome)
            else:
                assert isinstance(outcome, errors.PermissionDeniedError), (role, outcome)
                assert _denials(wb) == before + 1, "a denied attempt must be audited"
    finally:
        wb.close()


@pytest.mark.parametrize("action", list(CALLS), ids=lambda a: a.value)
def test_forged_actor_without_account_is_refused(action: Action, wb_copy: harness.Pipeline) -> None:
    """An Actor for a username that has no account (no login happened) gets nowhere."""
    from workbench.services.context import Actor

    wb = harness.open_wb(wb_copy.workdir)
    try:
        forged = Actor(username="mallory", full_name="Mallory", role="qa")
        with pytest.raises(errors.AuthenticationError):
            CALLS[action](wb, forged, wb_copy, "qa")
    finally:
        wb.close()


def test_disabled_account_with_a_stale_actor_is_refused(wb_copy: harness.Pipeline) -> None:
    wb = harness.open_wb(wb_copy.workdir)
    try:
        stale = harness.login(wb, "qa2")
        accounts.disable_user(wb, harness.login(wb, "admin"), "qa2", reason="left the company")
        with pytest.raises(errors.AuthenticationError):
            testsets.verify_test_set(wb, stale, harness.TEST_SET)
    finally:
        wb.close()


#: CLI commands that act for a user: each refuses to run without credentials.
CLI_NEEDS_LOGIN = [
    ["testset", "import", "/nonexistent", "--name", "x"],
    ["testset", "lock", harness.TEST_SET],
    ["validate", "--protocol", "p", "--model", "m", "--testset", "t"],
    ["report", "build", "RUN-X"],
    ["report", "seal", "VR-X"],
    ["audit", "export", "--out", "/tmp/x.csv"],
    ["user", "list"],
]


@pytest.mark.slow
@pytest.mark.parametrize("args", CLI_NEEDS_LOGIN, ids=lambda a: "-".join(a[:2]))
def test_cli_refuses_without_credentials(args: list[str], built_pipeline: harness.Pipeline) -> None:
    done = harness.cli(built_pipeline.workdir, *args)
    assert done.returncode == 1
    assert "no user given" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_cli_denies_by_role(built_pipeline: harness.Pipeline, tmp_path: Path) -> None:
    pipe = harness.copy_workdir(built_pipeline, tmp_path / "wb")
    done = harness.cli(pipe.workdir, "user", "list", user="aud")
    assert done.returncode == 1 and "PermissionDeniedError" in done.stderr
    done = harness.cli(pipe.workdir, "report", "seal", pipe.report_uid, user="rev1")
    assert done.returncode == 1 and "PermissionDeniedError" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_results_need_run_view(built_pipeline: harness.Pipeline) -> None:
    import inspect

    assert "actor" in inspect.signature(runs.get_run).parameters
    wb = harness.open_wb(built_pipeline.workdir)
    admin = harness.login(wb, "admin")
    with pytest.raises(errors.PermissionDeniedError):
        runs.list_runs(wb, admin)
    with pytest.raises(errors.PermissionDeniedError):
        runs.get_run(wb, admin, built_pipeline.run_uid)
    auditor = harness.login(wb, "aud")
    assert runs.get_run(wb, auditor, built_pipeline.run_uid).run_uid == built_pipeline.run_uid
    wb.close()
