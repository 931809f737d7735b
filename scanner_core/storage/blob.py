"""Blob Storage: uploads with bounded retries, streamed from disk.

The SDK's own retry policy is switched off (``retry_total=0``) so that the
attempts and their backoff are exactly the ones described here (tenacity): 5
attempts, exponential backoff. Errors are re-raised as ``StorageError`` with a
redacted message, and never chained: urllib3 quotes the request URL, SAS
token included, in its exception text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContentSettings
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import StorageError
from ..redact import Redactor
from .clients import shared_container_client
from .container import forbidden_hint

UPLOAD_ATTEMPTS = 5
_T = TypeVar("_T")
_CHUNK_BYTES = 4 * 1024 * 1024
# Blocks of a big report in flight at once: 2 x 4 MiB buffered. Measured on Azurite:
# 2 is as fast as 3 or 4, and it keeps a 31 MiB report's shipping under +32 MiB even
# while the monitor streams the previous audit's report beside it (docs/performance.md).
PARALLEL_BLOCKS = 2


class BlobStore(Protocol):
    """Where audit results go. ``azure-blob`` is the one implementation."""

    def upload_file(self, name: str, path: Path, content_type: str) -> None: ...

    def upload_bytes(self, name: str, data: bytes, content_type: str) -> None: ...

    def download_bytes(self, name: str) -> bytes | None: ...

    def create_bytes(self, name: str, data: bytes, content_type: str) -> bool: ...


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return True  # could not connect, or the connection broke
    if isinstance(error, (ClientAuthenticationError, ResourceNotFoundError)):
        return False  # a bad or expired SAS, a missing container: waiting will not help
    if isinstance(error, HttpResponseError):
        return error.status_code is None or error.status_code in (408, 429) or error.status_code >= 500
    return False


class AzureBlobStore:
    """One container, addressed by its SAS URL or, without a SAS, with the app's identity."""

    def __init__(
        self,
        container_sas_url: str,
        redactor: Redactor,
        *,
        attempts: int = UPLOAD_ATTEMPTS,
        backoff_multiplier: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        self._redactor = redactor
        self._url = container_sas_url
        self._container = shared_container_client(
            container_sas_url,
            retry_total=0,
            connection_timeout=10,
            read_timeout=120,
            max_single_put_size=_CHUNK_BYTES,
            max_block_size=_CHUNK_BYTES,
        )
        self._retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=backoff_multiplier, max=backoff_max),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        self.attempts = attempts

    def upload_file(self, name: str, path: Path, content_type: str) -> None:
        def attempt() -> None:
            with path.open("rb") as stream:
                self._container.upload_blob(
                    name,
                    stream,
                    length=path.stat().st_size,
                    overwrite=True,
                    max_concurrency=1,  # one chunk in memory at a time
                    content_settings=ContentSettings(content_type=content_type),
                )

        self._with_retries(f"upload of {name}", attempt)

    def upload_file_observed(self, name: str, path: Path, content_type: str, observe: Callable[[bytes], None]) -> None:
        """``upload_file`` in parallel blocks, handing every byte to ``observe`` as it
        is read, in file order and once only (a retried attempt re-reads the file but
        passes on only what was not seen yet). The SDK reads a non-seekable stream in
        the calling thread and stages up to ``PARALLEL_BLOCKS`` blocks at once, so the
        caller's work on the bytes overlaps the block uploads."""
        seen = [0]

        def attempt() -> None:
            with path.open("rb") as stream:
                self._container.upload_blob(
                    name,
                    _ObservedReader(stream, observe, seen),
                    length=path.stat().st_size,
                    overwrite=True,
                    max_concurrency=PARALLEL_BLOCKS,
                    content_settings=ContentSettings(content_type=content_type),
                )

        self._with_retries(f"upload of {name}", attempt)

    def upload_bytes(self, name: str, data: bytes, content_type: str) -> None:
        def attempt() -> None:
            self._container.upload_blob(
                name, data, overwrite=True, content_settings=ContentSettings(content_type=content_type)
            )

        self._with_retries(f"upload of {name}", attempt)

    def create_bytes(self, name: str, data: bytes, content_type: str) -> bool:
        """Writes the blob only if there is none yet (``If-None-Match: *``); ``False``
        when it exists. A claim: of two writers, one wins."""

        def attempt() -> bool:
            try:
                self._container.upload_blob(
                    name, data, overwrite=False, content_settings=ContentSettings(content_type=content_type)
                )
            except ResourceExistsError:
                return False
            return True

        return self._with_retries(f"creation of {name}", attempt)

    def names(self, prefix: str) -> list[str]:
        """The names of the blobs under ``prefix``."""
        return self._with_retries(f"listing of {prefix}",
                                  lambda: [b.name for b in self._container.list_blobs(name_starts_with=prefix)])

    def copy_blob(self, source: str, destination: str, timeout_s: float = 120.0) -> None:
        """A server-side copy within the account (Copy Blob): no bytes pass through this
        instance. The source URL carries the container's SAS, if any; with the app's
        identity the destination request's token authorises a source in the same account.
        A missing source raises ``StorageError`` at once (HTTP 404, not retried)."""

        def attempt() -> None:
            target = self._container.get_blob_client(destination)
            status = target.start_copy_from_url(self._container.get_blob_client(source).url).get("copy_status")
            deadline = time.monotonic() + timeout_s
            while status == "pending" and time.monotonic() < deadline:  # same-account copies rarely are
                time.sleep(0.2)
                status = target.get_blob_properties().copy.status
            if status != "success":
                raise _CopyNotFinished(f"the copy ended {status!r}")

        self._with_retries(f"copy of {source} to {destination}", attempt)

    def download_bytes(self, name: str) -> bytes | None:
        """The blob's content, or ``None`` if there is no such blob."""

        def attempt() -> bytes | None:
            try:
                return self._container.download_blob(name).readall()
            except ResourceNotFoundError:
                return None

        return self._with_retries(f"download of {name}", attempt)

    def _with_retries(self, what: str, action: Callable[[], _T]) -> _T:
        retrying = self._retrying.copy()  # its own statistics: uploads may run on several threads
        try:
            return retrying(action)
        except Exception as error:  # noqa: BLE001 - re-raised, typed and redacted
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise StorageError(f"{what} failed: {self.describe(error, attempts)}") from None

    def describe(self, error: BaseException, attempts: int = 1) -> str:
        """A one-line, secret-free description of an SDK error."""
        if isinstance(error, HttpResponseError) and error.status_code is not None:
            code = getattr(error, "error_code", None) or getattr(error.response, "reason", "")
            text = f"HTTP {error.status_code} {code}".strip() + forbidden_hint(self._url, error.status_code)
        elif isinstance(error, (ServiceRequestError, ServiceResponseError)):
            text = f"{type(error).__name__}: storage endpoint unreachable ({_first_line(str(error))})"
        else:
            text = f"{type(error).__name__}: {_first_line(str(error))}"
        retried = f" (after {attempts} attempts)" if attempts > 1 else " (not retried: retrying cannot help)"
        return self._redactor(text + retried)


class _CopyNotFinished(Exception):
    """A server-side copy that did not succeed (failed, aborted, or still pending)."""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


class _ObservedReader:
    """A read-only, non-seekable view of a file that shows each new byte to an observer."""

    def __init__(self, stream: BinaryIO, observe: Callable[[bytes], None], seen: list[int]) -> None:
        self._stream = stream
        self._observe = observe
        self._seen = seen  # bytes already observed, across attempts
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        start, self._position = self._position, self._position + len(data)
        if self._position > self._seen[0]:
            self._observe(data[max(0, self._seen[0] - start) :])
            self._seen[0] = self._position
        return data

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True
