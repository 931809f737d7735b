"""The egress proxy's certificate authority (an explicit per-process cache).

trivy talks TLS to the registries it pulls from; to see the redirects and token realms inside
those connections, the egress proxy (``egress.py``) ends trivy's TLS with a certificate for the
registry's name that this authority signs, and opens its own verified TLS connection to the
registry. trivy trusts the authority through ``SSL_CERT_FILE``: a bundle of the roots it would
trust anyway (the file ``SSL_CERT_FILE`` names, else certifi's) plus this authority's
certificate. The key never leaves the process; a new one is made per process, valid for a day
past the longest a process lives, and leaf certificates are cached per host.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = timedelta(days=7)
_NAME = "trivy scanner egress guard"


@dataclass(frozen=True)
class _Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    directory: Path


_lock = threading.Lock()


@functools.cache
def _authority() -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _NAME)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)  # fmt: skip
        .sign(key, hashes.SHA256())
    )
    directory = Path(tempfile.mkdtemp(prefix="trivy-egress-"))
    return _Authority(key, certificate, ec.generate_private_key(ec.SECP256R1()), directory)


# Where Go looks for the system's roots on Linux when SSL_CERT_FILE is unset (crypto/x509).
_SYSTEM_ROOTS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem",
                 "/etc/pki/tls/cacert.pem", "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/cert.pem")


def trust_bundle() -> Path:
    """The ``SSL_CERT_FILE`` for trivy: the roots it would trust anyway (the file ``SSL_CERT_FILE``
    names, else the system's, else certifi's) and this authority; made again when those change."""
    roots = Path(os.environ.get("SSL_CERT_FILE") or next((p for p in _SYSTEM_ROOTS if Path(p).is_file()),
                                                           certifi.where()))  # fmt: skip
    try:
        status = roots.stat()
        key = (str(roots), status.st_mtime_ns, status.st_size)
    except OSError:
        roots, key = Path(certifi.where()), (certifi.where(), 0, 0)
    with _lock:
        authority = _authority()
        bundle = _bundles.get(key)
        if bundle is None:
            bundle = authority.directory / f"bundle-{len(_bundles)}.pem"
            pem = authority.certificate.public_bytes(serialization.Encoding.PEM)
            bundle.write_bytes(roots.read_bytes().rstrip(b"\n") + b"\n" + pem)
            _bundles[key] = bundle
        return bundle


_bundles: dict[tuple[str, int, int], Path] = {}  # explicit per-process cache: roots file -> bundle


@functools.lru_cache(maxsize=256)
def server_context(host: str) -> ssl.SSLContext:
    """A TLS server context presenting a certificate for ``host``, signed by the authority."""
    with _lock:
        authority = _authority()
    now = datetime.now(UTC)
    try:
        alt_name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt_name = x509.DNSName(host)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64] or "registry")]))
        .issuer_name(authority.certificate.subject)
        .public_key(authority.leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName([alt_name]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(authority.key, hashes.SHA256())
    )
    leaf = authority.directory / f"leaf-{abs(hash(host))}.pem"
    leaf.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + authority.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())  # fmt: skip
    )
    leaf.chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf)
    return context
