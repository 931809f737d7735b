"""Self-signed certificates and RSA keys made in the test, never checked in.

Used for Azurite's HTTPS (bearer tokens are refused over plain HTTP, by the
SDK and by Azurite), and as the root certificate bundle a token-auth
``docker-registry`` trusts to verify the access tokens a token service signs.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class SelfSigned:
    """A certificate (PEM, also its own CA) and its private key (PEM), written to disk."""

    cert_path: Path
    key_path: Path
    key: rsa.RSAPrivateKey

    @property
    def key_pem(self) -> bytes:
        return self.key_path.read_bytes()

    @property
    def libtrust_key_id(self) -> str:
        """The key id ``docker-registry`` 2.x gives a certificate's public key
        (libtrust: base32 of the first 240 bits of SHA-256 over the DER
        SubjectPublicKeyInfo, in 12 colon-separated groups of 4)."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
        return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def self_signed(directory: Path, name: str, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> SelfSigned:
    """A 2048-bit RSA key and a one-day self-signed certificate for ``hosts``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return SelfSigned(cert_path, key_path, key)
