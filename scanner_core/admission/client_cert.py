"""The client certificate a cluster presents (mTLS through App Service): App Service ends
TLS, and with client certificates enabled (``clientCertEnabled``, mode ``Required``) it
forwards the certificate the client proved it holds as ``X-ARR-ClientCert`` (base64 DER;
https://learn.microsoft.com/azure/app-service/app-service-web-configure-tls-mutual-auth).
The app must still decide whether that certificate may call: its thumbprint is one of
``ADMISSION_CLIENT_CERT_THUMBPRINTS``, or it is issued (signature checked) by a certificate
of ``ADMISSION_CLIENT_CA``; either way it must be within its validity period.
"""

from __future__ import annotations

import base64
import binascii
import functools
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from .settings import AdmissionSettings

HEADER = "X-ARR-ClientCert"
MAX_HEADER_CHARS = 16 * 1024


class ClientCertificateRefused(Exception):
    """``status``: 401 without a certificate, 403 with one that may not call."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def check_client_certificate(header: str | None, settings: AdmissionSettings, now: datetime | None = None) -> str:
    """The accepted certificate's subject, or ``ClientCertificateRefused``."""
    if not settings.client_cert_thumbprints and not settings.client_ca:
        raise ClientCertificateRefused(403, "ADMISSION_AUTH=client-certificate needs ADMISSION_CLIENT_CERT_THUMBPRINTS "
                                            "or ADMISSION_CLIENT_CA: no certificate is accepted")
    if not header:
        raise ClientCertificateRefused(401, f"a client certificate is required ({HEADER}): enable client certificates "
                                            "(mode Required) on the app and present one")
    certificate = _certificate(header)
    moment = now or datetime.now(timezone.utc)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise ClientCertificateRefused(403, "the client certificate is outside its validity period")
    thumbprints = {certificate.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - App Service's thumbprint
                   certificate.fingerprint(hashes.SHA256()).hex().upper()}
    if thumbprints & set(settings.client_cert_thumbprints):
        return certificate.subject.rfc4514_string()
    try:
        authorities = _authorities(settings.client_ca or "")
    except (OSError, ValueError):
        raise ClientCertificateRefused(403, "ADMISSION_CLIENT_CA cannot be read as PEM certificates: "
                                            "no certificate is accepted by it") from None
    for authority in authorities:
        try:
            certificate.verify_directly_issued_by(authority)
        except (ValueError, TypeError, InvalidSignature):  # not issued by this CA
            continue
        return certificate.subject.rfc4514_string()
    raise ClientCertificateRefused(403, "the client certificate is neither one of ADMISSION_CLIENT_CERT_THUMBPRINTS "
                                        "nor issued by ADMISSION_CLIENT_CA")


def _certificate(header: str) -> x509.Certificate:
    if len(header) > MAX_HEADER_CHARS:
        raise ClientCertificateRefused(403, f"{HEADER} is longer than {MAX_HEADER_CHARS} characters")
    text = header.strip()
    try:
        if text.startswith("-----BEGIN"):
            return x509.load_pem_x509_certificate(text.encode("ascii"))
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise ClientCertificateRefused(403, f"{HEADER} is not a certificate (base64 DER)") from None


@functools.lru_cache(maxsize=4)
def _authorities(value: str) -> tuple[x509.Certificate, ...]:
    """The CA certificates of the setting (PEM text, or a PEM file's path); cached per value."""
    if not value:
        return ()
    data = value.encode("ascii", "replace") if "-----BEGIN" in value else Path(value).read_bytes()
    return tuple(x509.load_pem_x509_certificates(data))
