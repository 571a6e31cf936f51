"""Administrator-configured PACS servers: permissions, audit, versions, secrets never stored.

Runs on SQLite and, when ``WORKBENCH_TEST_PG_URL`` is set, on a PostgreSQL database
of its own (created and dropped here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_team import PASSWORDS, ROLES, Team
from sqlalchemy import create_engine, make_url, text

from workbench.errors import (
    DicomWebError,
    DuplicateError,
    NotFoundError,
    PermissionDeniedError,
    WorkflowError,
)
from workbench.services import accounts, audit_trail
from workbench.services.context import Workbench
from workbench.services.pacs_servers import (
    PacsAuthKind,
    PacsProtocol,
    PacsServerConfig,
    PacsServerStatus,
    StudyQuery,
    add_server,
    check_connection,
    connect,
    dimse_node,
    export_run_to,
    list_servers,
    replace_config,
    retire_server,
    server_history,
    update_server,
)

PG_URL = os.environ.get("WORKBENCH_TEST_PG_URL")
SECRET = "Tr0ub4dor&3-never-stored"  # the value the environment variable holds
ENV = "WB_TEST_PACS_PASSWORD"


def _team(root: Path, db_url: str | None) -> Team:
    wb = Workbench.open(root, db_url)
    accounts.bootstrap_admin(
        wb, username="admin", full_name="Ada Admin", password=PASSWORDS["admin"]
    )
    admin = accounts.login(wb, "admin", PASSWORDS["admin"])
    for username, role in ROLES.items():
        accounts.create_user(
            wb,
            admin,
            username=username,
            full_name=f"{username.upper()} Person",
            role=role,
            password=PASSWORDS[username],
            must_change_password=False,
        )
    return Team(wb=wb, actors={u: accounts.login(wb, u, p) for u, p in PASSWORDS.items()})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def crew(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Team]:
    """A fresh workbench with one account per role, on SQLite or on PostgreSQL."""
    if request.param == "sqlite":
        made = _team(tmp_path / "wb", None)
        yield made
        made.wb.close()
        return
    if not PG_URL:
        pytest.skip("WORKBENCH_TEST_PG_URL is not set (see scripts/pg_test_server.sh)")
    name = f"wb_test_pacs_servers_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    made = _team(tmp_path / "wb", url)
    try:
        yield made
    finally:
        made.wb.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _basic(**changes: object) -> PacsServerConfig:
    config = PacsServerConfig(
        url="https://pacs.example.org/dicom-web/",
        auth_kind="basic",
        username="wb-reader",
        secret_env=ENV,
    )
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def _dump(team: Team) -> str:
    """Every row of the server table and of the audit trail, as text."""
    with team.wb.transaction(readonly=True) as session:
        rows = session.execute(text("SELECT * FROM pacs_servers")).all()
        trail = session.execute(text("SELECT * FROM audit_log")).all()
    return json.dumps([list(map(str, r)) for r in [*rows, *trail]])


def _entries(team: Team, name: str) -> list[dict]:
    return [
        e
        for e in audit_trail.export_entries(team.wb, team["aud"], record_id=name)
        if e["record_type"] == "pacs_server"
    ]


def test_add_update_retire_are_versions_with_audit(
    crew: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, SECRET)
    added = add_server(crew.wb, crew["admin"], "main-pacs", _basic())
    assert (added.name, added.version, added.status) == ("main-pacs", 1, PacsServerStatus.ACTIVE)
    assert added.config.url == "https://pacs.example.org/dicom-web"  # normalized
    assert added.config.auth_kind is PacsAuthKind.BASIC and added.config.verify_tls
    assert added.secret_source == f"user wb-reader, password in ${ENV}"

    with pytest.raises(WorkflowError, match="reason"):
        update_server(crew.wb, crew["admin"], "main-pacs", _basic(), reason=" ")
    with pytest.raises(WorkflowError, match="unchanged"):
        update_server(crew.wb, crew["admin"], "main-pacs", _basic(), reason="same")
    changed = update_server(
        crew.wb,
        crew["admin"],
        "main-pacs",
        replace_config(added, url="https://pacs2.example.org/dicom-web"),
        reason="moved to the new PACS host",
    )
    assert changed.version == 2 and changed.reason == "moved to the new PACS host"
    retired = retire_server(crew.wb, crew["admin"], "main-pacs", reason="decommissioned")
    assert retired.version == 3 and retired.status is PacsServerStatus.RETIRED
    assert retired.config == changed.config

    history = server_history(crew.wb, crew["admin"], "main-pacs")
    assert [(h.version, h.status.value) for h in history] == [
        (1, "active"),
        (2, "active"),
        (3, "retired"),
    ]
    # Version 1 is still exactly what was first configured: nothing was overwritten.
    assert history[0].config == added.config and history[0].created_by == "admin"
    assert list_servers(crew.wb, crew["qa1"]) == []
    assert [s.version for s in list_servers(crew.wb, crew["admin"], include_retired=True)] == [3]

    entries = _entries(crew, "main-pacs")
    assert [e["action"] for e in entries] == [
        "pacs_server.add",
        "pacs_server.update",
        "pacs_server.retire",
    ]
    assert entries[0]["new_value"]["secret_env"] == ENV and entries[0]["old_value"] is None
    assert entries[1]["old_value"]["url"] == "https://pacs.example.org/dicom-web"
    assert entries[1]["new_value"]["url"] == "https://pacs2.example.org/dicom-web"
    assert entries[1]["reason"] == "moved to the new PACS host"
    assert entries[2]["new_value"]["status"] == "retired"
    assert SECRET not in _dump(crew)
    audit_trail.verify_audit_chain(crew.wb)

    with pytest.raises(WorkflowError, match="retired"):
        update_server(crew.wb, crew["admin"], "main-pacs", _basic(), reason="bring back")
    with pytest.raises(WorkflowError, match="retired"):
        connect(crew.wb, crew["qa1"], "main-pacs")
    with pytest.raises(DuplicateError, match="never reused"):
        add_server(crew.wb, crew["admin"], "main-pacs", _basic())


def test_the_table_refuses_update_and_delete(crew: Team) -> None:
    add_server(crew.wb, crew["admin"], "ro", PacsServerConfig(url="http://127.0.0.1:1/dicom-web"))
    for statement in (
        "UPDATE pacs_servers SET url = 'http://evil.example/dicom-web'",
        "DELETE FROM pacs_servers",
    ):
        with pytest.raises(Exception, match="append-only|refuse"):
            with crew.wb.transaction() as session:
                session.execute(text(statement))
    [only] = list_servers(crew.wb, crew["admin"])
    assert only.config.url == "http://127.0.0.1:1/dicom-web"


@pytest.mark.parametrize("user", ["qa1", "rev1", "aud"])
def test_only_administrators_configure(crew: Team, user: str) -> None:
    before = len(audit_trail.export_entries(crew.wb, crew["aud"]))
    with pytest.raises(PermissionDeniedError, match="pacs.configure"):
        add_server(crew.wb, crew[user], "x", PacsServerConfig(url="http://127.0.0.1:1/x"))
    denied = audit_trail.export_entries(crew.wb, crew["aud"])[before:]
    assert [e["action"] for e in denied] == ["security.permission_denied"]
    assert denied[0]["new_value"]["action"] == "pacs.configure"


def test_who_may_use_configured_servers(crew: Team) -> None:
    add_server(crew.wb, crew["admin"], "anon", PacsServerConfig(url="http://127.0.0.1:1/dicom-web"))
    assert [s.name for s in list_servers(crew.wb, crew["qa1"])] == ["anon"]
    assert connect(crew.wb, crew["qa1"], "anon").public_url == "http://127.0.0.1:1/dicom-web"
    for user in ("rev1", "aud"):
        with pytest.raises(PermissionDeniedError):
            list_servers(crew.wb, crew[user])
        with pytest.raises(PermissionDeniedError):
            connect(crew.wb, crew[user], "anon")
    with pytest.raises(PermissionDeniedError):
        server_history(crew.wb, crew["qa1"], "anon")
    with pytest.raises(NotFoundError, match="Configured: anon"):
        connect(crew.wb, crew["qa1"], "other")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (_basic(secret_env=SECRET), "NAME of an environment variable"),
        (_basic(url=f"https://reader:{SECRET}@pacs.example.org/dicom-web"), "Credentials in"),
        (_basic(url="ftp://pacs.example.org/"), "http\\(s\\) DICOMweb root URL"),
        (_basic(url="https://pacs.example.org/dicom-web?token=1"), "without query"),
        (_basic(auth_kind="kerberos"), "one of \\['none', 'basic', 'bearer'\\]"),
        (_basic(username=None), "needs the user name"),
        (_basic(username="a:b"), "without ':'"),
        (_basic(secret_env=None), "needs the name of the environment variable"),
        (_basic(auth_kind="none"), "takes no user name"),
        (_basic(auth_kind="bearer"), "takes no user name"),
        (_basic(ca_bundle="/no/such/ca.pem"), "existing PEM file"),
        (_basic(credentials_file="relative/creds.json", username=None, secret_env=None), "abs"),
        (_basic(protocol="dicom"), "protocol to be one of \\['dicomweb', 'dimse'\\]"),
        (_basic(calling_ae="WORKBENCH"), "calling AE title belongs to a DIMSE node"),
        (PacsServerConfig(url="ORTHANC-127.0.0.1:4242", protocol="dimse"), "AE@HOST:PORT"),
        (PacsServerConfig(url="https://pacs.example.org/dicom-web", protocol="dimse"), "AE@HOST"),
        (_basic(url="ORTHANC@pacs.example.org:4242", protocol="dimse"), "takes no user name"),
        (
            PacsServerConfig(url="ORTHANC@h:4242", protocol="dimse", verify_tls=False),
            "TLS settings do not apply",
        ),
        (
            PacsServerConfig(url="ORTHANC@h:4242", protocol="dimse", calling_ae="X" * 17),
            "calling AE title of 1-16",
        ),
    ],
)
def test_bad_configuration_is_one_clear_error(
    crew: Team, config: PacsServerConfig, expected: str
) -> None:
    with pytest.raises(WorkflowError, match=expected) as caught:
        add_server(crew.wb, crew["admin"], "bad", config)
    assert SECRET not in str(caught.value)
    assert list_servers(crew.wb, crew["admin"], include_retired=True) == []


def test_secret_is_read_at_connection_only(
    crew: Team, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    add_server(crew.wb, crew["admin"], "env-basic", _basic())
    with pytest.raises(DicomWebError, match=f"environment variable {ENV}, which is not set"):
        connect(crew.wb, crew["qa1"], "env-basic")
    monkeypatch.setenv(ENV, SECRET)
    server = connect(crew.wb, crew["qa1"], "env-basic")
    assert (server.credentials.user, server.credentials.password) == ("wb-reader", SECRET)
    assert SECRET not in repr(server)

    creds = tmp_path / "token.json"
    creds.write_text(json.dumps({"token": SECRET}))
    creds.chmod(0o644)
    file_config = PacsServerConfig(
        url="https://pacs.example.org/dicom-web", auth_kind="bearer", credentials_file=str(creds)
    )
    with pytest.raises(WorkflowError, match="mode 0644; expected 0600"):
        add_server(crew.wb, crew["admin"], "file-bearer", file_config)
    creds.chmod(0o600)
    add_server(crew.wb, crew["admin"], "file-bearer", file_config)
    assert connect(crew.wb, crew["qa1"], "file-bearer").credentials.token == SECRET
    # The file is re-checked at each use: loosened permissions stop the connection.
    creds.chmod(0o640)
    with pytest.raises(DicomWebError, match="expected 0600"):
        connect(crew.wb, crew["qa1"], "file-bearer")
    creds.chmod(0o600)
    add_server(
        crew.wb,
        crew["admin"],
        "file-basic",
        dataclasses.replace(file_config, auth_kind="basic"),
    )
    with pytest.raises(DicomWebError, match="holds a token"):
        connect(crew.wb, crew["qa1"], "file-basic")
    assert SECRET not in _dump(crew)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_connection_reports_one_line(crew: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    add_server(crew.wb, crew["admin"], "down", PacsServerConfig(url=url))
    outcome = check_connection(crew.wb, crew["admin"], "down")
    assert not outcome.ok and outcome.url == url
    assert outcome.message.startswith(f"Cannot reach the DICOMweb server {url}")
    assert "\n" not in outcome.message
    monkeypatch.delenv(ENV, raising=False)
    add_server(crew.wb, crew["admin"], "no-secret", _basic(url=url))
    unset = check_connection(crew.wb, crew["admin"], "no-secret")
    assert not unset.ok and ENV in unset.message


def test_dimse_node_is_configured_versioned_and_checked(crew: Team) -> None:
    address = f"ORTHANC@127.0.0.1:{_closed_port()}"
    added = add_server(
        crew.wb, crew["admin"], "old-pacs", PacsServerConfig(url=f" {address} ", protocol="DIMSE")
    )
    assert added.is_dimse and added.config.protocol is PacsProtocol.DIMSE
    assert (added.config.url, added.config.calling_ae) == (address, "WORKBENCH")
    assert added.address == f"dicom://{address}"
    assert added.secret_source == "none (DIMSE: calling AE title WORKBENCH)"
    changed = update_server(
        crew.wb,
        crew["admin"],
        "old-pacs",
        replace_config(added, calling_ae="WB_QA"),
        reason="the PACS knows the site's AE title",
    )
    assert changed.version == 2 and changed.config.calling_ae == "WB_QA"
    node = dimse_node(crew.wb, crew["qa1"], "old-pacs")
    assert (node.address, node.calling_ae) == (address, "WB_QA")
    entries = _entries(crew, "old-pacs")
    assert entries[0]["new_value"]["protocol"] == "dimse"
    assert entries[1]["old_value"]["calling_ae"] == "WORKBENCH"
    assert entries[1]["new_value"]["calling_ae"] == "WB_QA"

    check = check_connection(crew.wb, crew["qa1"], "old-pacs")
    assert not check.ok and check.url == f"dicom://{address}"
    assert check.message.startswith(f"Cannot reach the DICOM node dicom://{address} for a C-ECHO")
    assert "\n" not in check.message
    with pytest.raises(WorkflowError, match="DIMSE node .* no DICOMweb service"):
        connect(crew.wb, crew["qa1"], "old-pacs")
    with pytest.raises(NotFoundError, match="any-run"):  # exported to with C-STORE
        export_run_to(crew.wb, crew["qa1"], "old-pacs", "any-run")
    add_server(crew.wb, crew["admin"], "web", PacsServerConfig(url="http://127.0.0.1:1/dicom-web"))
    with pytest.raises(WorkflowError, match="DICOMweb server, not a DIMSE node"):
        dimse_node(crew.wb, crew["qa1"], "web")
    [web] = [s for s in list_servers(crew.wb, crew["qa1"]) if s.name == "web"]
    assert web.config.protocol is PacsProtocol.DICOMWEB and web.config.calling_ae is None

    # The database itself refuses a protocol it does not know (the migration's constraint).
    with pytest.raises(Exception, match="(?i)check|constraint"):
        with crew.wb.transaction() as session:
            session.execute(
                text(
                    "INSERT INTO pacs_servers (name, version, protocol, url, auth_kind, "
                    "verify_tls, status, created_by, created_at) VALUES ('ftp', 1, 'ftp', "
                    "'ftp://x', 'none', true, 'active', 'admin', CURRENT_TIMESTAMP)"
                )
            )
    assert audit_trail.verify_audit_chain(crew.wb) is not None


def test_study_query_terms() -> None:
    import datetime as dt

    query = StudyQuery(
        modality="ct",
        date_from=dt.date(2024, 1, 1),
        date_to=dt.date(2024, 12, 31),
        accession_number="ACC*",
        study_uids=(" 1.2.3 ", "1.2.3", "", "1.2.4"),
    )
    assert query.filters() == {
        "ModalitiesInStudy": "CT",
        "StudyDate": "20240101-20241231",
        "AccessionNumber": "ACC*",
    }
    assert query.uids() == ["1.2.3", "1.2.4"]
    assert StudyQuery(date_from=dt.date(2024, 5, 1)).filters() == {"StudyDate": "20240501-"}
    with pytest.raises(WorkflowError, match="start before it ends"):
        StudyQuery(date_from=dt.date(2024, 2, 1), date_to=dt.date(2024, 1, 1)).filters()
    with pytest.raises(WorkflowError, match="modality code"):
        StudyQuery(modality="C T;").filters()
    with pytest.raises(WorkflowError, match="digits and dots"):
        StudyQuery(study_uids=("1.2.abc",)).uids()


def test_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from workbench.cli.pacs import pacs_app

    made = _team(tmp_path / "wb", None)
    made.wb.close()
    runner = CliRunner()

    def run(*args: str, user: str = "admin") -> object:
        env = {"WORKBENCH_USER": user, "WORKBENCH_PASSWORD": PASSWORDS[user]}
        common = ["--workdir", str(tmp_path / "wb")]
        return runner.invoke(pacs_app, [*args, *common], env=env, catch_exceptions=False)

    url = f"http://127.0.0.1:{_closed_port()}/dicom-web"
    added = run(
        "add", "cli-pacs", "--url", url, "--auth", "basic", "--username", "reader",
        "--secret-env", ENV,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert added.output.startswith(f"added cli-pacs\tv1\tactive\t{url}\tbasic")
    pasted = run("add", "other", "--url", url, "--auth", "bearer", "--secret-env", SECRET)
    assert pasted.exit_code == 1 and SECRET not in pasted.output
    assert "NAME of an environment variable" in pasted.output
    denied = run("add", "qa-made", "--url", url, user="qa1")
    assert denied.exit_code == 1 and "may not 'pacs.configure'" in denied.output

    changed = run("update", "cli-pacs", "--no-verify-tls", "--reason", "test bench")
    assert changed.exit_code == 0 and "\tv2\t" in changed.output and "tls=off" in changed.output
    history = run("history", "cli-pacs")
    assert [line.split("\t")[1] for line in history.output.splitlines()] == ["v1", "v2"]
    assert history.output.splitlines()[1].endswith("test bench")

    monkeypatch.setenv(ENV, SECRET)
    tested = run("test", "cli-pacs", user="qa1")
    assert tested.exit_code == 1 and "Cannot reach the DICOMweb server" in tested.output
    assert SECRET not in tested.output
    listed = run("list", user="qa1")
    assert listed.output.splitlines() == [
        f"cli-pacs\tv2\tactive\t{url}\tbasic\tuser reader, password in ${ENV}\ttls=off"
    ]
    node = f"ORTHANC@127.0.0.1:{_closed_port()}"
    dimse = run("add", "cli-dimse", "--dimse", node, "--calling-ae", "WB_QA")
    assert dimse.exit_code == 0, dimse.output
    assert dimse.output == f"added cli-dimse\tv1\tactive\tdicom://{node}\tdimse\tcalling_ae=WB_QA\n"
    both = run("add", "both", "--dimse", node, "--url", url)
    assert both.exit_code == 1 and "error: give --url (DICOMweb) or --dimse" in both.output
    stray = run("update", "cli-pacs", "--url", url, "--calling-ae", "X", "--reason", "x")
    assert stray.exit_code == 1 and "--calling-ae goes with --dimse" in stray.output
    unreachable = run("test", "cli-dimse", user="qa1")
    assert unreachable.exit_code == 1 and "Cannot reach the DICOM node" in unreachable.output
    moved = run("update", "cli-dimse", "--dimse", node.replace("ORTHANC", "PACS2"), "--reason", "x")
    assert moved.exit_code == 0 and "dicom://PACS2@" in moved.output and "WB_QA" in moved.output
    assert run("retire", "cli-dimse", "--reason", "gone").exit_code == 0
    assert run("retire", "cli-pacs", "--reason", "gone").exit_code == 0
    assert run("list").output == "" and "retired" in run("list", "--all").output
