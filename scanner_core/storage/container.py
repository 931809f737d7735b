"""The one place a container client is made: with a SAS URL, or with the
app's Azure identity for a plain container URL (``AZ_BLOB_STORAGE_URL``).

With the identity every blob call (audits, heartbeat, index) carries a bearer
token from ``DefaultAzureCredential``; the identity needs *Storage Blob Data
Contributor* on the container, and a 403 says so.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import ContainerClient

from ..errors import StorageError

from ..identity import azure_credential, identity_label

BLOB_ROLE = "Storage Blob Data Contributor"


def uses_identity(container_url: str) -> bool:
    """A URL without a SAS signature is reached with the app's identity."""
    return "sig" not in parse_qs(urlsplit(container_url).query)


def container_client(container_url: str, **options: Any) -> ContainerClient:
    """A ``ContainerClient`` for ``container_url``; ``options`` as the SDK's."""
    if uses_identity(container_url):
        return ContainerClient.from_container_url(container_url, credential=azure_credential(), **options)
    return ContainerClient.from_container_url(container_url, **options)


def forbidden_hint(container_url: str, status: int | None) -> str:
    """The role a 403 means is missing, when the identity is in use; else nothing."""
    if status == 403 and uses_identity(container_url):
        return f": forbidden: {identity_label()} needs the role '{BLOB_ROLE}' on the container"
    return ""


class StorageErrors:
    """Turns SDK errors into ``StorageError`` quoting only status and error code:
    SDK messages may quote the request URL, SAS token included."""

    def __init__(self, what: str, url: str = "") -> None:
        self.what = what
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, AzureError):
            if isinstance(exc, HttpResponseError) and exc.status_code is not None:
                reason = f"HTTP {exc.status_code} {getattr(exc, 'error_code', None) or ''}".strip()
                reason += forbidden_hint(self.url, exc.status_code)
            else:
                reason = type(exc).__name__
            raise StorageError(f"{self.what} failed: {reason}") from None
