"""Where the workbench keeps its data: the workdir, the database URL and key paths.

Every command takes ``--workdir DIR`` (default ``$WORKBENCH_HOME``, else ``./var``).
The embedded SQLite database is ``DIR/workbench.db``; ``--db URL`` or
``WORKBENCH_DB_URL`` points at PostgreSQL instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Workdir", "resolve_workdir"]


@dataclass(frozen=True, slots=True)
class Workdir:
    """Paths of one workbench installation.

    Parameters
    ----------
    root : Path
        The workdir.
    db_url : str
        SQLAlchemy URL of the records database.
    """

    root: Path
    db_url: str

    @property
    def reports_dir(self) -> Path:
        """Folder where built and sealed PDF reports are written."""
        return self.root / "reports"

    @property
    def keys_dir(self) -> Path:
        """Folder with the workbench's private keys and certificates (mode 0700)."""
        return self.root / "keys"

    @property
    def models_dir(self) -> Path:
        """Folder where registered model files are copied."""
        return self.root / "models"

    @property
    def runs_dir(self) -> Path:
        """Folder with per-run outputs (predicted DICOM SEG, environment snapshots)."""
        return self.root / "runs"

    @property
    def testsets_dir(self) -> Path:
        """Default folder for test sets that the workbench generates itself."""
        return self.root / "testsets"

    def ensure(self) -> Workdir:
        """Create the workdir's folders (keys with owner-only permissions)."""
        for path in (self.root, self.reports_dir, self.models_dir, self.runs_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        return self


def resolve_workdir(workdir: str | Path | None = None, db_url: str | None = None) -> Workdir:
    """Resolve the workdir and database URL from arguments and environment.

    Parameters
    ----------
    workdir : str or Path, optional
        Explicit workdir; else ``$WORKBENCH_HOME``; else ``./var``.
    db_url : str, optional
        Explicit database URL; else ``$WORKBENCH_DB_URL``; else SQLite in the workdir.

    Returns
    -------
    Workdir
    """
    root = Path(workdir or os.environ.get("WORKBENCH_HOME") or "var").expanduser().resolve()
    url = db_url or os.environ.get("WORKBENCH_DB_URL") or f"sqlite:///{root / 'workbench.db'}"
    return Workdir(root=root, db_url=url)
