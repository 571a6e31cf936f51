"""Entry file of the Validation Workbench app (``workbench app`` runs it).

Signs the user in, then routes with ``st.navigation`` to the pages the role may
use (:mod:`workbench.app._nav`). Nothing is computed here.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from workbench.app import _session
from workbench.app._nav import pages_for
from workbench.services import views

_HERE = Path(__file__).resolve().parent

st.set_page_config(
    page_title="Validation Workbench", page_icon=":material/verified:", layout="wide"
)

signed_in = _session.current_actor()
_session.set_actor(signed_in)

_login_path = str(_HERE / "pages" / "login.py")
if signed_in is None:
    login = st.Page(
        str(_HERE / "pages" / "login.py"),
        title="Sign in",
        icon=":material/login:",
        url_path="login",
    )
    st.navigation([login], position="hidden").run()
else:
    must_change = views.account_must_change_password(_session.workbench(), signed_in)
    sections: dict[str, list[st.Page]] = {}
    for page in pages_for(signed_in.role):
        if must_change and page.key != "account":
            continue
        sections.setdefault(page.section, []).append(
            st.Page(
                str(_HERE / page.path),
                title=page.title,
                icon=page.icon,
                url_path=page.key,
                default=page.key == ("account" if must_change else "overview"),
                visibility="hidden" if page.hidden else "visible",
            )
        )
    # Listed (hidden) so that the sign-in page, still current right after signing in,
    # can hand over to the user's start page.
    sections.setdefault("Workbench", []).append(
        st.Page(_login_path, title="Sign in", url_path="login", visibility="hidden")
    )
    with st.sidebar:
        st.markdown(
            f"**{_session.esc(signed_in.full_name)}**  \n"
            f"{_session.esc(signed_in.username)} · role *{signed_in.role}*"
        )
        st.button("Sign out", icon=":material/logout:", key="sign-out", on_click=_session.sign_out)
    if must_change:
        st.warning("Your password was reset or has expired: change it before you continue.")
    st.navigation(sections).run()
