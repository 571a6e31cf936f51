"""Injection (reportlab markup, spreadsheet formulas, SQL), files outside the chosen
folder, secrets and PHI in logs, errors and reports, key file modes, pinned dependencies.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sysconfig
from importlib import metadata
from pathlib import Path

import harness
import pytest

from workbench import errors
from workbench.dicom.index import index_folder
from workbench.services import accounts, audit_trail, protocols, reports, runs, testsets

MARKUP = '<font size=40>BIG</font> <b>bold</b> <a href="http://evil">x</a> & <unclosed'
SQLI = "x'; DROP TABLE users;--"


def _pdf_text(path: str | Path) -> str:
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="needs poppler-utils (pdftotext)")
def test_markup_in_report_data_is_printed_literally(wb_copy: harness.Pipeline) -> None:
    wb = harness.open_wb(wb_copy.workdir)
    try:
        admin, qa1 = harness.login(wb, "admin"), harness.login(wb, "qa1")
        accounts.create_user(
            wb,
            admin,
            username="eve",
            full_name="<font size=40>Eve</font> & Co",
            role="qa",
            password="Strong-Pass-Word-2026!",
            must_change_password=False,
        )
        path = wb_copy.workdir.parent / "markup.yaml"
        path.write_text(
            harness.protocol_text(protocol_id="markup", title=MARKUP, intended_use=MARKUP)
        )
        ref = protocols.add_protocol_version(wb, qa1, path).ref
        protocols.approve_protocol(
            wb, harness.login(wb, "qa2"), ref, password=harness.ACCOUNTS["qa2"][2]
        )
        run = runs.validate(
            wb, qa1, protocol=ref, model=wb_copy.model_ref, test_set=harness.TEST_SET, device="cpu"
        )
        eve = accounts.login(wb, "eve", "Strong-Pass-Word-2026!")
        report = reports.build_report(wb, eve, run.run_uid)
        reports.sign_report(
            wb, eve, report.report_uid, meaning="authored", password="Strong-Pass-Word-2026!"
        )
    finally:
        wb.close()
    text = re.sub(r"\s+", " ", _pdf_text(report.pdf_path))
    assert "<font size=40>BIG</font>" in text
    assert "<b>bold</b>" in text and "& <unclosed" in text
    assert "<font size=40>Eve</font> & Co" in text


def test_csv_export_neutralizes_formulas(wb_copy: harness.Pipeline, tmp_path: Path) -> None:
    wb = harness.open_wb(wb_copy.workdir)
    try:
        from workbench.naming import InvalidNameError
        from workbench.records import audit

        qa = harness.login(wb, "qa1")
        evil = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", SQLI]
        for name in evil:  # such names no longer become test sets at all
            with pytest.raises(InvalidNameError):
                testsets.import_test_set(
                    wb, qa, wb_copy.test_set_root / "reference", name=name, workers=1
                )
        with wb.transaction() as session:  # but values in the trail can still hold them
            for name in evil:
                audit.append(
                    session,
                    actor="qa1",
                    action="testset.note",
                    record_type="test_set",
                    record_id=name,
                    new={"name": name},
                )
        out = tmp_path / "audit.csv"
        audit_trail.write_export(wb, harness.login(wb, "aud"), out, fmt="csv")
    finally:
        wb.close()
    with out.open(newline="", encoding="utf-8") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert cells, "empty export"
    dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert not dangerous, dangerous[:5]
    assert '\'=HYPERLINK("http://x")' in cells


def test_report_per_case_csv_neutralizes_formulas() -> None:
    from workbench.reports.attachments import per_case_csv

    data = per_case_csv(({"case_id": "=cmd|' /C calc'!A0", "status": "@x", "reason": "-1"},))
    text = data.decode("utf-8")
    assert "'=cmd" in text and "'@x" in text and not re.search(r"(^|,)[=@+]", text, re.M)


def test_sql_goes_through_bound_parameters(wb_copy: harness.Pipeline) -> None:
    wb = harness.open_wb(wb_copy.workdir)
    try:
        with pytest.raises(errors.AuthenticationError):
            accounts.login(wb, SQLI, SQLI)
        with pytest.raises((ValueError, errors.WorkbenchError)):
            accounts.create_user(
                wb,
                harness.login(wb, "admin"),
                username=SQLI,
                full_name=SQLI,
                role="qa",
                password="Valid-Password-2026!",
            )
        qa = harness.login(wb, "qa1")
        with pytest.raises(errors.NotFoundError):  # looked up as a value, not run as SQL
            testsets.get_test_set(wb, SQLI)
        with pytest.raises(ValueError, match="test-set name"):  # and never made into a name
            testsets.import_test_set(
                wb, qa, wb_copy.test_set_root / "reference", name=SQLI, workers=1
            )
        with pytest.raises(errors.NotFoundError):
            runs.get_run(wb, qa, "' OR '1'='1")
    finally:
        wb.close()
    con = sqlite3.connect(wb_copy.workdir / "workbench.db")
    assert con.execute("select count(*) from users").fetchone()[0] == len(harness.ACCOUNTS)
    con.close()
    harness.verify_chain(wb_copy.workdir)


def test_sources_have_no_sql_built_from_strings() -> None:
    """Raw SQL text in the package is static (no f-strings or % formatting into text()).

    Migrations (DDL over fixed table names) and the integer-cast PRAGMA in records/db.py
    are the reviewed exceptions.
    """
    root = Path(__file__).resolve().parents[2] / "workbench"
    reviewed = {"records/db.py:187"}
    offenders = []
    for path in root.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        source = path.read_text(encoding="utf-8")
        for match in re.finditer(
            r"(text|exec_driver_sql|execute)\(\s*(f[\"']|[\"'][^\"']*[\"']\s*%|[\"'][^\"']*[\"']\s*\.format)",
            source,
        ):
            where = f"{path.relative_to(root)}:{source[: match.start()].count(chr(10)) + 1}"
            if where not in reviewed:
                offenders.append(where)
    assert not offenders, offenders


# -------------------------------------------------------------------------------- files


def test_import_does_not_read_outside_the_folder(
    tmp_path: Path, built_pipeline: harness.Pipeline
) -> None:
    secret = tmp_path / "outside" / "secret.dcm"
    secret.parent.mkdir()
    shutil.copy(next(built_pipeline.test_set_root.rglob("*.dcm")), secret)
    root = tmp_path / "set"
    (root / "sub").mkdir(parents=True)
    os.symlink(secret, root / "link-to-file.dcm")
    os.symlink(secret.parent, root / "link-to-dir")
    os.symlink("../../outside", root / "sub" / "dotdot")
    os.symlink("/etc", root / "etc")
    index = index_folder(root, workers=1)
    assert len(index.files) == 0 and len(index.unreadable) == 0
    assert set(index.skipped["path"]) == {"link-to-file.dcm", "link-to-dir", "sub/dotdot", "etc"}
    assert all("leaves the test-set root" in r for r in index.skipped["reason"])
    # The same through the folder argument: '..' is resolved first, the walk stays inside.
    index2 = index_folder(root / "sub" / ".." / "sub", workers=1)
    assert len(index2.files) == 0


def test_verify_does_not_follow_a_link_added_after_lock(
    wb_copy: harness.Pipeline, tmp_path: Path
) -> None:
    from workbench.dicom.manifest import Manifest, verify_manifest

    manifest = Manifest.from_json(_manifest_json(wb_copy))
    root = tmp_path / "set"
    shutil.copytree(wb_copy.test_set_root, root)
    os.symlink("/etc/passwd", root / "cases" / "passwd.dcm")
    diff = verify_manifest(root, manifest)
    assert diff.ok, diff.summary()  # a link leaving the root is neither read nor hashed


def _manifest_json(pipe: harness.Pipeline) -> str:
    con = sqlite3.connect(pipe.workdir / "workbench.db")
    try:
        return con.execute(
            "select manifest_json from test_sets where name=?", (harness.TEST_SET,)
        ).fetchone()[0]
    finally:
        con.close()


# ------------------------------------------------------------------------ secrets and PHI


def test_no_passwords_in_logs_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_wrong = "Sup3r-Secret-Wrong!"
    wb = harness.open_wb(tmp_path / "wb")
    try:
        harness.make_accounts(wb)
        messages = []
        for user in ("qa1", "ghost"):
            with pytest.raises(errors.AuthenticationError) as caught:
                accounts.login(wb, user, secret_wrong)
            messages.append(str(caught.value))
        with pytest.raises(errors.PasswordPolicyError) as caught:
            accounts.change_password(wb, "qa1", harness.ACCOUNTS["qa1"][2], "weakpw")
        messages.append(str(caught.value))
        entries = audit_trail.export_entries(wb, harness.login(wb, "aud"))
    finally:
        wb.close()
    everything = " ".join([*messages, caplog.text, repr(entries)])
    for pw in [secret_wrong, "weakpw", *(a[2] for a in harness.ACCOUNTS.values())]:
        assert pw not in everything, "a password appears in logs, errors or the audit trail"
    assert "ghost" not in repr(entries), "a mistyped username (maybe a password) is stored in clear"


@pytest.mark.slow
def test_cli_never_echoes_the_password(built_pipeline: harness.Pipeline) -> None:
    done = harness.cli(
        built_pipeline.workdir,
        "testset",
        "lock",
        harness.TEST_SET,
        "--user",
        "qa1",
        "--password",
        "Not-The-Password-99!",
    )
    assert done.returncode == 1 and "Not-The-Password-99!" not in done.stdout + done.stderr


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="needs poppler-utils (pdftotext)")
def test_report_holds_no_patient_identifiers(built_pipeline: harness.Pipeline) -> None:
    from workbench.dicom.index import index_folder as index

    files = index(built_pipeline.test_set_root, workers=1).files
    identifiers = {
        str(v)
        for col in ("patient_id", "patient_name", "patient_birth_date")
        for v in files[col].dropna().unique()
        if str(v).strip()
    }
    pdf = next((built_pipeline.workdir / "reports").glob("*-draft.pdf"))
    text = _pdf_text(pdf)
    from workbench.reports.attachments import extract_attachments

    blobs = " ".join(b.decode("utf-8", "replace") for b in extract_attachments(pdf).values())
    leaked = sorted(i for i in identifiers if i in text or i in blobs)
    assert not leaked, leaked


def test_private_keys_are_owner_only(wb_copy: harness.Pipeline) -> None:
    wb = harness.open_wb(wb_copy.workdir)
    try:  # the local CA and sealing key are made at the first seal
        reports.seal_report(wb, harness.login(wb, "qa1"), wb_copy.report_uid)
    finally:
        wb.close()
    keys = wb_copy.workdir / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    private = [p for p in keys.iterdir() if "key" in p.name]
    assert private, "no private key found"
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# --------------------------------------------------------------------------- dependencies


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_pin_every_installed_distribution() -> None:
    path = Path(__file__).resolve().parents[2] / "constraints.txt"
    assert path.is_file(), "constraints.txt is missing"
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line!r}"
            pins[_norm(name.split("[")[0])] = version.split(";")[0].strip()
    own = {"validation-workbench"}
    exempt = {"torch", "pip", "setuptools", "wheel"} | own  # torch: pinned in pyproject.toml
    missing, wrong = [], []
    # Only what pip installed into this environment: libraries that vendor packages (Ray's
    # thirdparty_files) put their own copies on sys.path once imported.
    installed = {
        Path(p).resolve() for p in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    }
    for dist in metadata.distributions():
        location = Path(str(dist.locate_file(""))).resolve()
        if location not in installed:
            continue
        name = _norm(dist.metadata["Name"])
        if name in exempt or name.startswith("nvidia-") or name == "triton":
            continue
        if name not in pins:
            missing.append(name)
        elif pins[name] != dist.version:
            wrong.append(f"{name} {dist.version} != {pins[name]}")
    assert not missing, f"installed but not pinned: {sorted(missing)}"
    assert not wrong, wrong
