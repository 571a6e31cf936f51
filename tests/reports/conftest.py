"""Fixtures of the report tests (defined in :mod:`report_fixtures`)."""

from report_fixtures import *  # noqa: F403
