"""PACS page and the administrator's PACS servers, through AppTest against a real Orthanc.

An administrator configures the test Orthanc (basic authentication, the password in an
environment variable) and tests the connection; a second configuration with a wrong
password gives one line. QA staff query two real studies from pydicom's test files
(CT_small, MR_small), import them as a draft test set with a progress bar, and export a
segmentation run of the seeded phantoms twice (the second time nothing is sent again).
Reviewers and auditors do not get the page; auditors see every transfer on the Audit
trail page. The browser test photographs the page into ``$WORKBENCH_SCREENSHOT_DIR``.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from streamlit.testing.v1 import AppTest

os.environ.setdefault("WORKBENCH_ARGON2_PROFILE", "fast")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from tests.app._seed import ACCOUNTS, seed_workdir  # noqa: E402
from tests.app.conftest import APP_MAIN, sign_in  # noqa: E402
from tests.dicomweb.orthanc_server import (  # noqa: E402
    Orthanc,
    start_orthanc,
    stop_orthanc,
    upload,
    upload_shared_real_files,
)
from workbench.app._nav import page_by_key, pages_for  # noqa: E402
from workbench.dicomweb.dimse import DimseNode  # noqa: E402
from workbench.services import accounts, audit_trail, runs, testsets  # noqa: E402
from workbench.services.context import Workbench  # noqa: E402

PASSWORD_ENV = "WB_TEST_APP_PACS_PASSWORD"
WRONG_ENV = "WB_TEST_APP_PACS_WRONG"
WRONG_PASSWORD = "not-the-pacs-password-42"
REAL_FILES = ("CT_small.dcm", "MR_small.dcm")
SET_NAME = "pacs-real-two"
DEID_NAME = "pacs-deidentified"
DIMSE_SERVER = "orthanc-dimse"
DIMSE_SET = "pacs-dimse"
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(os.environ.get("WORKBENCH_SCREENSHOT_DIR", "/tmp/workbench-screenshots"))


@dataclass
class Bench:
    workdir: Path
    wb: Workbench
    orthanc: Orthanc
    studies: dict[str, str]  # modality -> Study Instance UID
    seg_run: str


def _real_files() -> list[Path]:
    from pydicom.data import get_testdata_file

    return [Path(str(get_testdata_file(name))) for name in REAL_FILES]


@pytest.fixture(scope="module")
def orthanc() -> Iterator[Orthanc]:
    """The test run's Orthanc (``scripts/test.sh``) or one started for this module."""
    url = os.environ.get("WORKBENCH_TEST_ORTHANC_URL")
    if url:
        shared = Orthanc(
            url=url,
            user=os.environ.get("WORKBENCH_TEST_ORTHANC_USER", ""),
            password=os.environ.get("WORKBENCH_TEST_ORTHANC_PASSWORD", ""),
            state_dir=Path(os.environ.get("WORKBENCH_TEST_ORTHANC_DIR", "")),
            dimse=os.environ.get("WORKBENCH_TEST_ORTHANC_DIMSE", ""),
        )
        upload_shared_real_files(shared)  # see tests/dicomweb/orthanc_server.py
        yield shared
        return
    started = start_orthanc()
    try:
        upload_shared_real_files(started)
        yield started
    finally:
        stop_orthanc(started, purge=True, kill=True)


@pytest.fixture(scope="module")
def bench(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    """A workdir of its own (accounts, locked phantoms, one segmentation run) and loaded PACS."""
    files = _real_files()
    upload(orthanc, files)
    studies = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        studies[str(ds.Modality)] = str(ds.StudyInstanceUID)

    workdir = tmp_path_factory.mktemp("pacs-app")
    seeded = seed_workdir(workdir, n_cases=3, with_runs=False)
    wb = Workbench.open(workdir)
    qa = accounts.login(wb, "qa.author", ACCOUNTS["qa.author"][2])
    seg_run = runs.validate(
        wb,
        qa,
        protocol="lesion-segmentation@1",
        model=seeded.model_ref,
        test_set=seeded.test_set_root.name,
        device="cpu",
    ).run_uid
    previous = {k: os.environ.get(k) for k in ("WORKBENCH_HOME", "WORKBENCH_DB_URL")}
    os.environ["WORKBENCH_HOME"] = str(workdir)
    os.environ.pop("WORKBENCH_DB_URL", None)
    os.environ[PASSWORD_ENV] = orthanc.password
    os.environ[WRONG_ENV] = WRONG_PASSWORD
    try:
        yield Bench(workdir, wb, orthanc, studies, seg_run)
    finally:
        wb.close()
        for key in (PASSWORD_ENV, WRONG_ENV):
            os.environ.pop(key, None)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _open(bench: Bench, username: str, page: str) -> AppTest:
    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    sign_in(at, bench.wb, username)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _messages(at: AppTest, kind: str) -> list[str]:
    """The texts of the page's ``kind`` messages, without Markdown escapes."""
    return [str(e.value).replace("\\", "") for e in getattr(at, kind)]


def _page_text(at: AppTest) -> str:
    """Everything the page shows as text: messages, Markdown, captions, fields, tables."""
    parts = [str(e.value) for kind in ("error", "warning", "success", "info") for e in at.get(kind)]
    parts += [str(e.value) for kind in ("markdown", "caption", "text_input") for e in at.get(kind)]
    parts += [d.value.to_csv() for d in at.dataframe]
    return "\n".join(parts)


def _submit(at: AppTest, label: str, *, timeout: float = 120) -> AppTest:
    next(b for b in at.button if str(b.label) == label).click().run(timeout=timeout)
    assert not at.exception, at.exception
    return at


def _add_server(at: AppTest, name: str, url: str, user: str, env: str) -> None:
    at.text_input(key="pacs-add-name").input(name)
    at.text_input(key="pacs-add-url").input(url)
    at.selectbox(key="pacs-add-auth").select("basic")
    at.text_input(key="pacs-add-user").input(user)
    at.text_input(key="pacs-add-env").input(env)
    _submit(at, "Add server")


@pytest.fixture(scope="module")
def configured(bench: Bench) -> Bench:
    """The administrator adds the Orthanc twice: right and wrong password variable."""
    at = _open(bench, "sysadmin", "pages/admin.py")
    _add_server(at, "orthanc", bench.orthanc.url, bench.orthanc.user, PASSWORD_ENV)
    assert any("Added PACS server orthanc" in m for m in _messages(at, "success"))
    _add_server(at, "orthanc-wrong", bench.orthanc.url, bench.orthanc.user, WRONG_ENV)
    table = next(d.value for d in at.dataframe if "secret from" in d.value.columns)
    assert list(table["name"]) == ["orthanc", "orthanc-wrong"]
    assert set(table["secret from"]) == {
        f"user {bench.orthanc.user}, password in ${PASSWORD_ENV}",
        f"user {bench.orthanc.user}, password in ${WRONG_ENV}",
    }
    return bench


def test_admin_configures_and_tests_the_connection(configured: Bench) -> None:
    at = _open(configured, "sysadmin", "pages/admin.py")
    at.selectbox(key="pacs-admin-target").select("orthanc").run()
    at.button(key="pacs-test").click().run()
    assert not at.exception
    [ok] = _messages(at, "success")
    assert "answered a QIDO-RS study query" in ok and configured.orthanc.url in ok

    at.selectbox(key="pacs-admin-target").select("orthanc-wrong").run()
    at.button(key="pacs-test").click().run()
    [error] = _messages(at, "error")
    assert "refused the credentials (HTTP 401)" in error and "\n" not in error
    page_text = _page_text(at)
    for secret in (WRONG_PASSWORD, configured.orthanc.password):
        assert secret not in error and secret not in page_text

    # A change is a new version with its reason; the first version stays as it was.
    at.selectbox(key="pacs-admin-target").select("orthanc-wrong").run()
    at.checkbox(key="pacs-edit-orthanc-wrong-1-tls").uncheck()
    at.text_input(key="pacs-edit-orthanc-wrong-1-reason").input("test bench without TLS")
    _submit(at, "Save as version 2")
    assert any("version 2" in m for m in _messages(at, "success"))
    at.selectbox(key="pacs-history-target").select("orthanc-wrong").run()
    history = next(
        d.value for d in at.dataframe if "version" in d.value.columns and "by" in d.value.columns
    )
    assert list(history["version"]) == [1, 2]
    assert list(history["TLS verified"]) == [True, False]
    assert list(history["reason"]) == ["", "test bench without TLS"]


def test_qa_queries_and_imports_two_studies(configured: Bench) -> None:
    at = _open(configured, "qa.author", "pages/pacs.py")
    at.selectbox(key="pacs-server").select("orthanc")
    uids = [configured.studies["CT"], configured.studies["MR"]]
    at.text_area(key="pacs-uids").input("\n".join(uids))
    # Filters apply to each listed study: modality CT keeps CT_small only.
    at.text_input(key="pacs-modality").input("CT")
    _submit(at, "Search")
    table = at.dataframe[0].value
    assert list(table["Study Instance UID"]) == [configured.studies["CT"]]
    assert not {"PatientName", "PatientID", "patient"} & set(table.columns)
    # A date range around MR_small's study date (2004-08-26) keeps MR_small only.
    at.text_input(key="pacs-modality").input("")
    at.date_input(key="pacs-from").set_value(dt.date(2004, 8, 1))
    at.date_input(key="pacs-to").set_value(dt.date(2004, 8, 31))
    _submit(at, "Search")
    assert list(at.dataframe[0].value["Study Instance UID"]) == [configured.studies["MR"]]
    at.date_input(key="pacs-from").set_value(None)
    at.date_input(key="pacs-to").set_value(None)
    _submit(at, "Search")
    table = at.dataframe[0].value
    assert sorted(table["Study Instance UID"]) == sorted(uids)
    assert sorted(table["modalities"]) == ["CT", "MR"]
    assert list(table["instances"]) == [1, 1]

    at.multiselect(key="pacs-selected").set_value(uids)
    at.text_input(key="pacs-name").input(SET_NAME)
    at.run()
    import_button = at.button(key="pacs-import")
    assert str(import_button.label) == "Import 2 studies" and not import_button.disabled
    import_button.click().run(timeout=300)
    assert not at.exception, at.exception
    assert at.get("progress"), "the import shows a progress bar"
    [done] = _messages(at, "success")
    assert f"Imported 2 instances of 2 studies into the draft test set {SET_NAME}" in done
    assert any("test_sets" in str(link.proto.page) for link in at.get("page_link"))

    info = testsets.get_test_set(configured.wb, SET_NAME)
    assert info.status == "draft" and info.n_dicom == 2
    # Importing under the same name again is refused with one line, nothing replaced.
    at.button(key="pacs-import").click().run(timeout=120)
    [refused] = _messages(at, "error")
    assert "already exists" in refused and "\n" not in refused


def test_qa_imports_de_identified(configured: Bench) -> None:
    at = _open(configured, "qa.author", "pages/pacs.py")
    at.selectbox(key="pacs-server").select("orthanc")
    at.text_area(key="pacs-uids").input(configured.studies["MR"])
    _submit(at, "Search")
    at.multiselect(key="pacs-selected").set_value([configured.studies["MR"]])
    at.text_input(key="pacs-name").input(DEID_NAME)
    at.toggle(key="pacs-deidentify").set_value(True).run()
    at.checkbox(key="pacs-deid-dates").check()
    at.button(key="pacs-import").click().run(timeout=300)
    assert not at.exception, at.exception
    [done] = _messages(at, "success")
    assert f"draft test set {DEID_NAME}" in done
    root = Path(testsets.get_test_set(configured.wb, DEID_NAME).root_path)
    [stored] = [p for p in root.rglob("*.dcm")]
    ds = pydicom.dcmread(stored)
    original = pydicom.dcmread(_real_files()[1])
    assert ds.PatientIdentityRemoved == "YES"
    assert str(ds.PatientName) != str(original.PatientName)
    assert ds.StudyInstanceUID != original.StudyInstanceUID
    assert ds.StudyDate != original.StudyDate  # shifted, not removed
    assert ds.StudyDate


def test_wrong_password_is_one_line_on_the_page(configured: Bench) -> None:
    at = _open(configured, "qa.author", "pages/pacs.py")
    at.selectbox(key="pacs-server").select("orthanc-wrong")
    at.text_input(key="pacs-modality").input("CT")
    _submit(at, "Search")
    [error] = _messages(at, "error")
    assert "refused the credentials (HTTP 401)" in error and "\n" not in error
    assert WRONG_PASSWORD not in error and not at.dataframe


def test_qa_exports_a_run_and_re_export_is_idempotent(configured: Bench) -> None:
    at = _open(configured, "qa.author", "pages/pacs.py")
    at.selectbox(key="pacs-run").select(configured.seg_run)
    at.selectbox(key="pacs-export-server").select("orthanc")
    at.button(key="pacs-export").click().run(timeout=300)
    assert not at.exception, at.exception
    assert at.get("progress")
    [first] = _messages(at, "success")
    table = at.dataframe[-1].value
    n_objects = len(table)
    # Three phantom cases: a SEG and a TID 1500 SR each; the run has no sealed report.
    assert sorted(table["kind"]) == ["SEG"] * 3 + ["SR"] * 3
    assert set(table["on the server"]) == {"stored now"}
    assert f"{n_objects} object(s) stored" in first and "0 already there" in first

    at.button(key="pacs-export").click().run(timeout=300)
    assert not at.exception, at.exception
    [second] = _messages(at, "success")
    assert "0 object(s) stored" in second and f"{n_objects} already there" in second
    again = at.dataframe[-1].value
    assert set(again["on the server"]) == {"already present"}
    assert list(again["SOP Instance UID"]) == list(table["SOP Instance UID"])


@pytest.mark.parametrize("username", ["dr.reviewer", "inspector"])
def test_reviewers_and_auditors_do_not_get_the_page(configured: Bench, username: str) -> None:
    role = ACCOUNTS[username][1]
    assert "pacs" not in [p.key for p in pages_for(role)]
    assert not page_by_key("pacs").visible_to(role)
    at = AppTest.from_file(str(APP_MAIN), default_timeout=120)
    sign_in(at, configured.wb, username)
    at.run()
    try:
        at.switch_page("pages/pacs.py")
    except ValueError:
        return  # not even routed for this role
    at.run()
    assert not at.exception
    assert any("not available to the role" in m for m in _messages(at, "error"))
    assert not at.dataframe and not at.get("text_area")


def test_admin_adds_a_dimse_node_and_qa_imports_from_it(configured: Bench) -> None:
    """A PACS without DICOMweb: configured as a DIMSE node, checked, queried, imported from."""
    if not configured.orthanc.dimse:
        pytest.skip("the Orthanc test server was started without its DICOM port")
    node = DimseNode.parse(configured.orthanc.dimse)
    at = _open(configured, "sysadmin", "pages/admin.py")
    at.text_input(key="pacs-add-name").input(DIMSE_SERVER)
    at.selectbox(key="pacs-add-protocol").select("dimse")
    at.text_input(key="pacs-add-url").input(configured.orthanc.dimse)
    _submit(at, "Add server")
    assert any(f"Added PACS server {DIMSE_SERVER}" in m for m in _messages(at, "success"))
    table = next(d.value for d in at.dataframe if "secret from" in d.value.columns)
    row = table[table["name"] == DIMSE_SERVER].iloc[0]
    assert row["address"] == node.public_url and row["protocol"].startswith("DIMSE")
    assert row["secret from"] == "none (DIMSE: calling AE title WORKBENCH)"
    at.selectbox(key="pacs-admin-target").select(DIMSE_SERVER).run()
    at.button(key="pacs-test").click().run()
    [ok] = _messages(at, "success")
    assert ok.startswith(f"{node.public_url} answered a C-ECHO and a C-FIND")

    at = _open(configured, "qa.author", "pages/pacs.py")
    at.selectbox(key="pacs-server").select(DIMSE_SERVER)
    at.text_area(key="pacs-uids").input(configured.studies["CT"])
    _submit(at, "Search")
    table = at.dataframe[0].value
    assert list(table["Study Instance UID"]) == [configured.studies["CT"]]
    assert list(table["modalities"]) == ["CT"] and list(table["instances"]) == [1]
    at.multiselect(key="pacs-selected").set_value([configured.studies["CT"]])
    at.text_input(key="pacs-name").input(DIMSE_SET)
    at.run()
    at.button(key="pacs-import").click().run(timeout=300)
    assert not at.exception, at.exception
    [done] = _messages(at, "success")
    assert f"Imported 1 instances of 1 studies into the draft test set {DIMSE_SET}" in done
    # Results go back over C-STORE: the DICOMweb export stored the same UIDs, so none is sent.
    at.selectbox(key="pacs-run").select(configured.seg_run)
    at.selectbox(key="pacs-export-server").select(DIMSE_SERVER)
    at.button(key="pacs-export").click().run(timeout=300)
    assert not at.exception, at.exception
    [exported] = _messages(at, "success")
    assert "0 object(s) stored on dicom://" in exported and "6 already there" in exported


def test_auditor_sees_transfers_in_the_audit_trail(configured: Bench) -> None:
    if SET_NAME not in {t.name for t in testsets.list_test_sets(configured.wb)}:
        pytest.skip("reads the transfers of the import and export tests of this module")
    if DIMSE_SET not in {t.name for t in testsets.list_test_sets(configured.wb)}:
        pytest.skip("reads the transfer of the DIMSE import test of this module")
    node = DimseNode.parse(configured.orthanc.dimse)
    auditor = accounts.login(configured.wb, "inspector", ACCOUNTS["inspector"][2])
    actions = (
        "testset.import.dicomweb",
        "testset.import.dimse",
        "run.export.dicomweb",
        "run.export.dimse",
    )
    recorded = [
        e for e in audit_trail.export_entries(configured.wb, auditor) if e["action"] in actions
    ]
    assert [(e["action"], e["record_id"]) for e in recorded] == [
        ("testset.import.dicomweb", SET_NAME),
        ("testset.import.dicomweb", DEID_NAME),
        ("run.export.dicomweb", configured.seg_run),
        ("run.export.dicomweb", configured.seg_run),
        ("testset.import.dimse", DIMSE_SET),
        ("run.export.dimse", configured.seg_run),
    ]
    at = _open(configured, "inspector", "pages/audit.py")
    at.selectbox(key="audit-preset").select("PACS transfers (imports and exports)").run()
    assert not at.exception
    transfers = at.dataframe[0].value
    assert list(transfers["direction"]) == [
        "export to PACS",
        "import from PACS",
        "export to PACS",
        "export to PACS",
        "import from PACS",
        "import from PACS",
    ]
    assert list(transfers["protocol"]) == ["DIMSE"] * 2 + ["DICOMweb"] * 4
    assert list(transfers["server"]) == [node.public_url] * 2 + [configured.orthanc.url] * 4
    assert list(transfers["record"])[:2] == [f"run {configured.seg_run}", f"test_set {DIMSE_SET}"]
    assert list(transfers["sent or retrieved now"])[:2] == [0, 1]
    assert list(transfers["already present"])[0] == 6
    assert list(transfers["already present"])[2:4] == [6, 0]
    assert list(transfers["sent or retrieved now"])[2:4] == [0, 6]
    assert list(transfers["studies"])[4:] == [1, 2]
    assert list(transfers["record"])[5] == f"test_set {SET_NAME}"
    entries = at.dataframe[1].value
    assert set(entries["action"]) == set(actions)
    everything = " ".join(entries["new"])
    assert configured.orthanc.password not in everything and WRONG_PASSWORD not in everything
    at.selectbox(key="audit-preset").select("PACS server configuration").run()
    config_entries = at.dataframe[0].value
    assert list(config_entries["action"]) == [
        "pacs_server.add",
        "pacs_server.update",
        "pacs_server.add",
        "pacs_server.add",
    ]


# --------------------------------------------------------------------------- browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.browser
@pytest.mark.slow
def _appears(locator: Any, timeout: float = 10_000) -> bool:
    """Whether ``locator`` becomes visible within ``timeout`` milliseconds."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.wait_for(timeout=timeout)
    except PlaywrightTimeout:
        return False
    return True


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_pacs_page_in_the_browser(configured: Bench) -> None:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(configured.workdir)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(APP_MAIN),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
            "--client.toolbarMode",
            "minimal",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start")
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1250})
                page.goto(url)
                page.get_by_label("Username").wait_for(timeout=60_000)
                page.get_by_label("Username").fill("qa.author")
                page.get_by_role("textbox", name="Password").fill(ACCOUNTS["qa.author"][2])
                page.get_by_role("button", name="Sign in").click()
                page.get_by_text("Signed in as").wait_for(timeout=60_000)
                page.locator('[data-testid="stSidebarNav"] a', has_text="PACS").first.click()
                page.get_by_text("Find studies").wait_for(timeout=60_000)
                uids = "\n".join([configured.studies["CT"], configured.studies["MR"]])
                page.get_by_label("Study Instance UIDs (one per line, optional)").fill(uids)
                page.get_by_role("button", name="Search").click()
                page.get_by_text("2 studies on orthanc").wait_for(timeout=60_000)
                for count, label in enumerate(("2004-01-19 CT e+1", "2004-08-26 MR"), start=1):
                    chosen = page.get_by_role(
                        "button", name=f"Import {count} {'study' if count == 1 else 'studies'}"
                    )
                    for _ in range(3):  # a click on a busy page can miss the opening list
                        page.get_by_text("Choose the studies").or_(
                            page.locator('[data-testid="stMultiSelect"] input')
                        ).first.click()
                        option = page.get_by_role("option", name=label).first
                        if option.is_visible() or _appears(option):
                            option.click()
                        page.keyboard.press("Escape")
                        if _appears(chosen):
                            break
                page.get_by_role("textbox", name="New test-set name").fill("lung-ct-2004")
                page.get_by_role("textbox", name="New test-set name").press("Enter")
                page.get_by_role("button", name="Import 2 studies").wait_for(timeout=30_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(SHOTS / "pacs.png"))
            finally:
                browser.close()
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert (SHOTS / "pacs.png").stat().st_size > 10_000
