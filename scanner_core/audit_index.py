"""An index of audits, so lookups and the security summary never read metas.

Reading one ``meta`` per audit does not scale to thousands of audits; this
index keeps, next to the audit folders, one empty blob per audit whose *name*
orders it and whose *metadata* (``x-ms-meta-*``) is its summary row:

``trivy-{id8}/index/by-time/{9999999999 - requested-at:010d}-{audit-id}.row``
    One per audit. The inverted request time (unix seconds, zero-padded) makes
    the service's lexicographic listing newest-first, so a page of the summary
    is one ``list_blobs(include=["metadata"])`` call with ``results_per_page``,
    and the next page resumes from the service's continuation marker. Ties in
    the same second are ordered by audit id.
``trivy-{id8}/index/by-id/{audit-id}.ref``
    The pointer for ``GET /audits/{id}``: its metadata names the audit folder
    and its ``.row``, so a lookup is one HEAD.

Why request time and not scan time: it names the audit folder, so it is the
same on every redelivery of a request; a redelivered scan therefore overwrites
the same ``.row`` (replaces, never duplicates). ``scanned-at`` (the meta's
``timestamp``) is carried in the row. When an audit id is re-used by a *newer*
request, its old row is deleted and the pointer moves to the newer folder; a
record for an *older* request than the one indexed is ignored (latest request
wins, whatever order the scans finish in). The suffixes keep blob names from
ending in ``.`` (which an audit id may), which Azure advises against.

Totals are counted while listing every row (5,000 rows per service call), so
they are exact with no second write path that could drift, but they cost
O(audits): about 0.45 ms per row against Azurite, most of it the SDK parsing
the listing's XML (~0.9 s for 2,000 audits, printed by the tests). That is why
the HTTP API computes them for the first page only. A page costs one call
whatever the number of audits (30-50 ms), a lookup one HEAD (~5 ms).

Metadata values must be ASCII: the image (which may hold any text when it was
read from a tarball's manifest) is percent-encoded and capped at
``MAX_IMAGE_CHARS`` encoded characters.

Writes are not transactional: ``record`` writes the row, then the pointer,
then deletes a superseded row; a crash in between leaves at worst a stale
extra row, which the next ``record`` of that audit removes. Whoever deletes an
audit folder (retention) calls ``forget`` so that the index does not outlive it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import cast
from urllib.parse import quote, unquote

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.paging import ItemPaged, PageIterator
from azure.storage.blob import BlobProperties, ContainerClient

from .errors import RequestError, StorageError
from .layout import META_BLOB, scanner_folder
from .models import AuditMeta, AuditResult
from .verdict import ScanStatus, VulnerabilityCounts, summary_line

INDEX_FORMAT = "1"
MAX_PAGE_SIZE = 5000  # the service's own maximum of results per listing call
MAX_IMAGE_CHARS = 1024
_INVERT_FROM = 9_999_999_999  # 10 digits: good until the year 2286
_ROW_SUFFIX, _REF_SUFFIX = ".row", ".ref"
_SEVERITIES = ("critical", "high", "medium", "low", "unknown", "total")
_CURSOR_PREFIX = "c1:"

# Summary categories: the scan status of a succeeded audit, or "audit-failed"
# for every audit whose audit-result is not "succeeded".
CATEGORIES = ("passed", "warning", "failed", "audit-failed")


class InvalidCursor(RequestError):
    """A page cursor that this index did not hand out."""

    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


@dataclass(frozen=True)
class AuditRow:
    """One audit as the summary shows it, read from a ``.row``'s metadata."""

    audit_id: str
    folder: str
    requested_at: int
    audit_result: str
    scanned_at: int | None = None
    image: str | None = None
    scan_status: str | None = None
    vulnerabilities: dict[str, int] | None = None
    secrets: int | None = None
    failure_reason: str | None = None

    @property
    def meta_path(self) -> str:
        return f"{self.folder}/{META_BLOB}"

    @property
    def category(self) -> str | None:
        """Which total the audit counts towards (``None``: none but ``total``)."""
        if self.audit_result != AuditResult.SUCCEEDED.value:
            return "audit-failed"
        return self.scan_status if self.scan_status in CATEGORIES else None

    @property
    def summary(self) -> str | None:
        """The core's one-line summary, re-derived from status and counts (not stored)."""
        if self.scan_status is None or self.vulnerabilities is None:
            return None
        try:
            return summary_line(ScanStatus(self.scan_status), VulnerabilityCounts(**self.vulnerabilities))
        except ValueError:
            return None

    @classmethod
    def from_meta(cls, meta: AuditMeta, folder: str) -> AuditRow:
        return cls(
            audit_id=meta.audit_id,
            folder=folder,
            requested_at=meta.requested_at,
            audit_result=meta.audit_result.value,
            scanned_at=meta.timestamp,
            image=meta.image,
            scan_status=meta.scan_status,
            vulnerabilities=dict(meta.vulnerabilities) if meta.vulnerabilities is not None else None,
            secrets=meta.secrets,
            failure_reason=meta.failure_reason,
        )

    def to_metadata(self) -> dict[str, str]:
        """ASCII-only ``x-ms-meta-*`` values; lower-case keys (valid C# identifiers)."""
        metadata = {
            "v": INDEX_FORMAT,
            "auditid": self.audit_id,
            "folder": self.folder,
            "requested": str(self.requested_at),
            "result": self.audit_result,
        }
        optional = {
            "scanned": self.scanned_at,
            "status": self.scan_status,
            "secrets": self.secrets,
            "reason": self.failure_reason,
            "image": encode_image(self.image) if self.image is not None else None,
        }
        metadata |= {key: _ascii(str(value)) for key, value in optional.items() if value is not None}
        if self.vulnerabilities is not None:
            metadata |= {name: str(int(self.vulnerabilities.get(name, 0))) for name in _SEVERITIES}
        return metadata

    @classmethod
    def from_metadata(cls, name: str, metadata: Mapping[str, str]) -> AuditRow:
        """Tolerant: a row written by another version still lists (unknown keys ignored)."""
        values = {key.lower(): value for key, value in metadata.items()}
        counts = {s: n for s in _SEVERITIES if (n := _int(values.get(s))) is not None}
        image = values.get("image")
        return cls(
            audit_id=values.get("auditid") or _audit_id_from_row_name(name),
            folder=values.get("folder", ""),
            requested_at=_int(values.get("requested")) or 0,
            audit_result=values.get("result", ""),
            scanned_at=_int(values.get("scanned")),
            image=unquote(image) if image is not None else None,
            scan_status=values.get("status"),
            vulnerabilities=counts or None,
            secrets=_int(values.get("secrets")),
            failure_reason=values.get("reason"),
        )


def encode_image(image: str) -> str:
    """Percent-encodes to ASCII (``/:@+`` kept readable); cut to ``MAX_IMAGE_CHARS``."""
    encoded = quote(image, safe="/:@+")
    while len(encoded) > MAX_IMAGE_CHARS:
        image = image[: len(image) - max(1, (len(encoded) - MAX_IMAGE_CHARS) // 3)]
        encoded = quote(image, safe="/:@+")
    return encoded


def iso8601(unix_seconds: int | None) -> str | None:
    if unix_seconds is None:
        return None
    return datetime.fromtimestamp(unix_seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuditIndex:
    """The index of one scanner's audits in the results container.

    Not a cache: every call asks Blob Storage, so several function instances
    can share it. ``StorageError`` (transient) when the service fails.
    """

    def __init__(self, container: ContainerClient | str, scanner_short_id: str) -> None:
        self._owns_client = isinstance(container, str)  # a client handed in is the caller's to close
        if isinstance(container, str):
            container = ContainerClient.from_container_url(
                container, retry_total=3, connection_timeout=10, read_timeout=60
            )
        self._container = container
        self.prefix = f"{scanner_folder(scanner_short_id)}/index/"
        self._scanner_prefix = f"{scanner_folder(scanner_short_id)}/"

    # -- names ---------------------------------------------------------------

    def row_name(self, audit_id: str, requested_at: int) -> str:
        if not 0 <= requested_at <= _INVERT_FROM:
            raise ValueError(f"requested-at {requested_at} is outside 0..{_INVERT_FROM}")
        return f"{self.prefix}by-time/{_INVERT_FROM - requested_at:010d}-{audit_id}{_ROW_SUFFIX}"

    def ref_name(self, audit_id: str) -> str:
        return f"{self.prefix}by-id/{audit_id}{_REF_SUFFIX}"

    # -- writing -------------------------------------------------------------

    def record(self, meta: AuditMeta, folder: str) -> None:
        """Indexes an audit whose ``meta`` has just been written to ``folder``.

        Idempotent: recording the same audit again replaces its row. An older
        request than the one indexed for this audit id is ignored.
        """
        audit_id = _valid_audit_id(meta.audit_id)
        if not folder.startswith(self._scanner_prefix) or "/" in folder[len(self._scanner_prefix) :]:
            raise ValueError(f"{folder!r} is not an audit folder of this scanner ({self._scanner_prefix}...)")
        row = AuditRow.from_meta(meta, folder)
        row_name = self.row_name(audit_id, row.requested_at)
        ref_name = self.ref_name(audit_id)
        with self._storage(f"recording audit {audit_id} in the index"):
            previous = self._metadata(ref_name)
            previous_row = previous.get("row") if previous else None
            if previous and (_int(previous.get("requested")) or 0) > row.requested_at:
                return  # a newer request of this audit id is already indexed
            self._container.upload_blob(row_name, b"", overwrite=True, metadata=row.to_metadata())
            self._container.upload_blob(
                ref_name,
                b"",
                overwrite=True,
                metadata={"v": INDEX_FORMAT, "folder": folder, "row": row_name, "requested": str(row.requested_at)},
            )
            if previous_row and previous_row != row_name and previous_row.startswith(self.prefix):
                self._delete_if_exists(previous_row)

    def forget(self, audit_id: str) -> None:
        """Removes an audit from the index (its row, then its pointer); no-op if absent."""
        _valid_audit_id(audit_id)
        ref_name = self.ref_name(audit_id)
        with self._storage(f"removing audit {audit_id} from the index"):
            pointer = self._metadata(ref_name)
            if pointer and (row := pointer.get("row", "")).startswith(self.prefix):
                self._delete_if_exists(row)
            self._delete_if_exists(ref_name)

    def rebuild(self) -> int:
        """Indexes every audit folder's ``meta`` (for audits written before the
        index, or after a failed ``record``). Reads every meta: maintenance only."""
        recorded = 0
        with self._storage("rebuilding the audit index"):
            for blob in self._container.list_blobs(name_starts_with=self._scanner_prefix):
                name: str = blob.name
                if name.startswith(self.prefix) or not name.endswith(f"/{META_BLOB}"):
                    continue
                folder = name[: -len(META_BLOB) - 1]
                if folder.count("/") != 1:
                    continue  # not an audit folder (trivy-{id8}/{stamp}-{id})
                try:
                    meta = AuditMeta.model_validate_json(self._container.download_blob(name).readall())
                except ValueError:
                    continue  # not a meta this version can read: left out of the index
                self.record(meta, folder)
                recorded += 1
        return recorded

    # -- reading -------------------------------------------------------------

    def find(self, audit_id: str) -> str | None:
        """The meta blob path of an audit, or ``None``; one HEAD request.

        Raises ``RequestError`` (field ``audit-id``) for an id no audit can have.
        """
        _valid_audit_id(audit_id)
        with self._storage(f"looking up audit {audit_id}"):
            pointer = self._metadata(self.ref_name(audit_id))
        if not pointer or not pointer.get("folder"):
            return None
        return f"{pointer['folder']}/{META_BLOB}"

    def read(self, name: str) -> bytes | None:
        """A blob of this scanner's folder (e.g. the path ``find`` returned), or ``None``."""
        if not name.startswith(self._scanner_prefix):
            raise ValueError(f"{name!r} is not under {self._scanner_prefix}")
        with self._storage(f"reading {name}"):
            try:
                return self._container.download_blob(name).readall()
            except ResourceNotFoundError:
                return None

    def page(self, limit: int = 50, cursor: str | None = None) -> tuple[list[AuditRow], str | None]:
        """Up to ``limit`` rows, newest first, from ``cursor`` (``None``: the
        newest); and the cursor of the next page (``None``: no more). One call."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}, got {limit}")
        marker = decode_cursor(cursor) if cursor else None
        with self._storage("listing the audit index"):
            # by_page() is typed as a plain iterator; it is a PageIterator, which carries the marker.
            pages = cast("PageIterator[BlobProperties]", self._rows(limit).by_page(continuation_token=marker))
            try:
                blobs = list(next(pages))
            except StopIteration:
                return [], None
            except HttpResponseError as error:
                if error.status_code == 400 and marker is not None:
                    raise InvalidCursor("is not a cursor of this listing (it may have expired)") from None
                raise
            next_marker = pages.continuation_token
        rows = [AuditRow.from_metadata(blob.name, blob.metadata or {}) for blob in blobs]
        return rows, encode_cursor(next_marker) if next_marker else None

    def rows(self) -> Iterator[AuditRow]:
        """Every row, newest first (pages of ``MAX_PAGE_SIZE``)."""
        with self._storage("listing the audit index"):
            for blob in self._rows(MAX_PAGE_SIZE):
                yield AuditRow.from_metadata(blob.name, blob.metadata or {})

    def totals(self) -> dict[str, int]:
        """``total`` and one count per category of ``CATEGORIES``."""
        counts = dict.fromkeys(("total", *CATEGORIES), 0)
        for row in self.rows():
            counts["total"] += 1
            if (category := row.category) is not None:
                counts[category] += 1
        return counts

    # -- plumbing ------------------------------------------------------------

    def _rows(self, results_per_page: int) -> ItemPaged[BlobProperties]:
        return self._container.list_blobs(
            name_starts_with=f"{self.prefix}by-time/", include=["metadata"], results_per_page=results_per_page
        )

    def _metadata(self, name: str) -> dict[str, str] | None:
        try:
            return dict(self._container.get_blob_client(name).get_blob_properties().metadata or {})
        except ResourceNotFoundError:
            return None

    def _delete_if_exists(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(name)

    def _storage(self, what: str) -> _StorageErrors:
        return _StorageErrors(what)

    def close(self) -> None:
        if self._owns_client:
            self._container.close()

    def __enter__(self) -> AuditIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StorageErrors:
    """Turns SDK errors into ``StorageError`` quoting only status and error code:
    SDK messages may quote the request URL, SAS token included."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, AzureError):
            if isinstance(exc, HttpResponseError) and exc.status_code is not None:
                reason = f"HTTP {exc.status_code} {getattr(exc, 'error_code', None) or ''}".strip()
            else:
                reason = type(exc).__name__
            raise StorageError(f"{self.what} failed: {reason}") from None


def encode_cursor(marker: str) -> str:
    """Opaque to clients: the service's continuation marker, base64url-wrapped."""
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + marker).encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX) or len(text) == len(_CURSOR_PREFIX):
        raise InvalidCursor("is not a cursor handed out by this API; use the 'next-cursor' of the previous page")
    return text[len(_CURSOR_PREFIX) :]


def _valid_audit_id(audit_id: str) -> str:
    # Imported here: the core imports this module to record audits.
    from .core import validate_audit_id

    return validate_audit_id(audit_id)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _ascii(value: str) -> str:
    return value if value.isascii() and value.isprintable() else quote(value, safe="")


def _audit_id_from_row_name(name: str) -> str:
    return name.rsplit("/", 1)[-1].removesuffix(_ROW_SUFFIX).split("-", 1)[-1]
