"""RFC 3161 time stamps on audit checkpoints: an anchor outside the database and its keys.

A signed checkpoint (:func:`workbench.records.audit.export_checkpoint`) proves the
chain's head to whoever trusts the workbench's checkpoint key; an attacker holding the
database and the ``keys`` folder could sign a new one. A time-stamp token from an
independent RFC 3161 time-stamping authority (TSA) over the checkpoint's canonical JSON
fixes that head at a moment in time under the TSA's key, which the installation does
not hold: a later rewrite of the trail cannot produce a token dated before it.

:func:`timestamp_checkpoint` asks the TSA named by a URL (``WORKBENCH_TSA_URL``) for a
token over the SHA-256 of the checkpoint and returns it (DER); :func:`verify_timestamp`
checks that a token covers a checkpoint and is signed by a TSA certificate that chains
to the given trust roots, and returns the time it states.

References
----------
.. [1] RFC 3161, Internet X.509 Public Key Infrastructure Time-Stamp Protocol (TSP).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509

from workbench.errors import AuditChainError, ConfigurationError

__all__ = ["checkpoint_digest", "timestamp_checkpoint", "verify_timestamp"]

_T = TypeVar("_T")


def _sync(function: Callable[[], Any]) -> Any:
    """Run a pyHanko coroutine factory to completion, also inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(function())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(function())).result()


def checkpoint_digest(checkpoint: Mapping[str, Any]) -> bytes:
    """SHA-256 of a checkpoint's canonical JSON (signature included): what a TSA stamps."""
    from workbench.records.audit import canonical_json

    return hashlib.sha256(canonical_json(dict(checkpoint))).digest()


def timestamp_checkpoint(
    checkpoint: Mapping[str, Any], url: str, *, timeout: float = 10.0
) -> bytes:
    """Ask an RFC 3161 TSA for a time-stamp token over a checkpoint.

    Parameters
    ----------
    checkpoint : mapping
        As returned by :func:`workbench.records.audit.export_checkpoint`.
    url : str
        The TSA's HTTP(S) endpoint.
    timeout : float
        Seconds to wait for the TSA.

    Returns
    -------
    bytes
        The token (a CMS ``ContentInfo``, DER) to keep beside the checkpoint file.

    Raises
    ------
    ConfigurationError
        The TSA cannot be reached or refuses the request (the message says which).
    """
    from pyhanko.sign.timestamps import HTTPTimeStamper, TimestampRequestError

    stamper = HTTPTimeStamper(url, timeout=timeout)
    digest = checkpoint_digest(checkpoint)
    try:
        token: cms.ContentInfo = _sync(lambda: stamper.async_timestamp(digest, "sha256"))
    except (OSError, TimestampRequestError) as error:
        raise ConfigurationError(
            f"The time-stamping authority at {url} gave no token: {error}. Check "
            "WORKBENCH_TSA_URL and that the TSA is reachable."
        ) from None
    return bytes(token.dump())


def verify_timestamp(
    token: bytes, checkpoint: Mapping[str, Any], trust_roots: Sequence[bytes | str | Path]
) -> datetime:
    """Check a time-stamp token against a checkpoint and the TSA's trust roots.

    Parameters
    ----------
    token : bytes
        From :func:`timestamp_checkpoint`.
    checkpoint : mapping
        The checkpoint it was made for.
    trust_roots : sequence of bytes, str or Path
        CA certificates (PEM or DER, or their files) the TSA's certificate must chain to.

    Returns
    -------
    datetime
        The time the TSA states (genTime).

    Raises
    ------
    AuditChainError
        The token does not cover this checkpoint, its signature does not verify, or
        the TSA's certificate does not chain to a trust root; the message says which.
    """
    from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
    from pyhanko_certvalidator import ValidationContext

    roots = [_load_certificate(r) for r in trust_roots]
    try:
        info = cms.ContentInfo.load(token)
        signed = info["content"]
        tst_info = signed["encap_content_info"]["content"].parsed
    except (ValueError, TypeError, KeyError) as error:
        raise AuditChainError(f"The time-stamp token cannot be read: {error}") from None
    if not isinstance(tst_info, tsp.TSTInfo):
        raise AuditChainError("The time-stamp token holds no TSTInfo; it is not an RFC 3161 token.")
    digest = checkpoint_digest(checkpoint)
    imprint = tst_info["message_imprint"]["hashed_message"].native
    if imprint != digest:
        raise AuditChainError(
            f"The time-stamp token covers {imprint.hex()[:16]}..., not this checkpoint "
            f"({digest.hex()[:16]}...): the checkpoint or the token was replaced."
        )
    context = ValidationContext(trust_roots=roots, allow_fetching=False)
    status = _sync(lambda: validate_tst_signed_data(signed, context, lambda _algorithm: digest))
    if not (status.get("intact") and status.get("valid")):
        raise AuditChainError("The time-stamp token's signature does not verify.")
    if status.get("trust_problem_indic") is not None:
        raise AuditChainError(
            "The time-stamping authority's certificate does not chain to a trusted root: "
            f"{status['trust_problem_indic']}."
        )
    stamped: datetime = tst_info["gen_time"].native
    return stamped


def _load_certificate(source: bytes | str | Path) -> asn1_x509.Certificate:
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    if b"-----BEGIN" in data:
        from asn1crypto import pem

        _, _, data = pem.unarmor(data)
    return asn1_x509.Certificate.load(data)
