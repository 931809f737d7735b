"""Blob operations for the DB snapshot (``db_snapshot.py``): big files streamed
both ways in parallel blocks, small JSON pointers, listing and deleting.

Blob names, under the scanner's folder beside the audits::

    trivy-{id8}/db-snapshot/{kind}/metadata.json            the pointer, written last
    trivy-{id8}/db-snapshot/{kind}/{UpdatedAt}-{sha12}.tar.gz  immutable archives

An archive is never overwritten (its name changes with its content), so a
reader that follows the pointer never reads half of a file being replaced.
Errors are ``StorageError`` with a secret-free message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from ..errors import StorageError
from ..redact import Redactor
from .clients import shared_container_client
from .layout import scanner_folder

PARALLEL_TRANSFERS = 4
_BLOCK_BYTES = 8 * 1024 * 1024


def snapshot_prefix(scanner_short_id: str, kind: str) -> str:
    return f"{scanner_folder(scanner_short_id)}/db-snapshot/{kind}/"


class SnapshotBlobs:
    """The snapshot's blobs in the audit container (SDK retries on: 3 attempts)."""

    def __init__(self, container: ContainerClient | str, redactor: Redactor) -> None:
        """``container``: a client (the caller's, e.g. one with a token credential) or the
        container's URL with its SAS (then the process's shared client for it)."""
        self._redactor = redactor
        if not isinstance(container, str):
            self._container = container
            return
        self._container = shared_container_client(
            container,
            retry_total=3,
            connection_timeout=10,
            read_timeout=300,
            max_single_put_size=_BLOCK_BYTES,
            max_block_size=_BLOCK_BYTES,
            max_chunk_get_size=_BLOCK_BYTES,
        )

    def read_json(self, name: str) -> dict[str, Any] | None:
        """The JSON document at ``name``, or ``None`` when there is none (or it is not JSON)."""
        try:
            data = self._container.download_blob(name).readall()
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise self._error(f"reading {name}", error) from None
        try:
            document = json.loads(data)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    def write_json(self, name: str, document: dict[str, Any]) -> None:
        try:
            self._container.upload_blob(
                name, json.dumps(document).encode(), overwrite=True,
                content_settings=ContentSettings(content_type="application/json"),
            )  # fmt: skip
        except AzureError as error:
            raise self._error(f"writing {name}", error) from None

    def upload_file(self, name: str, path: Path) -> None:
        try:
            with path.open("rb") as stream:
                self._container.upload_blob(
                    name, stream, length=path.stat().st_size, overwrite=True, max_concurrency=PARALLEL_TRANSFERS,
                    content_settings=ContentSettings(content_type="application/gzip"),
                )  # fmt: skip
        except AzureError as error:
            raise self._error(f"uploading {name}", error) from None

    def download_file(self, name: str, path: Path) -> int:
        """Streams ``name`` into ``path`` (parallel ranged GETs); returns the bytes written."""
        try:
            with path.open("wb") as stream:
                return int(self._container.download_blob(name, max_concurrency=PARALLEL_TRANSFERS).readinto(stream))
        except AzureError as error:
            raise self._error(f"downloading {name}", error) from None

    def names(self, prefix: str) -> list[str]:
        try:
            return sorted(blob.name for blob in self._container.list_blobs(name_starts_with=prefix))
        except AzureError as error:
            raise self._error(f"listing {prefix}", error) from None

    def delete(self, name: str) -> None:
        try:
            self._container.delete_blob(name)
        except ResourceNotFoundError:
            pass
        except AzureError as error:
            raise self._error(f"deleting {name}", error) from None

    def _error(self, what: str, error: AzureError) -> StorageError:
        status = getattr(error, "status_code", None)
        detail = f"HTTP {status}" if status else type(error).__name__
        return StorageError(self._redactor(f"DB snapshot: {what} failed: {detail}"))
