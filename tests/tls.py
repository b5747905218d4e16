"""A throwaway certificate authority, with server and client certificates, for TLS tests."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    """PEM bytes: the CA's certificate, and a server and a client key and
    certificate it signed."""

    ca_cert: bytes
    server_key: bytes
    server_cert: bytes
    client_key: bytes
    client_cert: bytes

    def write(self, directory: Path) -> CertificateFiles:
        """Each PEM in its own file under `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        files = CertificateFiles(
            ca_cert=directory / "ca.pem",
            server_key=directory / "server.key",
            server_cert=directory / "server.pem",
            client_key=directory / "client.key",
            client_cert=directory / "client.pem",
        )
        for name in ("ca_cert", "server_key", "server_cert", "client_key", "client_cert"):
            getattr(files, name).write_bytes(getattr(self, name))
        return files


@dataclass(frozen=True)
class CertificateFiles:
    """Where Certificates.write put each PEM."""

    ca_cert: Path
    server_key: Path
    server_cert: Path
    client_key: Path
    client_cert: Path


def make_certificates(host: str = "localhost", ca_name: str = "llmgateway test CA") -> Certificates:
    """A new CA, a server certificate for `host` and 127.0.0.1 and a client
    certificate, valid for a day. Give two CAs different `ca_name`s for a
    chain that fails on the issuer, not only on the signature."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(issuer)
        .issuer_name(issuer)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        subject: str, extensions: list[x509.ExtensionType]
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(
        host,
        [
            x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            )
        ],
    )
    client_key, client_cert = leaf(
        "llmgateway test client", [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])]
    )
    return Certificates(
        ca_cert=_pem_cert(ca_cert),
        server_key=_pem_key(server_key),
        server_cert=_pem_cert(server_cert),
        client_key=_pem_key(client_key),
        client_cert=_pem_cert(client_cert),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
