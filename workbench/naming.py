"""Names that reach the file system: one pattern, one place.

Test sets, models, model versions, reports and runs are named by users (or by
files users hand in) and those names become folder and file names under the
workdir. Every such name is checked here against one pattern, and every path
built from one is resolved and required to stay inside its parent folder, so a
name such as ``../keys``, an absolute path, a symlink that leads out of the
workdir, a newline or a right-to-left override can neither escape the workdir
nor forge lines in listings.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from workbench.errors import ConfigurationError, WorkbenchError

__all__ = ["NAME_PATTERN", "InvalidNameError", "check_name", "resolve_inside"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
"""Letters, digits, ``.``, ``_``, ``+`` and ``-``; starts with a letter or digit; 1-128 long."""


class InvalidNameError(WorkbenchError, ValueError):
    """A name that would reach the file system does not match :data:`NAME_PATTERN`."""


def _describe(value: str) -> str:
    shown = "".join(
        ch if ch.isprintable() and unicodedata.category(ch) not in {"Cf", "Zl", "Zp"} else "?"
        for ch in value[:40]
    )
    return repr(shown + ("..." if len(value) > 40 else ""))


def check_name(value: str, *, what: str = "name") -> str:
    """Return ``value`` when it is safe as a single path component.

    Parameters
    ----------
    value : str
        A test-set, model, version, report or run name.
    what : str, optional
        What the name names, for the error message (``"model version"``...).

    Returns
    -------
    str
        ``value`` unchanged.

    Raises
    ------
    InvalidNameError
        When ``value`` is empty, longer than 128 characters, is ``.``/``..``,
        or holds anything other than letters, digits, ``.``, ``_``, ``+``,
        ``-`` (no ``/``, ``\\``, spaces, newlines, control or bidirectional
        formatting characters), or does not start with a letter or digit.

    Examples
    --------
    >>> check_name("demo-good")
    'demo-good'
    >>> check_name("../keys", what="model name")
    Traceback (most recent call last):
    ...
    workbench.naming.InvalidNameError: Invalid model name '../keys': expected 1-128 ...
    """
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or value in {".", ".."}:
        raise InvalidNameError(
            f"Invalid {what} {_describe(str(value))}: expected 1-128 characters of letters, "
            "digits, '.', '_', '+' or '-', starting with a letter or digit "
            "(no '/', spaces, newlines or control characters)."
        )
    return value


def resolve_inside(parent: Path, *parts: str, what: str = "name") -> Path:
    """Join checked name parts onto ``parent`` and require the result to stay inside it.

    Parameters
    ----------
    parent : Path
        The folder the result must lie in (e.g. the workdir's ``models/``).
    *parts : str
        Path components, each checked with :func:`check_name`.
    what : str, optional
        What the parts name, for the error message.

    Returns
    -------
    Path
        ``parent / parts...``, resolved (symlinks followed).

    Raises
    ------
    InvalidNameError
        When a part is not a safe name.
    ConfigurationError
        When the resolved path lies outside ``parent`` (a symlink leading out).
    """
    for part in parts:
        check_name(part, what=what)
    base = Path(parent).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise ConfigurationError(
            f"The path for {what} {'/'.join(parts)!r} resolves outside {base} (found {target}); "
            "a symbolic link in the workdir points elsewhere. Remove it and try again."
        )
    return target
