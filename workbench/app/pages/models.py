"""Models: register a candidate model; its card and file hashes."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from workbench.app import _session
from workbench.errors import WorkbenchError
from workbench.inference.registry import ModelSpec
from workbench.services import models, views

me = _session.require_page("models")
wb = _session.workbench()
st.title("Models")

if _session.can("model.register"):
    with st.expander("Register a model", icon=":material/add:"):
        st.caption(
            "A TorchScript file or MONAI bundle folder on the workbench server, "
            "with its specification "
            "(JSON of the model spec: name, version, task, format, input, intended_use)."
        )
        with st.form("register-model"):
            path = st.text_input("Model file or bundle folder")
            spec_text = st.text_area("Specification (JSON)", height=180)
            card_text = st.text_area(
                "Model card (JSON: training data, known limitations)", value="{}", height=100
            )
            submitted = st.form_submit_button("Register", type="primary")
        if submitted:
            try:
                spec = ModelSpec.from_json(spec_text)
                card = json.loads(card_text or "{}")
            except (ValueError, TypeError) as error:
                st.error(f"The specification or card is not valid: {_session.esc(error)}")
            else:
                with _session.guard():
                    info = models.register_model(wb, me, path, spec, card=card)
                    st.success(f"Registered {_session.esc(info.ref)}, digest {info.digest}.")

registered = views.list_models(wb, me)
if not registered:
    st.info("No model registered yet.")
    st.stop()
st.dataframe(
    pd.DataFrame(
        [
            {
                "model": m.ref,
                "task": m.task,
                "format": m.format,
                "digest (SHA-256)": m.digest,
                "registered by": m.registered_by,
                "registered at": m.created_at,
            }
            for m in registered
        ]
    ),
    hide_index=True,
    width="stretch",
)
chosen = st.selectbox("Model", [m.ref for m in registered], key="model-choice")
info = next(m for m in registered if m.ref == chosen)
card, files, spec_tab = st.tabs(["Model card", "Files and hashes", "Specification"])
with card:
    st.markdown(f"**{_session.esc(info.ref)}** - task {info.task}, format {info.format}")
    st.markdown("**Intended use**")
    st.text(info.intended_use or "(not stated)")
    if info.card:
        for field, value in info.card.items():
            st.markdown(f"**{_session.esc(str(field).replace('_', ' ').capitalize())}**")
            st.text(value if isinstance(value, str) else json.dumps(value, indent=2))
    else:
        st.caption("No model card was given.")
with files:
    st.code(f"model digest {info.digest}", language=None)
    st.dataframe(
        pd.DataFrame([{"file": k, "sha256": v} for k, v in info.files.items()]),
        hide_index=True,
        width="stretch",
    )
    if st.button("Re-hash the files now", key="verify-model"):
        try:
            models.verify_model(wb, info.ref)
        except WorkbenchError as error:
            st.error(_session.esc(error))
        else:
            st.success("The files match the hashes recorded at registration.")
with spec_tab:
    st.json(info.spec)
