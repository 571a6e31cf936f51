"""User administration: accounts, roles, unlock, password reset, disable."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.services import accounts

me = _session.require_page("admin")
wb = _session.workbench()
st.title("Users")
st.caption(
    "Administrators manage accounts; they cannot sign or alter validation records. "
    "Accounts are never deleted."
)

users = accounts.list_users(wb, me)
st.dataframe(
    pd.DataFrame(
        [
            {
                "username": u.username,
                "full name": u.full_name,
                "role": u.role,
                "locked": u.locked,
                "disabled": u.disabled,
                "must change password": u.must_change_password,
                "failed attempts": u.failed_attempts,
                "created at": u.created_at,
            }
            for u in users
        ]
    ),
    hide_index=True,
    width="stretch",
)

create, manage = st.tabs(["Create an account", "Unlock, reset or disable"])
with create:
    with st.form("create-user", clear_on_submit=True):
        username = st.text_input("Username")
        full_name = st.text_input("Full name (printed with signatures)")
        role = st.selectbox("Role", [r.value for r in accounts.Role])
        password = st.text_input("Initial password", type="password")
        submitted = st.form_submit_button("Create", type="primary")
    if submitted:
        with _session.guard():
            made = accounts.create_user(
                wb,
                me,
                username=username,
                full_name=full_name,
                role=role,
                password=password,
                must_change_password=True,
            )
            st.success(
                f"Created {_session.esc(made.username)} ({made.role}); "
                "they change the password at first sign-in."
            )

with manage:
    target = st.selectbox("Account", [u.username for u in users], key="admin-target")
    info = next(u for u in users if u.username == target)
    reason = st.text_input("Reason (recorded in the audit trail)", key="admin-reason")
    cols = st.columns(3)
    if cols[0].button("Unlock", disabled=not info.locked, key="admin-unlock"):
        with _session.guard(f"{target} unlocked."):
            accounts.unlock_user(wb, me, target, reason=reason or "unlocked by administrator")
    if cols[2].button(
        "Disable", disabled=info.disabled or target == me.username, key="admin-disable"
    ):
        if not reason.strip():
            st.error("Give a reason to disable an account.")
        else:
            with _session.guard(f"{target} disabled."):
                accounts.disable_user(wb, me, target, reason=reason)
    with cols[1].popover("Reset password"):
        temporary = st.text_input("Temporary password", type="password", key="admin-temp")
        if st.button("Set temporary password", key="admin-reset"):
            with _session.guard():
                done = accounts.reset_password(
                    wb,
                    me,
                    target,
                    new_password=temporary,
                    reason=reason or "reset by administrator",
                )
                st.success(
                    f"Temporary password set for {_session.esc(target)}; they must change it. "
                    "Hand them this one-time code (shown once, never stored); they need it "
                    "with the temporary password to set their own."
                )
                st.code(done.one_time_code or "", language=None)
