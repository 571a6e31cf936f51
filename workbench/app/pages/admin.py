"""Administration: accounts (roles, unlock, password reset, disable) and PACS servers.

PACS servers are the DICOMweb servers QA staff may import from and export to on
the PACS page: add, change (a new version), test the connection, retire.
Secrets are never entered here; a server names where its secret lives.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.services import accounts, pacs_servers

me = _session.require_page("admin")
wb = _session.workbench()
st.title("Users and PACS servers")
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

# --------------------------------------------------------------------------- PACS servers

st.header("PACS servers", divider="gray")
st.caption(
    "PACS servers that QA staff import test sets from and export results to: DICOMweb "
    "servers, or DIMSE nodes (C-FIND, C-GET, C-STORE) for a PACS without DICOMweb. Never "
    "type a password or token here: name the environment variable of the workbench host that "
    "holds it, or a JSON credentials file of mode 0600. Every change adds a version; servers "
    "are retired, never deleted."
)
AUTH_KINDS = [k.value for k in pacs_servers.PacsAuthKind]
PROTOCOLS = [p.value for p in pacs_servers.PacsProtocol]
PROTOCOL_LABELS = {"dicomweb": "DICOMweb", "dimse": "DIMSE (C-FIND, C-GET, C-STORE)"}
NOTICE = "pacs-admin-notice"
if NOTICE in st.session_state:
    st.success(st.session_state.pop(NOTICE))


def _done(message: str) -> None:
    """Show ``message`` after re-running the page, so that the tables include the change."""
    st.session_state[NOTICE] = message
    st.rerun()


configured = pacs_servers.list_servers(wb, me, include_retired=True)
if configured:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "name": s.name,
                    "version": s.version,
                    "status": s.status.value,
                    "protocol": PROTOCOL_LABELS[str(s.config.protocol)],
                    "address": s.address,
                    "authentication": str(s.config.auth_kind),
                    "secret from": s.secret_source,
                    "TLS verified": s.config.verify_tls,
                    "CA bundle": s.config.ca_bundle or "",
                    "changed by": s.created_by,
                    "changed at": s.created_at,
                    "reason": s.reason or "",
                }
                for s in configured
            ]
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.info("No PACS server is configured yet.")


def _config_form(
    prefix: str, current: pacs_servers.PacsServerConfig | None
) -> pacs_servers.PacsServerConfig:
    """The configuration fields of a server form, pre-filled with ``current``."""
    top = st.columns([1, 2, 1])
    protocol = top[0].selectbox(
        "Protocol",
        PROTOCOLS,
        index=PROTOCOLS.index(str(current.protocol)) if current else 0,
        format_func=PROTOCOL_LABELS.__getitem__,
        key=f"{prefix}-protocol",
    )
    url = top[1].text_input(
        "DICOMweb root URL, or the DIMSE node as AE@HOST:PORT",
        value=current.url if current else "",
        placeholder="https://pacs.example.org/dicom-web or ORTHANC@pacs.example.org:4242",
        key=f"{prefix}-url",
    )
    calling_ae = top[2].text_input(
        "Calling AE title (DIMSE)",
        value=(current.calling_ae or "") if current else "",
        placeholder=pacs_servers.DEFAULT_CALLING_AE,
        help="The workbench's AE title; the PACS must know it and allow it C-FIND, C-GET and "
        "C-STORE.",
        key=f"{prefix}-calling-ae",
    )
    kind = st.selectbox(
        "Authentication (DICOMweb; 'none' for DIMSE)",
        AUTH_KINDS,
        index=AUTH_KINDS.index(str(current.auth_kind)) if current else 0,
        key=f"{prefix}-auth",
    )
    cols = st.columns(3)
    username = cols[0].text_input(
        "User name (basic, with an environment variable)",
        value=(current.username or "") if current else "",
        key=f"{prefix}-user",
    )
    secret_env = cols[1].text_input(
        "Environment variable holding the password or token",
        value=(current.secret_env or "") if current else "",
        help="The variable's NAME, e.g. PACS_MAIN_PASSWORD; its value is never stored.",
        key=f"{prefix}-env",
    )
    credentials_file = cols[2].text_input(
        "or credentials file (mode 0600)",
        value=(current.credentials_file or "") if current else "",
        help='Absolute path of {"user": ..., "password": ...} or {"token": ...}.',
        key=f"{prefix}-file",
    )
    tls_cols = st.columns([1, 3])
    verify_tls = tls_cols[0].checkbox(
        "Verify TLS certificates",
        value=current.verify_tls if current else True,
        help="Turn off on a test bench only.",
        key=f"{prefix}-tls",
    )
    ca_bundle = tls_cols[1].text_input(
        "CA bundle (PEM, optional)",
        value=(current.ca_bundle or "") if current else "",
        help="Absolute path of the site's certificate authorities.",
        key=f"{prefix}-ca",
    )
    return pacs_servers.PacsServerConfig(
        url=url,
        auth_kind=str(kind),
        username=username,
        secret_env=secret_env,
        credentials_file=credentials_file,
        verify_tls=bool(verify_tls),
        ca_bundle=ca_bundle,
        protocol=str(protocol),
        calling_ae=calling_ae if str(protocol) == "dimse" else None,
    )


add_tab, change_tab, history_tab = st.tabs(
    ["Add a server", "Test, change or retire", "Version history"]
)
with add_tab:
    with st.form("pacs-add", clear_on_submit=False):
        new_name = st.text_input("Name (shown to QA staff; never reused)", key="pacs-add-name")
        fields = _config_form("pacs-add", None)
        added = st.form_submit_button("Add server", type="primary")
    if added:
        with _session.guard():
            made_server = pacs_servers.add_server(
                wb,
                me,
                new_name,
                fields,
            )
            _done(
                f"Added PACS server {_session.esc(made_server.name)} (version 1); "
                "test its connection next."
            )

active = [s for s in configured if s.active]
with change_tab:
    if not active:
        st.caption("No active server.")
    else:
        chosen_name = st.selectbox("Server", [s.name for s in active], key="pacs-admin-target")
        server = next(s for s in active if s.name == chosen_name)
        st.caption(
            f"Version {server.version}: {_session.esc(server.address)}, "
            f"secret from {_session.esc(server.secret_source)}."
        )
        if st.button("Test connection", icon=":material/lan:", key="pacs-test"):
            with _session.guard():
                check = pacs_servers.check_connection(wb, me, server.name)
                if check.ok:
                    st.success(_session.esc(check.message))
                else:
                    st.error(_session.esc(check.message))
        prefix = f"pacs-edit-{server.name}-{server.version}"
        with st.form("pacs-change"):
            st.markdown("**Change** (saved as a new version)")
            changed_fields = _config_form(prefix, server.config)
            change_reason = st.text_input(
                "Reason (recorded in the audit trail)", key=f"{prefix}-reason"
            )
            save = st.form_submit_button(f"Save as version {server.version + 1}")
        if save:
            with _session.guard():
                saved = pacs_servers.update_server(
                    wb,
                    me,
                    server.name,
                    changed_fields,
                    reason=change_reason,
                )
                _done(f"Saved {_session.esc(saved.name)} as version {saved.version}.")
        with st.popover("Retire this server", icon=":material/archive:"):
            retire_reason = st.text_input(
                "Reason (recorded in the audit trail)", key="pacs-retire-reason"
            )
            if st.button("Retire", key="pacs-retire"):
                with _session.guard():
                    gone = pacs_servers.retire_server(wb, me, server.name, reason=retire_reason)
                    _done(
                        f"Retired {_session.esc(gone.name)} (version {gone.version}); "
                        "it is no longer offered and its history stays on record."
                    )

with history_tab:
    if configured:
        shown_name = st.selectbox("Server", [s.name for s in configured], key="pacs-history-target")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "version": h.version,
                        "status": h.status.value,
                        "protocol": PROTOCOL_LABELS[str(h.config.protocol)],
                        "address": h.address,
                        "authentication": str(h.config.auth_kind),
                        "secret from": h.secret_source,
                        "TLS verified": h.config.verify_tls,
                        "CA bundle": h.config.ca_bundle or "",
                        "by": h.created_by,
                        "at": h.created_at,
                        "reason": h.reason or "",
                    }
                    for h in pacs_servers.server_history(wb, me, shown_name)
                ]
            ),
            hide_index=True,
            width="stretch",
        )
