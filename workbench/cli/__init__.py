"""The ``workbench`` command line: the same services as the app, scriptable.

Every command takes ``--workdir DIR`` (default ``$WORKBENCH_HOME``, else
``./var``) and ``--db URL`` (default ``$WORKBENCH_DB_URL``, else SQLite in the
workdir). Commands that act as a user read ``--user``/``--password`` or
``WORKBENCH_USER``/``WORKBENCH_PASSWORD`` and never prompt when those are set.
Errors are printed as one clear line and the exit code is non-zero.

One module per command group (``testsets``, ``models``, ``protocols``, ``runs``,
``adjudication``, ``reports``, ``audit``, ``users``, ``studies``, ``pacs``; top-level commands in
``toplevel``); options, sign-in and error handling are declared once in ``_common``;
terminal rendering of results lives in ``rendering``.
"""

from workbench.cli import (  # noqa: F401 - importing the modules registers their commands
    adjudication,
    audit,
    models,
    pacs,
    protocols,
    reports,
    runs,
    studies,
    testsets,
    toplevel,
    users,
)
from workbench.cli._common import app, main
from workbench.cli.rendering import render_demo, render_run

__all__ = ["app", "main", "render_demo", "render_run"]
