"""The command line: scriptable (credentials from the environment), clear errors, exit codes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from workbench.cli import app  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "validation_protocols"
ADMIN_PW = "Harbor-Lamp-2026!"
QA_PW = "Quill-Maple-2026!"


@pytest.fixture
def cli(tmp_path: Path):
    runner = CliRunner()
    workdir = tmp_path / "wd"

    def invoke(*args: str, user: str | None = None, password: str | None = None):
        env = {"WORKBENCH_HOME": str(workdir)}
        if user:
            env["WORKBENCH_USER"] = user
            env["WORKBENCH_PASSWORD"] = password or ""
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    result = invoke(
        "user", "bootstrap", "--username", "admin", "--full-name", "Ada", "--password", ADMIN_PW
    )
    assert result.exit_code == 0, result.output
    result = invoke(
        "user",
        "create",
        "--username",
        "qa1",
        "--full-name",
        "Quinn",
        "--role",
        "qa",
        "--initial-password",
        "Temp-Pass-2026!x",
        user="admin",
        password=ADMIN_PW,
    )
    assert result.exit_code == 0, result.output
    result = invoke(
        "user", "change-password", "--new-password", QA_PW, user="qa1", password="Temp-Pass-2026!x"
    )
    assert result.exit_code == 0, result.output
    invoke.workdir = workdir  # type: ignore[attr-defined]
    return invoke


def test_testset_lifecycle_and_tamper_detection(cli, tmp_path: Path) -> None:
    out = tmp_path / "set"
    result = cli("synth", "--out", str(out), "--cases", "2", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert (
        cli(
            "testset", "import", str(out), "--name", "cli-set", user="qa1", password=QA_PW
        ).exit_code
        == 0
    )
    assert cli("testset", "check", "cli-set", user="qa1", password=QA_PW).exit_code == 0
    result = cli("testset", "lock", "cli-set", user="qa1", password=QA_PW)
    assert result.exit_code == 0 and "manifest digest" in result.output
    listed = cli("testset", "list")
    assert "cli-set\tlocked\t" in listed.output
    assert cli("testset", "verify", "cli-set", user="qa1", password=QA_PW).exit_code == 0
    victim = sorted(out.rglob("*.dcm"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = cli("testset", "verify", "cli-set", user="qa1", password=QA_PW)
    assert result.exit_code == 1
    assert "changed" in result.output


def test_errors_are_one_clear_line_and_credentials_are_required(cli) -> None:
    result = cli("testset", "lock", "nope", user="qa1", password=QA_PW)
    assert result.exit_code == 1
    assert "NotFoundError" in result.output and "Traceback" not in result.output
    wrong = cli("testset", "lock", "nope", user="qa1", password="wrong-Password-1")
    unknown = cli("testset", "lock", "nope", user="nobody", password="wrong-Password-1")
    assert wrong.exit_code == unknown.exit_code == 1
    assert "Invalid username or password" in wrong.output
    assert wrong.output == unknown.output  # no username enumeration
    missing = cli("testset", "lock", "nope")
    assert missing.exit_code == 1 and "WORKBENCH_USER" in missing.output


def test_protocol_add_reports_yaml_line(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (SHIPPED / "lesion-segmentation-v1.yaml")
        .read_text()
        .replace("task: segmentation", "task: segmentation\nbogus_key: 1")
    )
    result = cli("protocol", "add", str(bad), user="qa1", password=QA_PW)
    assert result.exit_code == 1
    assert "bogus_key" in result.output and "line" in result.output


def test_audit_verify_names_the_first_broken_entry(cli) -> None:
    assert cli("audit", "verify").exit_code == 0
    db = Path(cli.workdir) / "workbench.db"  # type: ignore[attr-defined]
    con = sqlite3.connect(db)
    triggers = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
    for name in triggers:
        con.execute(f'DROP TRIGGER "{name}"')
    con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    con.commit()
    con.close()
    result = cli("audit", "verify")
    assert result.exit_code == 1
    assert "#2" in result.output
