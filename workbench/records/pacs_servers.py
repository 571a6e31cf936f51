"""Records of the PACS servers (DICOMweb or DIMSE) an administrator configured.

A server is known by its name; every change (a new URL, other credentials, a
CA bundle, retirement) adds a version, and the database refuses UPDATE and
DELETE on the table, so each configuration ever used stays on record. The
newest version of a name is the one in force; a retired server keeps its
history and is no longer offered.

Secrets are never stored: a version names where the secret lives, either an
environment variable of the workbench host or a credentials file readable by
its owner only (mode 0600).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from workbench.records.models import Base, _check_in, utcnow

__all__ = ["PacsAuthKind", "PacsProtocol", "PacsServerStatus", "PacsServerVersion"]


class PacsProtocol(StrEnum):
    """How the workbench talks to a PACS."""

    #: QIDO-RS, WADO-RS and STOW-RS over HTTP(S); ``url`` is the service root.
    DICOMWEB = "dicomweb"
    #: C-ECHO, C-FIND, C-GET and C-STORE; ``url`` is the node as ``AE@HOST:PORT``.
    DIMSE = "dimse"


class PacsAuthKind(StrEnum):
    """How the workbench authenticates to a DICOMweb server (a DIMSE node: ``none``)."""

    NONE = "none"
    BASIC = "basic"
    BEARER = "bearer"


class PacsServerStatus(StrEnum):
    """Whether a configured server is offered to users."""

    ACTIVE = "active"
    RETIRED = "retired"


class PacsServerVersion(Base):
    """One version of a configured PACS server (append-only)."""

    __tablename__ = "pacs_servers"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        _check_in("auth_kind", PacsAuthKind),
        _check_in("status", PacsServerStatus),
        _check_in("protocol", PacsProtocol),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    #: ``dicomweb`` or ``dimse`` (:class:`PacsProtocol`).
    protocol: Mapped[str] = mapped_column(
        String(16), default=PacsProtocol.DICOMWEB.value, server_default=PacsProtocol.DICOMWEB.value
    )
    #: DICOMweb service root URL, or a DIMSE node as ``AE@HOST:PORT``.
    url: Mapped[str] = mapped_column(Text)
    #: The workbench's own AE title towards a DIMSE node (None for DICOMweb).
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    auth_kind: Mapped[str] = mapped_column(String(16))
    #: HTTP basic user name when the password comes from ``secret_env``.
    username: Mapped[str | None] = mapped_column(String(128))
    #: Name of the environment variable holding the password or token (never the value).
    secret_env: Mapped[str | None] = mapped_column(String(128))
    #: Path of a 0600 JSON credentials file (never its content).
    credentials_file: Mapped[str | None] = mapped_column(Text)
    verify_tls: Mapped[bool]
    ca_bundle: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PacsServerStatus.ACTIVE.value)
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
