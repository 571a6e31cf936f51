"""The pages of the app and which roles may use them.

A page is listed in the navigation only for roles that may use it; the
services check the permission matrix again for every action.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.services.accounts import allowed

__all__ = ["PageDef", "PAGES", "pages_for", "page_by_key"]


@dataclass(frozen=True, slots=True)
class PageDef:
    """One page module.

    Parameters
    ----------
    key : str
        Also the URL path.
    path : str
        Module file relative to ``main.py``.
    title, icon, section : str
    any_of : tuple of str
        Permission-matrix actions; the page is shown when the role has one of
        them (empty: every signed-in role).
    hidden : bool
        Reachable by links only (not listed in the sidebar).
    """

    key: str
    path: str
    title: str
    icon: str
    section: str
    any_of: tuple[str, ...] = ()
    hidden: bool = False

    def visible_to(self, role: str) -> bool:
        """Whether ``role`` may open this page."""
        return not self.any_of or any(allowed(role, action) for action in self.any_of)


PAGES: tuple[PageDef, ...] = (
    PageDef("overview", "pages/overview.py", "Overview", ":material/home:", "Workbench"),
    PageDef(
        "test_sets",
        "pages/test_sets.py",
        "Test sets",
        ":material/folder_zip:",
        "Inputs",
        ("run.view",),
    ),
    # QA staff: import test sets from, and export runs to, the configured PACS servers.
    PageDef(
        "pacs",
        "pages/pacs.py",
        "PACS",
        ":material/cloud_sync:",
        "Inputs",
        ("testset.import", "run.start"),
    ),
    PageDef("models", "pages/models.py", "Models", ":material/neurology:", "Inputs", ("run.view",)),
    PageDef(
        "protocols", "pages/protocols.py", "Protocols", ":material/rule:", "Inputs", ("run.view",)
    ),
    PageDef("runs", "pages/runs.py", "Runs", ":material/play_circle:", "Validation", ("run.view",)),
    PageDef(
        "results",
        "pages/results.py",
        "Results",
        ":material/monitoring:",
        "Validation",
        ("run.view",),
    ),
    PageDef(
        "case_viewer",
        "pages/case_viewer.py",
        "Case viewer",
        ":material/visibility:",
        "Validation",
        ("run.view",),
        hidden=True,
    ),
    # Unblinded: QA and auditors only (the roles that verify test sets), never clinical
    # reviewers; workbench.services.explorer refuses reviewers again on every call.
    PageDef(
        "case_explorer",
        "pages/case_explorer.py",
        "Case explorer",
        ":material/biotech:",
        "Validation",
        ("testset.verify",),
    ),
    PageDef(
        "reader_studies",
        "pages/reader_studies.py",
        "Reader studies",
        ":material/group:",
        "Validation",
        ("study.read", "study.view"),
    ),
    PageDef(
        "adjudication",
        "pages/adjudication.py",
        "Adjudication",
        ":material/gavel:",
        "Validation",
        ("discrepancy.adjudicate",),
    ),
    PageDef(
        "reports",
        "pages/reports.py",
        "Reports",
        ":material/description:",
        "Evidence",
        ("run.view", "report.verify"),
    ),
    PageDef(
        "audit",
        "pages/audit.py",
        "Audit trail",
        ":material/receipt_long:",
        "Evidence",
        ("audit.view",),
    ),
    PageDef(
        "admin",
        "pages/admin.py",
        "Users and PACS",
        ":material/manage_accounts:",
        "Administration",
        ("user.manage", "pacs.configure"),
    ),
    PageDef("account", "pages/account.py", "My account", ":material/person:", "Administration"),
)


def pages_for(role: str) -> list[PageDef]:
    """The pages ``role`` may open, in navigation order."""
    return [p for p in PAGES if p.visible_to(role)]


def page_by_key(key: str) -> PageDef:
    """A page by its key."""
    return next(p for p in PAGES if p.key == key)
