"""Use cases: the only layer that combines records with the DICOM, quality, inference,
statistics, protocol and report packages. The CLI and the app are thin shells over it.

Every service takes a :class:`~workbench.services.context.Workbench` and, when it acts
for a user, the :class:`~workbench.services.context.Actor` from
:func:`~workbench.services.accounts.login`; permissions are checked here.
"""

from workbench.services.context import Actor, Workbench

__all__ = ["Actor", "Workbench"]
