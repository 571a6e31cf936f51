"""PACS servers configured by an administrator, and their use by QA staff.

An administrator (``pacs.configure``) adds, changes and retires named PACS
servers. A DICOMweb server has a root URL, an authentication kind (``none``,
``basic`` or ``bearer``), where the secret lives, TLS verification and an
optional CA bundle. A PACS without DICOMweb is configured as a DIMSE node
(``protocol="dimse"``): its address ``AE@HOST:PORT`` and the AE title the
workbench calls it with; it is queried with C-FIND, imported from with C-GET,
exported to with C-STORE (:mod:`workbench.dicomweb.dimse`) and tested with
C-ECHO and C-FIND. Every change
adds a version (:class:`workbench.records.pacs_servers.PacsServerVersion`, an
append-only table) and an audit entry; nothing is overwritten, and a server is
retired, never deleted.

Secrets are never stored, shown or logged. A server's configuration names
either an environment variable of the workbench host (``secret_env``: the
password of HTTP basic authentication, whose user name is configured, or the
bearer token) or a JSON credentials file of mode 0600 (``credentials_file``, as
read by :func:`workbench.dicomweb.connection.load_credentials`). The secret is
read when a connection is made (:func:`connect`), and only into the
:class:`~workbench.dicomweb.connection.Credentials` of that connection.

QA staff (``testset.import`` or ``run.start``) choose a configured server by
name: :func:`find_studies` (QIDO-RS or C-FIND, patient-free fields only),
:func:`import_studies` and :func:`export_run_to`, which hand over to
:func:`workbench.services.pacs.import_from_dicomweb` (or ``import_from_dimse``)
and :func:`workbench.services.pacs.export_run` (audited there as
``testset.import.dicomweb``, ``testset.import.dimse``, ``run.export.dicomweb`` and
``run.export.dimse``).
:func:`check_connection` is the administrator's "test connection": one QIDO-RS
study query with ``limit=1``, or a C-ECHO.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from workbench.dicom.deidentify import DeidentificationOptions
from workbench.dicomweb.connection import (
    Credentials,
    DicomWebServer,
    describe_failure,
    load_credentials,
    public_url,
)
from workbench.dicomweb.dimse import DimseNode, echo_dimse, find_studies_dimse
from workbench.dicomweb.retrieve import search_all
from workbench.errors import (
    DicomWebError,
    DuplicateError,
    NotFoundError,
    WorkflowError,
)
from workbench.records import audit
from workbench.records.models import User
from workbench.records.pacs_servers import (
    PacsAuthKind,
    PacsProtocol,
    PacsServerStatus,
    PacsServerVersion,
)
from workbench.records.permissions import allowed
from workbench.services import pacs
from workbench.services.context import Actor, Workbench, current_user

__all__ = [
    "ConnectionCheck",
    "DeidentificationOptions",
    "PacsAuthKind",
    "PacsProtocol",
    "PacsServerConfig",
    "PacsServerInfo",
    "PacsServerStatus",
    "StudyMatch",
    "StudyQuery",
    "add_server",
    "check_connection",
    "connect",
    "dimse_node",
    "export_run_to",
    "find_studies",
    "import_studies",
    "list_servers",
    "replace_config",
    "retire_server",
    "server_history",
    "update_server",
]

Progress = Callable[[int, int, str], None] | None

#: Actions whose holders may use a configured server (query, import, export, test).
USE_ACTIONS = ("pacs.configure", "testset.import", "run.start")
CONFIGURE = "pacs.configure"
RECORD_TYPE = "pacs_server"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")

# QIDO-RS study attributes shown in the query table (PS3.18 Table 10.6.3-3); none
# identifies the patient.
_STUDY_FIELDS = {
    "study_uid": "0020000D",
    "study_date": "00080020",
    "study_time": "00080030",
    "accession_number": "00080050",
    "modalities": "00080061",
    "description": "00081030",
    "n_series": "00201206",
    "n_instances": "00201208",
}
#: The same attributes by keyword, as a STUDY-level C-FIND returns them.
_STUDY_KEYWORDS = {
    "study_uid": "StudyInstanceUID",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "modalities": "ModalitiesInStudy",
    "description": "StudyDescription",
    "n_series": "NumberOfStudyRelatedSeries",
    "n_instances": "NumberOfStudyRelatedInstances",
}
#: The AE title the workbench calls a DIMSE node with unless configured otherwise.
DEFAULT_CALLING_AE = "WORKBENCH"
#: Seconds a DIMSE node may take per message (connection, association, each answer).
DIMSE_TIMEOUT = 60.0
#: A Study Instance UID no study has (a UUID-derived root with a zero UUID, PS3.5 B.2),
#: asked for by the connection check of a DIMSE node.
_PROBE_STUDY_UID = "2.25.0"


# --------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class PacsServerConfig:
    """What an administrator configures for a PACS server (never a secret).

    Parameters
    ----------
    url : str
        DICOMweb service root (PS3.18 8.2), e.g. ``https://pacs.example/dicom-web``,
        without user information, query or fragment; for a DIMSE node its address
        ``AE@HOST:PORT``, e.g. ``ORTHANC@pacs.example.org:4242``.
    auth_kind : PacsAuthKind or str, default "none"
        ``none``, ``basic`` (HTTP basic) or ``bearer`` (``Authorization: Bearer``).
    username : str, optional
        Basic authentication's user name when the password comes from ``secret_env``.
    secret_env : str, optional
        NAME of the environment variable holding the password (basic) or the
        token (bearer).
    credentials_file : str, optional
        Absolute path of a JSON file of mode 0600 with ``user`` and ``password``
        (basic) or ``token`` (bearer); instead of ``username`` and ``secret_env``.
    verify_tls : bool, default True
        Verify the server's TLS certificate. Turn off on a test bench only.
    ca_bundle : str, optional
        Absolute path of a PEM file of the certificate authorities to trust
        (a site PKI); by default the system's trust store.
    protocol : PacsProtocol or str, default "dicomweb"
        ``dicomweb`` or ``dimse`` (C-FIND and C-GET; authentication ``none``, no
        TLS settings: a DIMSE node admits the workbench by its AE title).
    calling_ae : str, optional
        DIMSE only: the AE title the workbench presents, which the PACS must know
        and allow C-FIND and C-GET; ``WORKBENCH`` when not given.
    """

    url: str
    auth_kind: PacsAuthKind | str = PacsAuthKind.NONE
    username: str | None = None
    secret_env: str | None = None
    credentials_file: str | None = None
    verify_tls: bool = True
    ca_bundle: str | None = None
    protocol: PacsProtocol | str = PacsProtocol.DICOMWEB
    calling_ae: str | None = None

    def normalized(self) -> PacsServerConfig:
        """The configuration checked and in canonical form.

        Returns
        -------
        PacsServerConfig
            ``auth_kind`` as :class:`PacsAuthKind`, blank optional fields as None,
            the URL without a trailing slash.

        Raises
        ------
        WorkflowError
            One message naming the field, what was expected and what was found
            (never the value of a field that could hold a secret).
        """
        protocol = _protocol(self.protocol)
        if protocol is PacsProtocol.DIMSE:
            return self._normalized_dimse()
        if _blank_to_none(self.calling_ae) is not None:
            raise WorkflowError(
                "A calling AE title belongs to a DIMSE node; a DICOMweb server takes none."
            )
        kind = _auth_kind(self.auth_kind)
        url = _check_url(self.url)
        username = _blank_to_none(self.username)
        secret_env = _blank_to_none(self.secret_env)
        credentials_file = _blank_to_none(self.credentials_file)
        ca_bundle = _blank_to_none(self.ca_bundle)
        if secret_env is not None and not _ENV_NAME.match(secret_env):
            # The value is not echoed: a secret pasted here by mistake must not be shown.
            raise WorkflowError(
                "Expected the NAME of an environment variable in 'secret_env' (letters, digits "
                "and '_', not starting with a digit), found something else; enter the "
                "variable's name, never the secret itself."
            )
        if kind is PacsAuthKind.NONE:
            if username or secret_env or credentials_file:
                raise WorkflowError(
                    "Authentication 'none' takes no user name, environment variable or "
                    "credentials file; choose 'basic' or 'bearer', or leave them empty."
                )
        elif credentials_file is not None:
            if username or secret_env:
                raise WorkflowError(
                    f"Authentication '{kind.value}' takes either a credentials file or "
                    "an environment variable (with a user name for 'basic'), found both."
                )
            _check_credentials_file(credentials_file)
        elif secret_env is None:
            what = "password" if kind is PacsAuthKind.BASIC else "token"
            raise WorkflowError(
                f"Authentication '{kind.value}' needs the name of the environment variable "
                f"holding the {what}, or a credentials file of mode 0600; found neither."
            )
        if kind is PacsAuthKind.BASIC and credentials_file is None:
            if not username:
                raise WorkflowError(
                    "Authentication 'basic' with an environment variable needs the user name; "
                    "found none."
                )
            if ":" in username:
                raise WorkflowError(
                    "Expected an HTTP basic user name without ':' (RFC 7617), found one with ':'."
                )
        if kind is PacsAuthKind.BEARER and username:
            raise WorkflowError(
                "Authentication 'bearer' takes no user name; leave it empty or choose 'basic'."
            )
        if ca_bundle is not None:
            path = Path(ca_bundle)
            if not path.is_absolute() or not path.is_file():
                raise WorkflowError(
                    f"Expected the absolute path of an existing PEM file as CA bundle, "
                    f"found {ca_bundle!r}."
                )
            if not self.verify_tls:
                raise WorkflowError(
                    "A CA bundle is only used to verify TLS certificates; turn TLS "
                    "verification on, or remove the CA bundle."
                )
        return PacsServerConfig(
            url=url,
            auth_kind=kind,
            username=username,
            secret_env=secret_env,
            credentials_file=credentials_file,
            verify_tls=bool(self.verify_tls),
            ca_bundle=ca_bundle,
        )

    def _normalized_dimse(self) -> PacsServerConfig:
        """A DIMSE node's configuration checked: address, calling AE title, nothing else."""
        if _auth_kind(self.auth_kind) is not PacsAuthKind.NONE or any(
            _blank_to_none(v) for v in (self.username, self.secret_env, self.credentials_file)
        ):
            raise WorkflowError(
                "A DIMSE node takes no user name, password or token (it admits the "
                "workbench by its calling AE title); choose authentication 'none'."
            )
        if _blank_to_none(self.ca_bundle) is not None or not self.verify_tls:
            raise WorkflowError(
                "A DIMSE node is reached without TLS here, so TLS settings do not apply; "
                "leave 'verify TLS' on and the CA bundle empty."
            )
        calling_ae = _blank_to_none(self.calling_ae) or DEFAULT_CALLING_AE
        try:
            node = DimseNode.parse(str(self.url or ""), calling_ae=calling_ae)
        except DicomWebError as error:
            raise WorkflowError(str(error)) from None
        return PacsServerConfig(
            url=node.address,
            auth_kind=PacsAuthKind.NONE,
            verify_tls=True,
            protocol=PacsProtocol.DIMSE,
            calling_ae=node.calling_ae,
        )


@dataclass(frozen=True, slots=True)
class PacsServerInfo:
    """One version of a configured server as the services show it.

    Parameters
    ----------
    name : str
    version : int
        1 for the first configuration; each change adds one.
    config : PacsServerConfig
    status : PacsServerStatus
    reason : str or None
        Why this version was made (changes and retirement).
    created_by : str
    created_at : datetime.datetime
        UTC.
    """

    name: str
    version: int
    config: PacsServerConfig
    status: PacsServerStatus
    reason: str | None
    created_by: str
    created_at: dt.datetime

    @property
    def active(self) -> bool:
        """Whether the server is offered to users."""
        return self.status is PacsServerStatus.ACTIVE

    @property
    def is_dimse(self) -> bool:
        """Whether the server is a DIMSE node (intake only) rather than DICOMweb."""
        return self.config.protocol == PacsProtocol.DIMSE

    @property
    def address(self) -> str:
        """The DICOMweb root URL, or ``dicom://AE@HOST:PORT`` for a DIMSE node."""
        return f"dicom://{self.config.url}" if self.is_dimse else self.config.url

    @property
    def secret_source(self) -> str:
        """Where the secret is read from, for display (never the secret)."""
        config = self.config
        if self.is_dimse:
            return f"none (DIMSE: calling AE title {config.calling_ae})"
        if config.auth_kind == PacsAuthKind.NONE:
            return "none (anonymous)"
        if config.credentials_file:
            return f"credentials file {config.credentials_file}"
        who = f"user {config.username}, password in " if config.username else "token in "
        return f"{who}${config.secret_env}"

    def record(self) -> dict[str, Any]:
        """The version as recorded in the audit trail."""
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status.value,
            **_config_record(self.config),
        }


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """Outcome of :func:`check_connection`.

    Parameters
    ----------
    name : str
    url : str
        Public URL (no credentials).
    ok : bool
    message : str
        One line: what answered, or why not.
    seconds : float
    """

    name: str
    url: str
    ok: bool
    message: str
    seconds: float


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """A QIDO-RS study query of patient-free fields (PS3.18 10.6).

    Parameters
    ----------
    modality : str, optional
        Modalities in Study (0008,0061), e.g. ``CT``.
    date_from, date_to : datetime.date, optional
        Study Date (0008,0020) range, inclusive; either end may be open.
    accession_number : str, optional
        Accession Number (0008,0050), exact or with ``*`` wildcards.
    study_uids : sequence of str
        Study Instance UIDs; the other terms apply to each.
    limit : int, default 50
        At most this many studies.
    """

    modality: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    accession_number: str | None = None
    study_uids: Sequence[str] = ()
    limit: int = 50

    def filters(self) -> dict[str, str]:
        """The QIDO-RS match terms, without the study UIDs.

        Raises
        ------
        WorkflowError
            A term is malformed: one message naming it.
        """
        out: dict[str, str] = {}
        modality = (self.modality or "").strip().upper()
        if modality:
            if not _MODALITY.match(modality):
                raise WorkflowError(
                    f"Expected a DICOM modality code such as CT or MR, found {modality!r}."
                )
            out["ModalitiesInStudy"] = modality
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise WorkflowError(
                f"Expected the study date range to start before it ends, found "
                f"{self.date_from.isoformat()} to {self.date_to.isoformat()}."
            )
        if self.date_from or self.date_to:
            start = self.date_from.strftime("%Y%m%d") if self.date_from else ""
            end = self.date_to.strftime("%Y%m%d") if self.date_to else ""
            out["StudyDate"] = start if start == end else f"{start}-{end}"
        accession = (self.accession_number or "").strip()
        if accession:
            if len(accession) > 16 or "\\" in accession:
                raise WorkflowError(
                    f"Expected an accession number of at most 16 characters without '\\', "
                    f"found {accession!r}."
                )
            out["AccessionNumber"] = accession
        return out

    def uids(self) -> list[str]:
        """The Study Instance UIDs, checked, without duplicates, in the given order.

        Raises
        ------
        WorkflowError
            A UID is not dotted digits of at most 64 characters.
        """
        found: list[str] = []
        for raw in self.study_uids:
            uid = str(raw).strip()
            if not uid:
                continue
            if len(uid) > 64 or not _UID.match(uid):
                raise WorkflowError(
                    f"Expected Study Instance UIDs of digits and dots (at most 64 characters), "
                    f"found {uid[:80]!r}."
                )
            if uid not in found:
                found.append(uid)
        return found


@dataclass(frozen=True, slots=True)
class StudyMatch:
    """One study found by :func:`find_studies` (no patient attributes).

    Parameters
    ----------
    study_uid : str
    study_date, study_time : str
        As the server reports them (DA ``YYYYMMDD``, TM).
    modalities : tuple of str
    description, accession_number : str
    n_series, n_instances : int or None
        When the server reports them.
    """

    study_uid: str
    study_date: str
    study_time: str
    modalities: tuple[str, ...]
    description: str
    accession_number: str
    n_series: int | None
    n_instances: int | None


# --------------------------------------------------------------------------- helpers


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _protocol(value: PacsProtocol | str) -> PacsProtocol:
    try:
        return PacsProtocol(str(value).strip().lower())
    except ValueError:
        raise WorkflowError(
            f"Expected the protocol to be one of {[p.value for p in PacsProtocol]}, "
            f"found {str(value)!r}."
        ) from None


def _auth_kind(value: PacsAuthKind | str) -> PacsAuthKind:
    try:
        return PacsAuthKind(str(value).strip().lower())
    except ValueError:
        raise WorkflowError(
            f"Expected the authentication kind to be one of "
            f"{[k.value for k in PacsAuthKind]}, found {str(value)!r}."
        ) from None


def _check_url(url: str) -> str:
    text = str(url or "").strip()
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise WorkflowError(
            "Credentials in the DICOMweb URL are refused (they would be stored and shown); "
            "name an environment variable or a credentials file instead."
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WorkflowError(
            f"Expected an http(s) DICOMweb root URL such as https://pacs.example/dicom-web, "
            f"found {public_url(text) if parts.hostname else text[:80]!r}."
        )
    if parts.query or parts.fragment:
        raise WorkflowError(
            f"Expected a DICOMweb root URL without query or fragment, found "
            f"{public_url(text)}?... ; remove everything after '?' or '#'."
        )
    return text.rstrip("/")


def _check_credentials_file(path_text: str) -> None:
    path = Path(path_text)
    if not path.is_absolute():
        raise WorkflowError(
            f"Expected the absolute path of the credentials file, found {path_text!r}."
        )
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise WorkflowError(f"Cannot read the credentials file {path}: {exc.strerror}.") from exc
    if not stat.S_ISREG(mode):
        raise WorkflowError(f"Expected a regular file as credentials file, found {path}.")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WorkflowError(
            f"The credentials file {path} has mode {stat.S_IMODE(mode):04o}; expected 0600 "
            f"(owner only). Run 'chmod 600 {path}'."
        )


def _config_record(config: PacsServerConfig) -> dict[str, Any]:
    return {
        "protocol": PacsProtocol(config.protocol).value,
        "url": config.url,
        "auth_kind": PacsAuthKind(config.auth_kind).value,
        "username": config.username,
        "secret_env": config.secret_env,
        "credentials_file": config.credentials_file,
        "verify_tls": config.verify_tls,
        "ca_bundle": config.ca_bundle,
        "calling_ae": config.calling_ae,
    }


def _info(row: PacsServerVersion) -> PacsServerInfo:
    return PacsServerInfo(
        name=row.name,
        version=row.version,
        config=PacsServerConfig(
            url=row.url,
            auth_kind=PacsAuthKind(row.auth_kind),
            username=row.username,
            secret_env=row.secret_env,
            credentials_file=row.credentials_file,
            verify_tls=bool(row.verify_tls),
            ca_bundle=row.ca_bundle,
            protocol=PacsProtocol(row.protocol or PacsProtocol.DICOMWEB.value),
            calling_ae=row.calling_ae,
        ),
        status=PacsServerStatus(row.status),
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _user_for_use(session: Session, actor: Actor) -> User:
    """The actor's account, if its role may use configured servers (denials are audited)."""
    user = current_user(session, actor)
    action = next((a for a in USE_ACTIONS if allowed(user.role, a)), USE_ACTIONS[1])
    return current_user(session, actor, action)


def _newest(session: Session, name: str) -> PacsServerVersion | None:
    return session.scalars(
        select(PacsServerVersion)
        .where(PacsServerVersion.name == name)
        .order_by(PacsServerVersion.version.desc())
        .limit(1)
    ).first()


def _require_newest(session: Session, name: str) -> PacsServerVersion:
    row = _newest(session, name)
    if row is None:
        known = session.scalars(select(PacsServerVersion.name).distinct()).all()
        hint = f" Configured: {', '.join(sorted(known))}." if known else " None is configured."
        raise NotFoundError(f"No PACS server named {name!r}.{hint}")
    return row


def _append_version(
    session: Session,
    *,
    name: str,
    version: int,
    config: PacsServerConfig,
    status: PacsServerStatus,
    reason: str | None,
    username: str,
) -> PacsServerVersion:
    row = PacsServerVersion(
        name=name,
        version=version,
        url=config.url,
        auth_kind=PacsAuthKind(config.auth_kind).value,
        username=config.username,
        secret_env=config.secret_env,
        credentials_file=config.credentials_file,
        verify_tls=config.verify_tls,
        ca_bundle=config.ca_bundle,
        protocol=PacsProtocol(config.protocol).value,
        calling_ae=config.calling_ae,
        status=status.value,
        reason=reason,
        created_by=username,
    )
    session.add(row)
    session.flush()
    return row


# --------------------------------------------------------------------------- administration


def add_server(wb: Workbench, actor: Actor, name: str, config: PacsServerConfig) -> PacsServerInfo:
    """Configure a new named DICOMweb server (version 1), audited as ``pacs_server.add``.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``pacs.configure`` (administrators).
    name : str
        Letters, digits, ``.``, ``_`` or ``-`` (at most 64); never reused.
    config : PacsServerConfig

    Returns
    -------
    PacsServerInfo

    Raises
    ------
    PermissionDeniedError
        The role may not configure servers.
    DuplicateError
        A server of that name exists (retired ones included).
    WorkflowError
        The name or the configuration is malformed.
    """
    name = str(name or "").strip()
    with wb.transaction() as session:
        user = current_user(session, actor, CONFIGURE)
        if not _NAME.match(name):
            raise WorkflowError(
                f"Expected a server name of letters, digits, '.', '_' or '-' (at most 64), "
                f"found {name!r}."
            )
        checked = config.normalized()
        if _newest(session, name) is not None:
            raise DuplicateError(
                f"A PACS server named {name!r} already exists; change it (a new version) "
                "or choose another name. Names are never reused."
            )
        row = _append_version(
            session,
            name=name,
            version=1,
            config=checked,
            status=PacsServerStatus.ACTIVE,
            reason=None,
            username=user.username,
        )
        info = _info(row)
        audit.append(
            session,
            actor=user.username,
            action="pacs_server.add",
            record_type=RECORD_TYPE,
            record_id=name,
            new=info.record(),
        )
    return info


def update_server(
    wb: Workbench, actor: Actor, name: str, config: PacsServerConfig, *, reason: str
) -> PacsServerInfo:
    """Change a server's configuration: adds a version, audited as ``pacs_server.update``.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``pacs.configure``.
    name : str
    config : PacsServerConfig
        The whole new configuration (``dataclasses.replace`` on the current one
        changes single fields).
    reason : str
        Why; recorded with the version and in the audit trail.

    Returns
    -------
    PacsServerInfo
        The new version.

    Raises
    ------
    NotFoundError
        No server of that name.
    WorkflowError
        The server is retired, nothing changes, the configuration is malformed,
        or the reason is blank.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, CONFIGURE)
        if not str(reason or "").strip():
            raise WorkflowError("Give a reason for changing a PACS server (it is recorded).")
        current = _require_newest(session, name)
        if current.status == PacsServerStatus.RETIRED.value:
            raise WorkflowError(
                f"PACS server {name!r} is retired; retired servers stay on record unchanged. "
                "Add a server under a new name."
            )
        checked = config.normalized()
        before = _info(current)
        if _config_record(checked) == _config_record(before.config):
            raise WorkflowError(
                f"The configuration of PACS server {name!r} is unchanged; nothing to record."
            )
        row = _append_version(
            session,
            name=name,
            version=current.version + 1,
            config=checked,
            status=PacsServerStatus.ACTIVE,
            reason=reason.strip(),
            username=user.username,
        )
        info = _info(row)
        audit.append(
            session,
            actor=user.username,
            action="pacs_server.update",
            record_type=RECORD_TYPE,
            record_id=name,
            old=before.record(),
            new=info.record(),
            reason=reason.strip(),
        )
    return info


def retire_server(wb: Workbench, actor: Actor, name: str, *, reason: str) -> PacsServerInfo:
    """Stop offering a server: adds a retired version, audited as ``pacs_server.retire``.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``pacs.configure``.
    name : str
    reason : str

    Returns
    -------
    PacsServerInfo
        The retired version (its configuration is the last one in force).

    Raises
    ------
    NotFoundError
    WorkflowError
        Already retired, or the reason is blank.
    """
    with wb.transaction() as session:
        user = current_user(session, actor, CONFIGURE)
        if not str(reason or "").strip():
            raise WorkflowError("Give a reason for retiring a PACS server (it is recorded).")
        current = _require_newest(session, name)
        if current.status == PacsServerStatus.RETIRED.value:
            raise WorkflowError(f"PACS server {name!r} is already retired.")
        before = _info(current)
        row = _append_version(
            session,
            name=name,
            version=current.version + 1,
            config=before.config,
            status=PacsServerStatus.RETIRED,
            reason=reason.strip(),
            username=user.username,
        )
        info = _info(row)
        audit.append(
            session,
            actor=user.username,
            action="pacs_server.retire",
            record_type=RECORD_TYPE,
            record_id=name,
            old=before.record(),
            new=info.record(),
            reason=reason.strip(),
        )
    return info


def list_servers(
    wb: Workbench, actor: Actor, *, include_retired: bool = False
) -> list[PacsServerInfo]:
    """The newest version of every configured server, by name.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``pacs.configure``, ``testset.import`` or ``run.start``.
    include_retired : bool, default False

    Returns
    -------
    list of PacsServerInfo
    """
    with wb.transaction(readonly=True) as session:
        _user_for_use(session, actor)
        newest = (
            select(PacsServerVersion.name, func.max(PacsServerVersion.version).label("version"))
            .group_by(PacsServerVersion.name)
            .subquery()
        )
        rows = session.scalars(
            select(PacsServerVersion)
            .join(
                newest,
                (PacsServerVersion.name == newest.c.name)
                & (PacsServerVersion.version == newest.c.version),
            )
            .order_by(PacsServerVersion.name)
        ).all()
        found = [_info(r) for r in rows]
    return [s for s in found if include_retired or s.active]


def server_history(wb: Workbench, actor: Actor, name: str) -> list[PacsServerInfo]:
    """Every version of a server, oldest first (``pacs.configure``).

    Raises
    ------
    NotFoundError
        No server of that name.
    """
    with wb.transaction(readonly=True) as session:
        current_user(session, actor, CONFIGURE)
        _require_newest(session, name)
        rows = session.scalars(
            select(PacsServerVersion)
            .where(PacsServerVersion.name == name)
            .order_by(PacsServerVersion.version)
        ).all()
        return [_info(r) for r in rows]


# --------------------------------------------------------------------------- use


def _credentials(info: PacsServerInfo) -> Credentials:
    config = info.config
    kind = PacsAuthKind(config.auth_kind)
    if kind is PacsAuthKind.NONE:
        return Credentials()
    if config.credentials_file:
        creds = load_credentials(config.credentials_file, environ={})
        if creds.kind != kind.value:
            raise DicomWebError(
                f"PACS server {info.name!r} is configured for {kind.value} authentication, but "
                f"its credentials file {config.credentials_file} holds "
                f"{'a token' if creds.kind == 'bearer' else 'a user and password'}."
            )
        return creds
    variable = config.secret_env or ""
    secret = os.environ.get(variable)
    if not secret:
        what = "password" if kind is PacsAuthKind.BASIC else "token"
        raise DicomWebError(
            f"PACS server {info.name!r} reads its {what} from the environment variable "
            f"{variable}, which is not set for the workbench; set it where the workbench "
            "runs, then try again."
        )
    if kind is PacsAuthKind.BASIC:
        return Credentials(user=config.username, password=secret)
    return Credentials(token=secret)


def _in_force(wb: Workbench, actor: Actor, name: str) -> PacsServerInfo:
    """The newest version of active server ``name``, for a user who may use servers."""
    with wb.transaction(readonly=True) as session:
        _user_for_use(session, actor)
        info = _info(_require_newest(session, name))
    if not info.active:
        raise WorkflowError(f"PACS server {name!r} is retired and no longer used.")
    return info


def _node(info: PacsServerInfo) -> DimseNode:
    return DimseNode.parse(
        info.config.url,
        calling_ae=info.config.calling_ae or DEFAULT_CALLING_AE,
        timeout=DIMSE_TIMEOUT,
    )


def dimse_node(wb: Workbench, actor: Actor, name: str) -> DimseNode:
    """The DIMSE node of active server ``name`` (configured with ``protocol="dimse"``).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``pacs.configure``, ``testset.import`` or ``run.start``.
    name : str

    Returns
    -------
    DimseNode
        Its address and the calling AE title configured for it.

    Raises
    ------
    NotFoundError
        No server of that name.
    WorkflowError
        The server is retired or is a DICOMweb server.
    """
    info = _in_force(wb, actor, name)
    if not info.is_dimse:
        raise WorkflowError(f"PACS server {name!r} is a DICOMweb server, not a DIMSE node.")
    return _node(info)


def connect(wb: Workbench, actor: Actor, name: str) -> DicomWebServer:
    """A connection to the active DICOMweb server ``name``, with its secret read now.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``pacs.configure``, ``testset.import`` or ``run.start``.
    name : str

    Returns
    -------
    DicomWebServer
        For :mod:`workbench.services.pacs`; its ``repr`` shows no secret.

    Raises
    ------
    NotFoundError
        No server of that name.
    WorkflowError
        The server is retired, or is a DIMSE node (see :func:`dimse_node`).
    DicomWebError
        The secret cannot be read (variable unset, file not 0600 or malformed),
        or the CA bundle is missing.
    """
    info = _in_force(wb, actor, name)
    if info.is_dimse:
        raise WorkflowError(
            f"PACS server {name!r} is a DIMSE node ({info.address}); it has no DICOMweb "
            "service to connect to."
        )
    return DicomWebServer(
        info.config.url,
        credentials=_credentials(info),
        ca_bundle=info.config.ca_bundle,
        verify_tls=info.config.verify_tls,
    )


def check_connection(wb: Workbench, actor: Actor, name: str) -> ConnectionCheck:
    """Test a server: one QIDO-RS study query with ``limit=1``.

    A DIMSE node is sent a C-ECHO and a C-FIND for a study that does not exist
    (many PACS answer any C-ECHO; the C-FIND shows that the calling AE title may
    query).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``pacs.configure``, ``testset.import`` or ``run.start``.
    name : str

    Returns
    -------
    ConnectionCheck
        ``ok`` False with the one-line reason (refused credentials, TLS,
        unreachable, unset variable, ...); never a secret.

    Raises
    ------
    NotFoundError, PermissionDeniedError
    """
    started = time.monotonic()
    url = ""
    info = _in_force(wb, actor, name)
    if info.is_dimse:
        node = _node(info)
        try:
            echo_dimse(node)
            # A PACS may answer any C-ECHO; a C-FIND for a study that cannot exist shows
            # that it also lets this AE title query (cheaply: nothing matches).
            find_studies_dimse(node, {"StudyInstanceUID": _PROBE_STUDY_UID})
        except DicomWebError as error:
            return ConnectionCheck(
                name, node.public_url, False, str(error), time.monotonic() - started
            )
        seconds = time.monotonic() - started
        return ConnectionCheck(
            name,
            node.public_url,
            True,
            f"{node.public_url} answered a C-ECHO and a C-FIND from AE title "
            f"{node.calling_ae!r} in {seconds:.2f} s.",
            seconds,
        )
    try:
        server = connect(wb, actor, name)
    except DicomWebError as error:
        return ConnectionCheck(name, url, False, str(error), time.monotonic() - started)
    url = server.public_url
    try:
        found = server.client().search_for_studies(limit=1, fields=["StudyInstanceUID"])
    except Exception as exc:  # every failure becomes one line
        message = str(describe_failure(server, exc, "a QIDO-RS study query"))
        return ConnectionCheck(name, url, False, message, time.monotonic() - started)
    finally:
        server.close()
    seconds = time.monotonic() - started
    return ConnectionCheck(
        name,
        url,
        True,
        f"{url} answered a QIDO-RS study query in {seconds:.2f} s "
        f"({len(found)} study returned with limit 1).",
        seconds,
    )


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or []
    return values[0] if values else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _match(item: dict[str, Any]) -> StudyMatch:
    tags = _STUDY_FIELDS
    modalities = item.get(tags["modalities"], {}).get("Value") or []
    return StudyMatch(
        study_uid=str(_value(item, tags["study_uid"]) or ""),
        study_date=str(_value(item, tags["study_date"]) or ""),
        study_time=str(_value(item, tags["study_time"]) or ""),
        modalities=tuple(str(m) for m in modalities),
        description=str(_value(item, tags["description"]) or ""),
        accession_number=str(_value(item, tags["accession_number"]) or ""),
        n_series=_int_or_none(_value(item, tags["n_series"])),
        n_instances=_int_or_none(_value(item, tags["n_instances"])),
    )


def _dimse_match(item: Any) -> StudyMatch:
    keys = _STUDY_KEYWORDS

    def text(key: str) -> str:
        return str(item.get(keys[key], "") or "")

    raw = item.get(keys["modalities"], "") or []
    modalities = [raw] if isinstance(raw, str) else list(raw)
    return StudyMatch(
        study_uid=text("study_uid"),
        study_date=text("study_date"),
        study_time=text("study_time"),
        modalities=tuple(str(m) for m in modalities if str(m)),
        description=text("description"),
        accession_number=text("accession_number"),
        n_series=_int_or_none(item.get(keys["n_series"])),
        n_instances=_int_or_none(item.get(keys["n_instances"])),
    )


def _find_studies_dimse(node: DimseNode, query: StudyQuery) -> list[StudyMatch]:
    filters = query.filters()
    return_keys = [k for key, k in _STUDY_KEYWORDS.items() if key != "study_uid"]
    found: dict[str, StudyMatch] = {}
    targets: list[str | None] = [*query.uids()] or [None]
    for uid in targets:
        left = int(query.limit) - len(found)
        if left <= 0:
            break
        terms = {**filters, **({"StudyInstanceUID": uid} if uid else {})}
        for item in find_studies_dimse(node, terms, return_keys=return_keys, limit=left):
            match = _dimse_match(item)
            if match.study_uid and match.study_uid not in found:
                found[match.study_uid] = match
    return list(found.values())[: int(query.limit)]


def find_studies(wb: Workbench, actor: Actor, name: str, query: StudyQuery) -> list[StudyMatch]:
    """Studies on server ``name`` that match ``query`` (QIDO-RS or C-FIND), in server order.

    A DIMSE node answers a STUDY-level C-FIND; its studies are listed in Study
    Instance UID order.

    Only patient-free attributes are asked for and returned.

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``pacs.configure``, ``testset.import`` or ``run.start``.
    name : str
    query : StudyQuery

    Returns
    -------
    list of StudyMatch
        At most ``query.limit``.

    Raises
    ------
    WorkflowError
        A malformed query term, or a limit below 1.
    DicomWebError
        The server is unreachable or refuses the query (one line, no secret).
    """
    info = _in_force(wb, actor, name)
    if int(query.limit) < 1:
        raise WorkflowError(f"Expected a limit of at least 1 study, found {query.limit}.")
    if info.is_dimse:
        return _find_studies_dimse(_node(info), query)
    server = connect(wb, actor, name)
    filters = query.filters()
    uids = query.uids()
    fields = [tag for key, tag in _STUDY_FIELDS.items() if key != "study_uid"]
    found: dict[str, StudyMatch] = {}
    try:
        targets: list[str | None] = [*uids] if uids else [None]
        for uid in targets:
            terms = {**filters, **({"StudyInstanceUID": uid} if uid else {})}
            left = int(query.limit) - len(found)
            if left <= 0:
                break
            try:
                items = search_all(
                    server.client().search_for_studies,
                    _STUDY_FIELDS["study_uid"],
                    limit=left,
                    search_filters=terms,
                    fields=fields,
                )
            except Exception as exc:
                raise describe_failure(server, exc, f"the study query {terms}") from exc
            for item in items:
                match = _match(item)
                if match.study_uid and match.study_uid not in found:
                    found[match.study_uid] = match
    finally:
        server.close()
    return list(found.values())[: int(query.limit)]


def import_studies(
    wb: Workbench,
    actor: Actor,
    server_name: str,
    *,
    name: str,
    studies: Sequence[str],
    workers: int = 2,
    deidentify: DeidentificationOptions | None = None,
    progress: Progress = None,
) -> pacs.PacsImport:
    """Import studies from configured server ``server_name`` as the draft test set ``name``.

    See :func:`workbench.services.pacs.import_from_dicomweb`, which retrieves,
    indexes and audits (``testset.import.dicomweb``); from a DIMSE node
    :func:`workbench.services.pacs.import_from_dimse` (``testset.import.dimse``).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``testset.import``.
    server_name : str
    name : str
        New test-set name.
    studies : sequence of str
        Study Instance UIDs.
    workers : int, default 2
    deidentify : DeidentificationOptions, optional
        De-identify on intake (PS3.15 Basic Profile and these options); only the
        de-identified files enter the test set.
    progress : callable, optional
        ``progress(done, total, message)``.

    Returns
    -------
    PacsImport

    Raises
    ------
    WorkbenchError
        One line: the name is taken, the server refuses, an instance is invalid, ...
    """
    info = _in_force(wb, actor, server_name)
    uids = StudyQuery(study_uids=tuple(studies)).uids()
    if not uids:
        raise WorkflowError("Select at least one study to import; found none.")
    if info.is_dimse:
        return pacs.import_from_dimse(
            wb,
            actor,
            _node(info),
            name=name,
            studies=uids,
            workers=workers,
            deidentify=deidentify,
            progress=progress,
        )
    server = connect(wb, actor, server_name)
    try:
        return pacs.import_from_dicomweb(
            wb,
            actor,
            server,
            name=name,
            studies=uids,
            workers=workers,
            deidentify=deidentify,
            progress=progress,
        )
    finally:
        server.close()


def export_run_to(
    wb: Workbench,
    actor: Actor,
    server_name: str,
    run_uid: str,
    *,
    include_report: bool = True,
    progress: Progress = None,
) -> pacs.PacsExport:
    """Store a run's SEGs, TID 1500 SRs and sealed report on configured server ``server_name``.

    See :func:`workbench.services.pacs.export_run` (idempotent; audited as
    ``run.export.dicomweb``, or ``run.export.dimse`` for a DIMSE node: C-STORE).

    Parameters
    ----------
    wb : Workbench
    actor : Actor
        Needs ``run.start``.
    server_name : str
    run_uid : str
    include_report : bool, default True
        Also the newest sealed report as Encapsulated PDF, when there is one.
    progress : callable, optional

    Returns
    -------
    PacsExport

    Raises
    ------
    WorkbenchError
        One line: the run is not completed, the server refuses, ...
    """
    info = _in_force(wb, actor, server_name)
    if info.is_dimse:
        return pacs.export_run(
            wb, actor, run_uid, _node(info), include_report=include_report, progress=progress
        )
    server = connect(wb, actor, server_name)
    try:
        return pacs.export_run(
            wb, actor, run_uid, server, include_report=include_report, progress=progress
        )
    finally:
        server.close()


def replace_config(info: PacsServerInfo, **changes: Any) -> PacsServerConfig:
    """``info``'s configuration with ``changes`` applied (for :func:`update_server`)."""
    return dataclasses.replace(info.config, **changes)
