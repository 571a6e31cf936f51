"""Key material for sealing reports: a local CA and a signing certificate.

On first use :func:`ensure_signing_identity` creates, under ``keys_dir``::

    ca-cert.pem         self-signed root of this workbench (the trust root to verify against)
    ca-key.pem          its private key (mode 0600)
    signing-cert.pem    document-signing certificate issued by that CA
    signing-key.pem     its private key (mode 0600)

and reuses them afterwards. Keys are EC P-256; certificates carry the key
usages ``digitalSignature`` and ``nonRepudiation`` that PAdES validators
expect. Real deployments use a certificate from their own PKI instead:
:meth:`SigningIdentity.from_files`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from workbench.errors import ConfigurationError

__all__ = ["SigningIdentity", "ensure_signing_identity", "existing_trust_roots"]

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
SIGNING_CERT = "signing-cert.pem"
SIGNING_KEY = "signing-key.pem"
_CA_YEARS = 20
_SIGNING_YEARS = 5


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """A private key, its certificate and the chain up to a trust root.

    Attributes
    ----------
    key : PrivateKeyTypes
        The signing key (RSA or EC).
    certificate : x509.Certificate
        The signing certificate.
    chain : tuple of x509.Certificate
        Issuer certificates, nearest first; the last one is normally the root.
    """

    key: PrivateKeyTypes
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def trust_roots(self) -> tuple[x509.Certificate, ...]:
        """Self-signed certificates of the chain (what a verifier should trust)."""
        return tuple(c for c in self.chain if c.issuer == c.subject) or (
            (self.certificate,) if self.certificate.issuer == self.certificate.subject else ()
        )

    @property
    def subject(self) -> str:
        """The signing certificate's subject, RFC 4514 string."""
        return self.certificate.subject.rfc4514_string()

    @classmethod
    def from_files(
        cls,
        key: str | Path,
        cert: str | Path,
        chain: str | Path | None = None,
        passphrase: str | bytes | None = None,
    ) -> SigningIdentity:
        """Load a configured identity from PEM or DER files.

        Parameters
        ----------
        key : str or Path
            Private key (PEM or DER, PKCS#8 or traditional), possibly encrypted.
        cert : str or Path
            Signing certificate (PEM or DER).
        chain : str or Path, optional
            One PEM file with the issuer certificates (intermediates and root).
        passphrase : str or bytes, optional
            Passphrase of an encrypted key.

        Returns
        -------
        SigningIdentity

        Raises
        ------
        ConfigurationError
            When a file is missing or unreadable, the passphrase is wrong, or
            the key does not belong to the certificate.
        """
        secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
        key_bytes = _read(key, "private key")
        try:
            if key_bytes.lstrip().startswith(b"-----"):
                private = serialization.load_pem_private_key(key_bytes, password=secret)
            else:
                private = serialization.load_der_private_key(key_bytes, password=secret)
        except (ValueError, TypeError) as error:
            raise ConfigurationError(
                f"The signing key {Path(key).name} should be a PEM or DER private key readable "
                f"with the given passphrase. Found: {error}."
            ) from None
        certificate = _load_certificates(cert, "signing certificate")[0]
        issuers = tuple(_load_certificates(chain, "certificate chain")) if chain else ()
        public = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        own = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public != own:
            raise ConfigurationError(
                f"The signing key {Path(key).name} should belong to the certificate "
                f"{Path(cert).name} ({certificate.subject.rfc4514_string()}). Found a key "
                "for a different public key."
            )
        return cls(key=private, certificate=certificate, chain=issuers)


def existing_trust_roots(keys_dir: str | Path, *, required: bool) -> tuple[x509.Certificate, ...]:
    """Trust roots of the workbench identity in ``keys_dir``, never creating one.

    Parameters
    ----------
    keys_dir : str or Path
        The workdir's ``keys`` folder.
    required : bool
        Whether an identity must exist (reports were sealed with it). When
        False and the folder holds none, nothing is trusted (empty tuple).

    Raises
    ------
    ConfigurationError
        The identity is partial, or missing while ``required``.
    """
    folder = Path(keys_dir)
    if not required and not any(
        (folder / n).exists() for n in (CA_CERT, CA_KEY, SIGNING_CERT, SIGNING_KEY)
    ):
        return ()
    return ensure_signing_identity(folder, create=False).trust_roots


def ensure_signing_identity(
    keys_dir: str | Path, *, common_name: str = "Validation Workbench", create: bool = True
) -> SigningIdentity:
    """Return the workbench's local signing identity, creating it on first use.

    Parameters
    ----------
    keys_dir : str or Path
        Folder for the CA and signing key material (created with mode 0700).
    common_name : str
        Common name of the signing certificate; the CA is ``"<common_name> CA"``.
    create : bool, default True
        Create the identity when the folder holds none. Verification passes
        False: new keys could only vouch for documents sealed from now on, so a
        missing identity is an error there, never silently replaced.

    Returns
    -------
    SigningIdentity
        Signing key and certificate with ``chain == (ca_certificate,)``.

    Raises
    ------
    ConfigurationError
        When only part of the key material exists (refusing to overwrite it),
        none exists and ``create`` is False, or the files cannot be read or
        written.
    """
    folder = Path(keys_dir)
    names = (CA_CERT, CA_KEY, SIGNING_CERT, SIGNING_KEY)
    present = [n for n in names if (folder / n).exists()]
    if len(present) == len(names):
        return SigningIdentity.from_files(
            folder / SIGNING_KEY, folder / SIGNING_CERT, folder / CA_CERT
        )
    if present:
        raise ConfigurationError(
            f"The keys folder {folder} should hold all of {', '.join(names)} or none of them. "
            f"Found only {', '.join(present)}; restore the missing files from backup or move "
            "the folder aside to create a new identity (reports sealed with the old one then "
            "verify only against the old CA)."
        )
    if not create:
        raise ConfigurationError(
            f"The keys folder {folder} holds no workbench signing identity ({', '.join(names)}), "
            "so sealed reports cannot be checked against it. Restore the folder from backup "
            "(new keys are not created for a verification)."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise ConfigurationError(f"Cannot create the keys folder {folder}: {error}.") from None
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Validation Workbench (local)"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    signing_key = ec.generate_private_key(ec.SECP256R1())
    signing_cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Validation Workbench (local)"),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * _SIGNING_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(signing_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(folder / CA_KEY, ca_key)
    _write_key(folder / SIGNING_KEY, signing_key)
    (folder / CA_CERT).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (folder / SIGNING_CERT).write_bytes(signing_cert.public_bytes(serialization.Encoding.PEM))
    return SigningIdentity(key=signing_key, certificate=signing_cert, chain=(ca_cert,))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # created 0600 from the start: the key is never readable by others, not even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigurationError(
            f"The {what} file {path} should be readable. Found: {error.strerror}."
        ) from None


def _load_certificates(path: str | Path, what: str) -> list[x509.Certificate]:
    data = _read(path, what)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError as error:
        raise ConfigurationError(
            f"The {what} {Path(path).name} should hold PEM or DER X.509 certificates. "
            f"Found: {error}."
        ) from None
    return certificates
