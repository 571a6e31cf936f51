"""My account: who I am and changing my password."""

from __future__ import annotations

import streamlit as st

from workbench.app import _session
from workbench.services import accounts

me = _session.require_page("account")
st.title("My account")
st.markdown(f"**{_session.esc(me.full_name)}** ({_session.esc(me.username)}), role *{me.role}*")

with st.form("change-password", clear_on_submit=True):
    st.subheader("Change password")
    old = st.text_input("Current password", type="password")
    new = st.text_input("New password", type="password")
    again = st.text_input("New password again", type="password")
    code = st.text_input(
        "One-time code",
        type="password",
        help="Only after an administrator reset your password: the code they gave you.",
    )
    submitted = st.form_submit_button(
        "Change password", type="primary", key="change-password-submit"
    )
if submitted:
    if new != again:
        st.error("The new passwords differ.")
    else:
        with _session.guard("Password changed."):
            accounts.change_password(
                _session.workbench(), me.username, old, new, reset_code=code.strip() or None
            )
