"""Writing a report file so that a reader never sees it half-written."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from workbench.errors import ReportError

__all__ = ["write_atomically"]


def write_atomically(pdf: bytes, out: Path, *, what: str = "the report") -> str:
    """Write ``pdf`` to ``out`` through a temporary file in its folder; its SHA-256.

    Parameters
    ----------
    pdf : bytes
    out : Path
        The file to create or replace (mode 0644: a report is a shared document).
    what : str, default "the report"
        How the error message names the file.

    Raises
    ------
    ReportError
        The file cannot be written; nothing under ``out`` changed.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=".report-", suffix=".pdf", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pdf)
        os.chmod(tmp_name, 0o644)  # unlike mkstemp's 0600
        os.replace(tmp_name, out)
    except OSError as error:
        Path(tmp_name).unlink(missing_ok=True)
        raise ReportError(f"Cannot write {what} to {out}: {error.strerror}.") from None
    return hashlib.sha256(pdf).hexdigest()
