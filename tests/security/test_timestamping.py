"""RFC 3161 time stamps on audit checkpoints, against a local test TSA on loopback.

The test TSA is a real HTTP time-stamping service (``application/timestamp-query``)
with its own CA and a certificate for time stamping only; it answers with pyHanko's
reference TSA implementation. The workbench requests tokens over HTTP and verifies them
against the TSA's CA alone, as an auditor would.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper

from workbench.errors import AuditChainError, ConfigurationError
from workbench.records.timestamping import timestamp_checkpoint, verify_timestamp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "malformed"))
import harness  # noqa: E402


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
    *,
    ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer else (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), True
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True)
    return builder.sign(issuer_key, hashes.SHA256())


class _TestTsa:
    """An RFC 3161 TSA over HTTP on 127.0.0.1 with its own CA."""

    def __init__(self) -> None:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = _certificate("Workbench test TSA root", ca_key, None, ca=True)
        tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tsa = _certificate("Workbench test TSA", tsa_key, (self.ca.subject, ca_key), ca=False)
        der = serialization.Encoding.DER
        self.stamper = DummyTimeStamper(
            tsa_cert=asn1_x509.Certificate.load(tsa.public_bytes(der)),
            tsa_key=asn1_keys.PrivateKeyInfo.load(
                tsa_key.private_bytes(
                    der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            ),
            certs_to_embed=[asn1_x509.Certificate.load(self.ca.public_bytes(der))],
        )
        stamper = self.stamper

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def root_pem(self, folder: Path) -> Path:
        path = folder / "tsa-root.pem"
        path.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        return path


@pytest.fixture(scope="module")
def tsa() -> Iterator[_TestTsa]:
    server = _TestTsa()
    yield server
    server.server.shutdown()


def test_token_covers_the_checkpoint_and_verifies_against_the_tsa_root(
    tsa: _TestTsa, tmp_path: Path
) -> None:
    checkpoint = {"format": "x", "entry_count": 7, "head_hash": "ab" * 32, "signature": "s"}
    token = timestamp_checkpoint(checkpoint, tsa.url)
    stamped = verify_timestamp(token, checkpoint, [tsa.root_pem(tmp_path)])
    assert abs((dt.datetime.now(dt.UTC) - stamped).total_seconds()) < 300
    # A checkpoint rewritten afterwards (one more entry) is not what the TSA stamped.
    with pytest.raises(AuditChainError, match="not this checkpoint"):
        verify_timestamp(token, {**checkpoint, "entry_count": 8}, [tsa.root_pem(tmp_path)])
    # A TSA the auditor does not trust is refused.
    other = _TestTsa()
    try:
        with pytest.raises(AuditChainError, match="does not chain to a trusted root"):
            verify_timestamp(token, checkpoint, [other.root_pem(tmp_path / "..")])
    finally:
        other.server.shutdown()


def test_unreachable_tsa_is_one_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="time-stamping authority at http://127.0.0.1:9"):
        timestamp_checkpoint({"a": 1}, "http://127.0.0.1:9/", timeout=2)


def test_cli_checkpoint_with_tsa_and_verify(
    tsa: _TestTsa, tmp_path: Path, wb_copy: harness.Pipeline
) -> None:
    out = tmp_path / "checkpoint.json"
    made = harness.cli(
        wb_copy.workdir, "audit", "checkpoint", "--out", str(out), "--tsa", tsa.url, user="aud"
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "checkpoint.json.tsr").is_file()
    root = tsa.root_pem(tmp_path)
    ok = harness.cli(
        wb_copy.workdir, "audit", "verify", "--checkpoint", str(out), "--tsa-root", str(root)
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "time-stamped by the TSA" in ok.stdout
    # Rewriting the saved checkpoint is caught by the token even if its count is forged too.
    data = json.loads(out.read_text())
    data["entry_count"] += 1
    out.write_text(json.dumps(data))
    bad = harness.cli(
        wb_copy.workdir, "audit", "verify", "--checkpoint", str(out), "--tsa-root", str(root)
    )
    assert bad.returncode != 0
