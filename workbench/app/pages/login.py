"""Sign in: username and password against the records layer."""

from __future__ import annotations

import streamlit as st

from workbench.app import _session
from workbench.errors import AccountLockedError, AuthenticationError, WorkbenchError
from workbench.services import accounts, views

if st.session_state.get(_session.TOKEN_KEY):
    # Signed in already (this page was current when the sign-in succeeded).
    must_change = views.account_must_change_password(_session.workbench(), _session.actor())
    st.switch_page("pages/account.py" if must_change else "pages/overview.py")

st.title("Validation Workbench")
st.caption(
    "Validation of medical-imaging AI models on locked DICOM test sets (21 CFR Part 11 records)."
)

notice = st.session_state.pop(_session.NOTICE_KEY, None)
if notice:
    st.warning(_session.esc(notice))

with st.form("login", clear_on_submit=False):
    username = st.text_input("Username", key="login-username")
    password = st.text_input("Password", type="password", key="login-password")
    submitted = st.form_submit_button("Sign in", type="primary")

if submitted:
    if not username or not password:
        st.error("Enter your username and password.")
    else:
        try:
            found, token = accounts.open_session(_session.workbench(), username, password)
        except AccountLockedError as error:
            st.error(_session.esc(error))
        except AuthenticationError as error:
            st.error(_session.esc(error))
        except WorkbenchError as error:
            st.error(_session.esc(error))
        else:
            st.session_state[_session.TOKEN_KEY] = token
            st.session_state[_session.USERNAME_KEY] = found.username
            st.rerun()

st.caption(
    "Sessions end after a period without activity. Repeated failed sign-ins lock the account; "
    "an administrator unlocks it."
)
