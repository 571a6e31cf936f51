"""Connections to a DICOMweb server (PS3.18): URL, credentials, TLS and error messages.

Credentials never travel in the URL and never reach a log, an error message or a
record. They come from the environment (``WORKBENCH_DICOMWEB_TOKEN`` for a bearer
token, or ``WORKBENCH_DICOMWEB_USER`` and ``WORKBENCH_DICOMWEB_PASSWORD`` for HTTP
basic authentication) or from a JSON file readable by its owner only (mode 0600)::

    {"user": "...", "password": "..."}   or   {"token": "..."}

TLS certificates are verified by default; ``ca_bundle`` names a PEM file of
trusted certificate authorities for a site PKI.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from workbench.errors import DicomWebError

__all__ = [
    "Credentials",
    "DicomWebServer",
    "describe_failure",
    "load_credentials",
    "public_url",
]

ENV_USER = "WORKBENCH_DICOMWEB_USER"
ENV_PASSWORD = "WORKBENCH_DICOMWEB_PASSWORD"  # noqa: S105 (a variable name)
ENV_TOKEN = "WORKBENCH_DICOMWEB_TOKEN"  # noqa: S105 (a variable name)

#: (connect, read) timeouts in seconds of every request.
DEFAULT_TIMEOUT = (5.0, 120.0)


@dataclass(frozen=True, slots=True)
class Credentials:
    """HTTP credentials; ``repr`` never shows the secret.

    Parameters
    ----------
    user, password : str or None
        HTTP basic authentication.
    token : str or None
        Bearer token (``Authorization: Bearer ...``); wins over user and password.
    """

    user: str | None = field(default=None)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``"bearer"``, ``"basic"`` or ``"none"`` (what may be recorded)."""
        if self.token:
            return "bearer"
        if self.user:
            return "basic"
        return "none"


def load_credentials(
    config_file: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Credentials:
    """Credentials from a 0600 JSON file, else from the environment.

    Parameters
    ----------
    config_file : str or Path, optional
        JSON object with ``user`` and ``password``, or ``token``.
    environ : mapping, optional
        Defaults to ``os.environ``.

    Returns
    -------
    Credentials
        Empty when nothing is configured (anonymous access).

    Raises
    ------
    DicomWebError
        The file is readable by others than its owner, is not JSON, or holds
        neither a token nor a user and password.
    """
    env = os.environ if environ is None else environ
    if config_file is not None:
        path = Path(config_file).expanduser()
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise DicomWebError(
                f"Cannot read the DICOMweb credentials file {path}: {exc.strerror}."
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DicomWebError(
                f"The DICOMweb credentials file {path} has mode {stat.S_IMODE(mode):04o}; "
                f"expected 0600 (owner only). Run 'chmod 600 {path}'."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DicomWebError(
                f"The DICOMweb credentials file {path} is not a JSON object "
                '{"user": ..., "password": ...} or {"token": ...}.'
            ) from exc
        if not isinstance(data, dict):
            data = {}
        token, user, password = data.get("token"), data.get("user"), data.get("password")
        if token:
            return Credentials(token=str(token))
        if user and password is not None:
            return Credentials(user=str(user), password=str(password))
        raise DicomWebError(
            f"The DICOMweb credentials file {path} holds neither 'token' nor 'user' and 'password'."
        )
    if env.get(ENV_TOKEN):
        return Credentials(token=env[ENV_TOKEN])
    if env.get(ENV_USER):
        return Credentials(user=env[ENV_USER], password=env.get(ENV_PASSWORD, ""))
    return Credentials()


def public_url(url: str) -> str:
    """``url`` without user information, query or fragment: what may be recorded and shown."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


@dataclass(slots=True)
class DicomWebServer:
    """A DICOMweb service root (PS3.18 8.2), e.g. ``https://pacs.example/dicom-web``.

    Parameters
    ----------
    url : str
        Base URL of the service; user information in the URL is refused.
    credentials : Credentials
    ca_bundle : str or Path, optional
        PEM file of trusted CAs; by default the system's trust store.
    verify_tls : bool, default True
        Never turn this off outside a test bench.
    timeout : tuple of float
        ``(connect, read)`` seconds.
    """

    url: str
    credentials: Credentials = field(default_factory=Credentials)
    ca_bundle: str | Path | None = None
    verify_tls: bool = True
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DicomWebError(
                f"Expected an http(s) DICOMweb URL such as https://pacs.example/dicom-web, "
                f"found {public_url(self.url)!r}."
            )
        if parts.username or parts.password:
            raise DicomWebError(
                "Credentials in the DICOMweb URL are refused (they would end up in shell "
                f"history and logs); set {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, or use a "
                "credentials file with mode 0600."
            )
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise DicomWebError(f"CA bundle {self.ca_bundle} does not exist.")
        self.url = self.url.rstrip("/")

    @property
    def public_url(self) -> str:
        """The URL as recorded in manifests and audit entries."""
        return public_url(self.url)

    def session(self) -> requests.Session:
        """A :class:`requests.Session` of the calling thread with auth and TLS set."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            creds = self.credentials
            if creds.token:
                session.headers["Authorization"] = f"Bearer {creds.token}"
            elif creds.user:
                session.auth = (creds.user, creds.password or "")
            session.verify = str(self.ca_bundle) if self.ca_bundle else self.verify_tls
            session.trust_env = False  # no proxy or .netrc credentials from the environment
            self._local.session = session
        return session

    def client(self) -> Any:
        """A :class:`dicomweb_client.DICOMwebClient` on this thread's session."""
        client = getattr(self._local, "client", None)
        if client is None:
            from dicomweb_client.api import DICOMwebClient

            client = DICOMwebClient(self.url, session=self.session(), timeout=self.timeout)
            client.set_http_retry_params(
                retry=True, max_attempts=3, wait_exponential_multiplier=200
            )
            self._local.client = client
        return client

    def close(self) -> None:
        """Close this thread's session."""
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None
            self._local.client = None


def describe_failure(server: DicomWebServer, error: BaseException, what: str) -> DicomWebError:
    """One clear line for a failed request, naming ``what`` (a study or an instance).

    Parameters
    ----------
    server : DicomWebServer
    error : BaseException
        What ``requests`` (or ``dicomweb_client``) raised.
    what : str
        The object concerned, e.g. ``"instance 1.2.3 of study 1.2"``.

    Returns
    -------
    DicomWebError
        To be raised by the caller; the message holds no credentials.
    """
    where = server.public_url
    if isinstance(error, DicomWebError):
        return error
    if isinstance(error, requests.HTTPError) and error.response is not None:
        code = error.response.status_code
        if code in (401, 403):
            return DicomWebError(
                f"{where} refused the credentials (HTTP {code}) for {what}; check "
                f"{ENV_USER}/{ENV_PASSWORD}, {ENV_TOKEN} or the credentials file."
            )
        if code == 404:
            return DicomWebError(f"{where} answered HTTP 404 (not found) for {what}.")
        if code == 406:
            return DicomWebError(
                f"{where} cannot send {what} in its stored transfer syntax (HTTP 406 for "
                "'transfer-syntax=*'); the server only transcodes, so the files would not be "
                "the PACS's originals."
            )
        reason = (error.response.reason or "").strip()
        return DicomWebError(f"{where} answered HTTP {code} {reason} for {what}.")
    if isinstance(error, requests.exceptions.SSLError):
        return DicomWebError(
            f"TLS verification of {where} failed for {what}; give the site CA with --ca-bundle."
        )
    if isinstance(error, requests.Timeout) or _read_timed_out(error):
        return DicomWebError(
            f"{where} did not answer in time for {what}; run the command again to resume."
        )
    if isinstance(error, requests.exceptions.ChunkedEncodingError | requests.ConnectionError):
        return DicomWebError(
            f"Cannot reach the DICOMweb server {where} for {what} (connection failed); check "
            "that it runs, then run the command again to resume."
        )
    return DicomWebError(f"{where}: {what} failed: {type(error).__name__}: {error}")


def _read_timed_out(error: BaseException) -> bool:
    """Whether ``error`` is a read timeout while a streamed answer was being read.

    ``requests`` raises those as a ``ConnectionError`` around urllib3's
    ``ReadTimeoutError`` rather than as a ``Timeout``.
    """
    from urllib3.exceptions import ReadTimeoutError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ReadTimeoutError):
            return True
        nested = current.args[0] if current.args else None
        current = nested if isinstance(nested, BaseException) else current.__context__
    return False
