"""A local certificate authority for the Azure stand-ins (development and tests only, never production).

The token authority, Azurite (which serves user-delegation SAS only over HTTPS) and any other local
stand-in present a server certificate for ``127.0.0.1``/``localhost`` signed by one CA kept in a directory.
Clients trust it through ``SSL_CERT_FILE`` pointing at :attr:`DevCertificates.trust_bundle` (the CA plus
the system roots), so the production code paths (azure-identity, the Azure SDKs, aiohttp) run unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exthub.contract.keyfiles import read_or_create_once

VALIDITY = timedelta(days=365)
SYSTEM_ROOTS = Path("/etc/ssl/certs/ca-certificates.crt")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class DevCertificates:
    """Paths of the CA certificate, the server certificate and key, and the trust bundle (PEM files)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    trust_bundle: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _build(now: datetime) -> tuple[bytes, bytes, bytes]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Exthub development CA"))
        .issuer_name(_name("Exthub development CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return (
        ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert.public_bytes(serialization.Encoding.PEM),
        _pem_key(server_key),
    )


def load_or_create(directory: Path) -> DevCertificates:
    """The CA and ``127.0.0.1`` server certificate in ``directory``, made once (blocking file I/O)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = _build(datetime.now(UTC))
    # One file holds all three so concurrent first starts agree on a matching set.
    combined = read_or_create_once(directory / "dev-pki.pem", ca_pem + b"\n" + cert_pem + b"\n" + key_pem)
    ca, server, key = (match.group(0) + b"\n" for match in _PEM_BLOCK.finditer(combined))
    paths = DevCertificates(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        trust_bundle=directory / "trust-bundle.pem",
    )
    roots = SYSTEM_ROOTS.read_bytes() if SYSTEM_ROOTS.exists() else b""
    for path, content, mode in (
        (paths.ca_cert, ca, 0o644),
        (paths.server_cert, server, 0o644),
        (paths.server_key, key, 0o600),
        (paths.trust_bundle, ca + roots, 0o644),
    ):
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            path.chmod(mode)
    return paths
