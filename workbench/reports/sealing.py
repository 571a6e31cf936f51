"""PAdES sealing of report PDFs and their verification.

:func:`seal_pdf` adds one PAdES baseline B-B certification signature
(``ETSI.CAdES.detached``, SHA-256, DocMDP "no changes allowed") over the
whole report, attachments included. :func:`verify_pdf` checks that seal and
reads the report id and results SHA-256 back from the attachments; the
service layer then compares them with the database record.

Failure policy of :func:`verify_pdf`: any file that exists gets a
:class:`PdfVerification`; when something is wrong (not a PDF, truncated,
unsigned, signature broken, bytes changed or appended after sealing, signer
not trusted, attachments missing) ``valid`` is ``False`` and ``problems``
says why, in words a user can act on. Only a file that cannot be opened at
all raises :class:`~workbench.errors.ReportVerificationError`.
:meth:`PdfVerification.raise_if_invalid` turns a failed result into that
error for callers that prefer exceptions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from workbench.errors import ReportError, ReportVerificationError
from workbench.reports._files import write_atomically
from workbench.reports.attachments import REPORT_CONTENT_JSON, RESULTS_JSON, _read_name_tree
from workbench.reports.keys import SigningIdentity

__all__ = ["SEAL_FIELD", "PdfVerification", "seal_pdf", "verify_pdf"]

SEAL_FIELD = "WorkbenchSeal"


@dataclass(frozen=True, slots=True)
class PdfVerification:
    """Outcome of :func:`verify_pdf`.

    Attributes
    ----------
    path : Path
        The file checked.
    valid : bool
        True only when every check passed (``problems`` is empty).
    problems : tuple of str
        Why the file is not valid, one sentence each.
    file_sha256 : str
        SHA-256 of the file as checked.
    signed : bool
        The file holds at least one signature.
    intact : bool
        The signed bytes hash to the signed digest and the CMS signature verifies.
    covers_whole_file : bool
        The seal covers every byte of the file (nothing appended afterwards).
    trusted : bool
        The signer's certificate chains to one of ``trust_roots``.
    signer_subject : str or None
        Subject of the signing certificate (RFC 4514 style, as pyHanko prints it).
    signing_time : datetime or None
        Signing time the signer claims (not a trusted timestamp in PAdES B-B).
    report_id : str or None
        Report id read from ``results.json``.
    results_sha256 : str or None
        SHA-256 of the embedded ``results.json``.
    attachments : dict of str to str
        Embedded file name -> SHA-256.
    embedded_signatures : tuple of dict or None
        The e-signature records printed in the report, as embedded in its
        ``report-content.json`` (``None`` when it embeds none).
    """

    path: Path
    valid: bool
    problems: tuple[str, ...]
    file_sha256: str
    signed: bool = False
    intact: bool = False
    covers_whole_file: bool = False
    trusted: bool = False
    signer_subject: str | None = None
    signing_time: datetime | None = None
    report_id: str | None = None
    results_sha256: str | None = None
    attachments: dict[str, str] = field(default_factory=dict)
    embedded_signatures: tuple[dict[str, Any], ...] | None = None

    def raise_if_invalid(self) -> None:
        """Raise :class:`ReportVerificationError` listing the problems, if any."""
        if not self.valid:
            raise ReportVerificationError(
                f"{self.path.name} does not verify: " + " ".join(self.problems)
            )


def _outside_event_loop(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` where ``asyncio.run`` works.

    pyHanko's synchronous API runs an event loop of its own, which fails in a
    thread that already runs one (a Jupyter kernel, an async web server). There
    the call goes to a short-lived worker thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function(*args, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args, **kwargs).result()


def seal_pdf(
    in_path: str | Path,
    out_path: str | Path,
    identity: SigningIdentity,
    *,
    reason: str = "Validation report sealed by the Validation Workbench",
    location: str = "",
) -> str:
    """Seal a report PDF with a PAdES B-B certification signature.

    Parameters
    ----------
    in_path : str or Path
        Report built by :func:`~workbench.reports.build_report`.
    out_path : str or Path
        Where the sealed PDF goes (may equal ``in_path``); written atomically.
    identity : SigningIdentity
        Key and certificate chain (see :func:`~workbench.reports.ensure_signing_identity`).
    reason, location : str
        Shown by PDF viewers in the signature panel.

    Returns
    -------
    str
        SHA-256 of the sealed file.

    Raises
    ------
    ReportError
        When the input is unreadable, already sealed against changes, or
        signing fails.
    """
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko.sign.fields import MDPPerm
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    source = Path(in_path)
    target = Path(out_path)
    try:
        data = source.read_bytes()
    except OSError as error:
        raise ReportError(f"Cannot read the report {source}: {error.strerror}.") from None

    def to_asn1(certificate: x509.Certificate) -> Any:
        return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))

    signer = signers.SimpleSigner(
        signing_cert=to_asn1(identity.certificate),
        signing_key=asn1_keys.PrivateKeyInfo.load(
            identity.key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        ),
        cert_registry=SimpleCertificateStore.from_certs([to_asn1(c) for c in identity.chain]),
    )
    metadata = signers.PdfSignatureMetadata(
        field_name=SEAL_FIELD,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
        location=location or None,
        certify=True,
        docmdp_permissions=MDPPerm.NO_CHANGES,
    )
    output = io.BytesIO()
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
        _outside_event_loop(signers.sign_pdf, writer, metadata, signer=signer, output=output)
    except Exception as error:  # pyHanko raises many types; the user needs one
        raise ReportError(
            f"Cannot seal {source.name}: {type(error).__name__}: {error}. The input should be "
            "an unsealed report built by build_report."
        ) from None
    return write_atomically(output.getvalue(), target, what="the sealed report")


def _embedded_signatures(blob: bytes | None) -> tuple[dict[str, Any], ...] | None:
    """The signature records of an embedded ``report-content.json`` (bounded, plain values)."""
    if blob is None or len(blob) > 64 << 20:
        return None
    try:
        listed = json.loads(blob).get("signatures")
    except (ValueError, AttributeError):
        return None
    if not isinstance(listed, list):
        return None
    keys = ("signature_id", "username", "printed_name", "role", "meaning", "signed_at")
    return tuple(
        {k: str(item.get(k, ""))[:200] for k in (*keys, "content_sha256")}
        for item in listed[:50]
        if isinstance(item, dict)
    )


def verify_pdf(path: str | Path, *, trust_roots: Sequence[x509.Certificate]) -> PdfVerification:
    """Verify a sealed report PDF.

    Checks: the file parses as a PDF; it carries a signature; the signature
    is intact and cryptographically valid; the last signature covers the
    entire file (nothing changed or appended after sealing); the signer's
    certificate chains to one of ``trust_roots``; ``results.json`` is
    embedded and names a report id.

    Parameters
    ----------
    path : str or Path
        The PDF to check.
    trust_roots : sequence of cryptography.x509.Certificate
        Certificates to trust, normally the workbench CA
        (``SigningIdentity.trust_roots``).

    Returns
    -------
    PdfVerification
        ``valid`` is True only if every check passed; otherwise
        ``problems`` says why.

    Raises
    ------
    ReportVerificationError
        When the file cannot be opened at all.
    """
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ReportVerificationError(f"Cannot open {file}: {error.strerror}.") from None
    digest = hashlib.sha256(data).hexdigest()
    problems: list[str] = []

    def result(**values: Any) -> PdfVerification:
        return PdfVerification(
            path=file, valid=not problems, problems=tuple(problems), file_sha256=digest, **values
        )

    if not data.startswith(b"%PDF-"):
        problems.append(f"The file should start with '%PDF-'. Found {data[:8]!r}; it is not a PDF.")
        return result()
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = list(reader.embedded_signatures)
        embedded = _read_name_tree(reader.root)
    except Exception as error:  # malformed or truncated files fail in many ways
        problems.append(
            f"The file cannot be parsed as a PDF ({type(error).__name__}: {error}); it may be "
            "truncated or damaged."
        )
        return result()

    attachments = {name: hashlib.sha256(blob).hexdigest() for name, blob in embedded.items()}
    report_id: str | None = None
    results_sha256: str | None = None
    if RESULTS_JSON in embedded:
        results_sha256 = attachments[RESULTS_JSON]
        try:
            report_id = str(json.loads(embedded[RESULTS_JSON])["report_id"])
        except (ValueError, KeyError, TypeError):
            problems.append(
                "The embedded results.json should be JSON with a report_id. Found something else."
            )
    else:
        problems.append(
            "The PDF should embed results.json. Found no such attachment; it is not "
            "a workbench report."
        )
    found: dict[str, Any] = {
        "attachments": attachments,
        "report_id": report_id,
        "results_sha256": results_sha256,
        "embedded_signatures": _embedded_signatures(embedded.get(REPORT_CONTENT_JSON)),
    }

    if not signatures:
        problems.insert(
            0, "The PDF should carry the workbench seal. Found no signature; it is unsigned."
        )
        return result(**found)

    roots = [
        asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in trust_roots
    ]
    context = ValidationContext(
        trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail"
    )
    intact = True
    trusted = True
    subject: str | None = None
    signing_time: datetime | None = None
    covers = False
    for index, signature in enumerate(signatures):
        last = index == len(signatures) - 1
        try:
            status = _outside_event_loop(
                validate_pdf_signature, signature, signer_validation_context=context
            )
        except Exception as error:
            intact = trusted = False
            problems.append(
                f"Signature {signature.field_name!r} cannot be validated "
                f"({type(error).__name__}: {error})."
            )
            continue
        subject = status.signing_cert.subject.human_friendly
        signing_time = status.signer_reported_dt
        if not (status.intact and status.valid):
            intact = False
            problems.append(
                f"Signature {signature.field_name!r} is broken: the signed bytes "
                "were changed after sealing."
            )
        if status.trust_problem_indic is not None or status.validation_path is None:
            trusted = False
            problems.append(
                f"The signer {subject} should chain to a trusted root. Found no "
                f"path to the given trust roots ({status.trust_problem_indic})."
            )
        if last:
            covers = status.coverage == SignatureCoverageLevel.ENTIRE_FILE
            if not covers:
                problems.append(
                    "The seal should cover the whole file. Found bytes added after "
                    "sealing (an incremental update or appended data)."
                )
    return result(
        signed=True,
        intact=intact,
        covers_whole_file=covers,
        trusted=trusted,
        signer_subject=subject,
        signing_time=signing_time,
        **found,
    )
