"""Fixtures of the service-layer tests (defined in :mod:`service_team`)."""

from service_team import team, test_set_copy  # noqa: F401
