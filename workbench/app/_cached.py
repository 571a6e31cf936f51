"""Cached reads of the pages.

``st.cache_data`` keys every entry by all parameters whose names do not start
with an underscore. Everything that decides what a cached call returns is
therefore a keyed parameter: the database the workbench reads, the content hash
of the stored results and the signed-in actor (username, role and the credential
of the sign-in). The service called inside checks the actor's permission; a
refusal raises and is never cached, so one user's entry is never served to
another. The only unkeyed parameter is the shared :class:`Workbench` handle,
which ``database`` names.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.protocols.results import RunResults
from workbench.services import runs
from workbench.services.context import Actor, Workbench

__all__ = ["run_results"]


@st.cache_data(max_entries=8, show_spinner="Loading the results ...")
def _run_results(
    database: str, run_uid: str, results_sha256: str, actor: Actor, _wb: Workbench
) -> tuple[RunResults, pd.DataFrame]:
    return runs.run_results(_wb, actor, run_uid)


def run_results(
    wb: Workbench, actor: Actor, run_uid: str, results_sha256: str
) -> tuple[RunResults, pd.DataFrame]:
    """A completed run's typed results and per-case frame, cached for this actor.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Part of the cache key: each signed-in user has their own entries.
    run_uid : str
    results_sha256 : str
        SHA-256 of the stored results (the content key).

    Returns
    -------
    tuple of (RunResults, pandas.DataFrame)
        See :func:`workbench.services.runs.run_results`.

    Raises
    ------
    PermissionDeniedError
        The actor may not see the run's results (never cached).
    """
    return _run_results(wb.workdir.db_url, run_uid, results_sha256, actor, wb)
