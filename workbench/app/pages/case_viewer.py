"""Case viewer: one case of a run with the model's and the reference segmentations."""

from __future__ import annotations

import streamlit as st

from workbench.app import _session, _viewer
from workbench.errors import WorkbenchError
from workbench.services import views

me = _session.require_page("case_viewer")
wb = _session.workbench()
st.title("Case viewer")

run_uid = st.query_params.get("run")
case_id = st.query_params.get("case")
if not run_uid or not case_id:
    st.info("Open a case from the per-case table of the Results page.")
    st.page_link("pages/results.py", label="Results", icon=":material/monitoring:")
    st.stop()

try:
    images = views.case_images(wb, me, run_uid, case_id)
except WorkbenchError as error:
    st.warning(_session.esc(error))
    st.stop()

st.markdown(
    f"Run **{_session.esc(run_uid)}**, case **{_session.esc(case_id)}** ({images.status.value})"
    + (f": {_session.esc(images.reason)}" if images.reason else "")
)
shown = {
    k: v
    for k, v in images.metrics.items()
    if isinstance(v, int | float | str) and k != "segmentation_note"
}
if shown:
    st.dataframe([shown], hide_index=True)
overlays = {
    "Model": [images.model_mask] if images.model_mask else [],
    "Reference": list(images.reference_segs),
}
st.caption(
    f"Model output in orange, reference ({_session.esc(images.reference_rule)} "
    "of the readers) in blue."
)
_viewer.show_viewer(
    f"case-{run_uid}-{case_id}", images.ct_paths, overlays, rule=images.reference_rule
)
st.page_link(
    "pages/results.py",
    label="Back to the results",
    icon=":material/arrow_back:",
    query_params={"run": run_uid},
)
