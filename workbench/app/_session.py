"""Sign-in state, the shared workbench handle and small rendering helpers.

``st.session_state`` keeps only the login token and the username (and ids the
pages pass each other); the actor is re-read from the records layer on every
script run through :func:`workbench.services.accounts.resume_session`, which
also enforces the inactivity timeout.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.services import accounts
from workbench.services.context import Actor, Workbench

__all__ = [
    "TOKEN_KEY",
    "USERNAME_KEY",
    "NOTICE_KEY",
    "workbench",
    "current_actor",
    "set_actor",
    "actor",
    "sign_out",
    "can",
    "esc",
    "guard",
    "SIGNATURE_MEANINGS",
    "signature_form",
    "require_page",
]

TOKEN_KEY = "auth_token"  # noqa: S105 - a session-state key, not a secret
USERNAME_KEY = "auth_username"
NOTICE_KEY = "auth_notice"

#: What each e-signature meaning attests (21 CFR 11.50(a)(3)), shown before signing.
SIGNATURE_MEANINGS: dict[str, str] = {
    "responsibility": (
        "Responsibility: I take responsibility that this test set is complete, passed the "
        "data-quality gate and is frozen exactly as listed in its manifest."
    ),
    "approved": "Approval: I approve this record as correct and fit for its stated purpose.",
    "authored": "Authorship: I wrote this report and attest that it reflects the stored results.",
    "reviewed": "Review: I reviewed this report and its clinical content.",
    "adjudicated": (
        "Adjudication: I reviewed the images of this case and this decision is my "
        "clinical judgement."
    ),
}

_run_state = threading.local()


@st.cache_resource(show_spinner=False)
def _open_workbench(home: str, db_url: str) -> Workbench:
    return Workbench.open(home or None, db_url or None)


def workbench() -> Workbench:
    """The shared :class:`Workbench` of ``$WORKBENCH_HOME`` / ``$WORKBENCH_DB_URL``."""
    return _open_workbench(
        os.environ.get("WORKBENCH_HOME", ""), os.environ.get("WORKBENCH_DB_URL", "")
    )


def current_actor() -> Actor | None:
    """Resume the login session held in ``st.session_state`` (records activity).

    Returns
    -------
    Actor or None
        None when nobody is signed in or the session expired; the reason is
        left in ``st.session_state[NOTICE_KEY]`` for the sign-in page.
    """
    token = st.session_state.get(TOKEN_KEY)
    if not token:
        return None
    try:
        found = accounts.resume_session(workbench(), token)
    except WorkbenchError as error:
        st.session_state.pop(TOKEN_KEY, None)
        st.session_state.pop(USERNAME_KEY, None)
        st.session_state[NOTICE_KEY] = str(error)
        return None
    return found


def set_actor(value: Actor | None) -> None:
    """Make the actor of this script run available to the page being rendered."""
    _run_state.actor = value


def actor() -> Actor:
    """The signed-in actor of this script run (pages are only routed when signed in)."""
    found: Actor | None = getattr(_run_state, "actor", None)
    if found is None or found.username != st.session_state.get(USERNAME_KEY):
        found = current_actor()
        if found is None:
            # Signed out or expired while another page was current: go to sign-in.
            st.switch_page(str(Path(__file__).resolve().parent / "pages" / "login.py"))
        set_actor(found)
    assert found is not None
    return found


def sign_out() -> None:
    """End the login session and forget the token."""
    token = st.session_state.pop(TOKEN_KEY, None)
    st.session_state.pop(USERNAME_KEY, None)
    if token:
        try:
            accounts.close_session(workbench(), token)
        except WorkbenchError:
            pass
    set_actor(None)


def can(action: str, who: Actor | None = None) -> bool:
    """Whether the signed-in role may perform ``action`` (the services check again)."""
    who = who or actor()
    return accounts.allowed(who.role, action)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def esc(text: object) -> str:
    """Escape ``text`` from data (headers, names, comments) for Markdown display."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


@contextmanager
def guard(success: str | None = None) -> Iterator[None]:
    """Show a workbench error as a message instead of a traceback."""
    try:
        yield
    except WorkbenchError as error:
        st.error(esc(error))
    except (FileNotFoundError, ValueError) as error:
        st.error(esc(error))
    else:
        if success:
            st.success(success)


def signature_form(key: str, meaning: str, record: str) -> str | None:
    """An e-signature block: the meaning, the record and a password re-entry.

    Parameters
    ----------
    key : str
        Unique widget key prefix.
    meaning : str
        Signature meaning (key of :data:`SIGNATURE_MEANINGS`).
    record : str
        What is being signed, shown to the signer (escaped).

    Returns
    -------
    str or None
        The re-entered password once the form is submitted, else None.
    """
    who = actor()
    with st.form(f"{key}-form", clear_on_submit=True):
        st.markdown(f"**Electronic signature** on {esc(record)}")
        st.info(SIGNATURE_MEANINGS.get(meaning, meaning))
        st.caption(
            f"Signing as {esc(who.full_name)} ({esc(who.username)}), role {esc(who.role)}. "
            "Re-enter your password: the signature is legally binding."
        )
        password = st.text_input("Password", type="password", key=f"{key}-password")
        submitted = st.form_submit_button(f"Sign ({meaning})", type="primary")
    if submitted:
        if not password:
            st.error("Enter your password to sign.")
            return None
        return str(password)
    return None


def require_page(key: str) -> Actor:
    """The signed-in actor, after checking that their role may open page ``key``.

    The navigation lists only permitted pages; this refuses a page reached
    any other way.
    """
    from workbench.app._nav import page_by_key

    who = actor()
    page = page_by_key(key)
    if not page.visible_to(who.role):
        st.error(f"The page '{page.title}' is not available to the role '{who.role}'.")
        st.stop()
    return who
