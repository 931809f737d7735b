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
``trivy-{id8}/index/by-repo/{sha256(repository)[:32]}/{inverted time}-{audit-id}.row``
    The same row again, listed per repository (issue 10: history, verdict,
    the previous audit of an image), so a repository's page is one listing
    call too. The key is a hash because a repository name may be a prefix of
    another's (``team/app`` and ``team/app/api``); the row names it in full.
    Audits whose image is not a reference (a tarball label) have none.
``trivy-{id8}/index/by-id/{audit-id}.ref``
    The pointer for ``GET /audits/{id}``: its metadata names the audit folder
    and its ``.row``, so a lookup is one HEAD.

Why request time and not scan time: it names the audit folder, so it is the
same on every redelivery of a request; a redelivered scan therefore overwrites
the same ``.row`` (replaces, never duplicates). ``scanned-at`` (the meta's
``timestamp``) is carried in the row. When an audit id is re-used by a *newer*
request of the same image, its old row is deleted and the pointer moves to the
newer folder; re-used for *another* image (which the HTTP API refuses with 409), the
pointer moves but the earlier audit keeps its rows (history and the summary still list
it). A record for an *older* request than the one indexed is ignored (latest request
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

import contextlib
import hashlib
from collections.abc import Iterator
from types import EllipsisType
from urllib.parse import unquote
from typing import cast

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.paging import ItemPaged, PageIterator
from azure.storage.blob import BlobProperties, ContainerClient

from ..models import AuditMeta
from .index_rows import (
    CATEGORIES,
    INDEX_FORMAT,
    INVERT_FROM,
    MAX_PAGE_SIZE,
    REF_SUFFIX,
    ROW_SUFFIX,
    AuditRow,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    encode_image,
    int_or_none,
    same_image,
)
from ..io_pool import io_pool
from .clients import shared_container_client
from .container import StorageErrors
from .layout import META_BLOB, scanner_folder, validate_audit_id

_READ_CHUNK_BYTES = 1024 * 1024


class AuditIndex:
    """The index of one scanner's audits in the results container.

    Not a cache: every call asks Blob Storage, so several function instances
    can share it. ``StorageError`` (transient) when the service fails.
    """

    def __init__(self, container: ContainerClient | str, scanner_short_id: str) -> None:
        # A client handed in is the caller's to close; one built from a URL is the process's (clients.py).
        self._owns_client = False
        self._url = container.url if isinstance(container, ContainerClient) else container
        if isinstance(container, str):
            container = shared_container_client(
                container, retry_total=3, connection_timeout=10, read_timeout=60,
                # read_chunks() streams reports of tens of MB: 1 MiB per GET, not the first 32 MiB at once.
                max_single_get_size=_READ_CHUNK_BYTES, max_chunk_get_size=_READ_CHUNK_BYTES,
            )  # fmt: skip
        self._container = container
        self.prefix = f"{scanner_folder(scanner_short_id)}/index/"
        self._scanner_prefix = f"{scanner_folder(scanner_short_id)}/"

    # -- names ---------------------------------------------------------------

    def row_name(self, audit_id: str, requested_at: int) -> str:
        if not 0 <= requested_at <= INVERT_FROM:
            raise ValueError(f"requested-at {requested_at} is outside 0..{INVERT_FROM}")
        return f"{self.prefix}by-time/{INVERT_FROM - requested_at:010d}-{audit_id}{ROW_SUFFIX}"

    def ref_name(self, audit_id: str) -> str:
        return f"{self.prefix}by-id/{audit_id}{REF_SUFFIX}"

    def repository_prefix(self, repository: str) -> str:
        return f"{self.prefix}by-repo/{hashlib.sha256(repository.encode('utf-8')).hexdigest()[:32]}/"

    def repository_row_name(self, repository: str, audit_id: str, requested_at: int) -> str:
        return self.repository_prefix(repository) + self.row_name(audit_id, requested_at).rsplit("/", 1)[1]

    # -- writing -------------------------------------------------------------

    def lookup(self, audit_id: str) -> dict[str, str] | None:
        """The pointer of ``audit_id`` as it is now (``None``: not indexed), for ``record``.
        Read ahead of time, this HEAD runs beside the report upload instead of after the meta."""
        validate_audit_id(audit_id, recorded=True)
        with self._storage(f"looking up audit {audit_id} in the index"):
            return self._metadata(self.ref_name(audit_id))

    def record(
        self, meta: AuditMeta, folder: str, *, known_pointer: dict[str, str] | None | EllipsisType = ...
    ) -> None:
        """Indexes an audit whose ``meta`` has just been written to ``folder``.

        Idempotent: recording the same audit again replaces its row. An older
        request than the one indexed for this audit id is ignored. ``known_pointer``:
        what ``lookup`` answered, if the caller asked beforehand. The rows and the
        pointer are independent writes and go out side by side.
        """
        audit_id = validate_audit_id(meta.audit_id, recorded=True)
        if not folder.startswith(self._scanner_prefix) or "/" in folder[len(self._scanner_prefix) :]:
            raise ValueError(f"{folder!r} is not an audit folder of this scanner ({self._scanner_prefix}...)")
        row = AuditRow.from_meta(meta, folder)
        row_name = self.row_name(audit_id, row.requested_at)
        ref_name = self.ref_name(audit_id)
        with self._storage(f"recording audit {audit_id} in the index"):
            previous = self._metadata(ref_name) if known_pointer is ... else known_pointer
            previous_row = previous.get("row") if previous else None
            if previous and (int_or_none(previous.get("requested")) or 0) > row.requested_at:
                return  # a newer request of this audit id is already indexed
            pointer = {"v": INDEX_FORMAT, "folder": folder, "row": row_name, "requested": str(row.requested_at)}
            if row.image is not None:
                pointer["image"] = encode_image(row.image)
            writes = [(row_name, row.to_metadata())]
            if row.repository:
                pointer["reporow"] = self.repository_row_name(row.repository, audit_id, row.requested_at)
                writes.append((pointer["reporow"], row.to_metadata()))
            writes.append((ref_name, pointer))
            # Independent writes: side by side on the process's storage pool (the last one here).
            pending = [
                io_pool().submit(self._container.upload_blob, name, b"", overwrite=True, metadata=metadata)
                for name, metadata in writes[:-1]
            ]
            try:
                self._container.upload_blob(writes[-1][0], b"", overwrite=True, metadata=writes[-1][1])
            finally:
                for write in pending:
                    write.result()
            if previous and not self._same_image(previous, pointer.get("image")):
                return  # the id re-used for another image (issue 23): that audit keeps its rows
            for superseded in {previous_row, (previous or {}).get("reporow")} - {row_name, pointer.get("reporow")}:
                if superseded and superseded.startswith(self.prefix):
                    self._delete_if_exists(superseded)

    def forget(self, audit_id: str) -> None:
        """Removes an audit from the index (its row, then its pointer); no-op if absent."""
        validate_audit_id(audit_id, recorded=True)
        ref_name = self.ref_name(audit_id)
        with self._storage(f"removing audit {audit_id} from the index"):
            pointer = self._metadata(ref_name)
            for key in ("row", "reporow"):
                if pointer and (row := pointer.get(key, "")).startswith(self.prefix):
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
        validate_audit_id(audit_id, recorded=True)
        with self._storage(f"looking up audit {audit_id}"):
            pointer = self._metadata(self.ref_name(audit_id))
        if not pointer or not pointer.get("folder"):
            return None
        return f"{pointer['folder']}/{META_BLOB}"

    def read_chunks(self, name: str) -> Iterator[bytes] | None:
        """A blob of this scanner's folder as it streams in (a big report is never held
        whole), or ``None`` when there is none. Errors while streaming are ``StorageError``."""
        if not name.startswith(self._scanner_prefix):
            raise ValueError(f"{name!r} is not under {self._scanner_prefix}")
        with self._storage(f"reading {name}"):
            try:
                download = self._container.download_blob(name)
            except ResourceNotFoundError:
                return None

        def chunks() -> Iterator[bytes]:
            with self._storage(f"reading {name}"):
                yield from download.chunks()

        return chunks()

    def read(self, name: str) -> bytes | None:
        """A blob of this scanner's folder (e.g. the path ``find`` returned), or ``None``."""
        if not name.startswith(self._scanner_prefix):
            raise ValueError(f"{name!r} is not under {self._scanner_prefix}")
        with self._storage(f"reading {name}"):
            try:
                return self._container.download_blob(name).readall()
            except ResourceNotFoundError:
                return None

    def page(
        self, limit: int = 50, cursor: str | None = None, *, prefix: str | None = None
    ) -> tuple[list[AuditRow], str | None]:
        """Up to ``limit`` rows, newest first, from ``cursor`` (``None``: the
        newest); and the cursor of the next page (``None``: no more). One call."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}, got {limit}")
        marker = decode_cursor(cursor) if cursor else None
        with self._storage("listing the audit index"):
            # by_page() is typed as a plain iterator; it is a PageIterator, which carries the marker.
            listing = self._rows(limit, prefix)
            pages = cast("PageIterator[BlobProperties]", listing.by_page(continuation_token=marker))
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

    def repository_page(
        self, repository: str, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[AuditRow], str | None]:
        """``page`` for one repository (canonical, ``registry/path``): its audits, newest first."""
        return self.page(limit, cursor, prefix=self.repository_prefix(repository))

    def repository_rows(self, repository: str) -> Iterator[AuditRow]:
        """Every row of one repository, newest first."""
        with self._storage("listing the audit index"):
            for blob in self._rows(MAX_PAGE_SIZE, self.repository_prefix(repository)):
                yield AuditRow.from_metadata(blob.name, blob.metadata or {})

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

    def _rows(self, results_per_page: int, prefix: str | None = None) -> ItemPaged[BlobProperties]:
        return self._container.list_blobs(
            name_starts_with=prefix or f"{self.prefix}by-time/", include=["metadata"], results_per_page=results_per_page
        )

    def _same_image(self, previous: dict[str, str], image: str | None) -> bool:
        """Whether the audit a pointer names was of ``image`` (encoded); a pointer written before
        the pointer carried the image is answered by its row (one HEAD, on re-use only)."""
        if "image" in previous:
            return _same_label(previous["image"], image)
        row = self._metadata(previous["row"]) if previous.get("row", "").startswith(self.prefix) else None
        return row is None or _same_label(row.get("image"), image)

    def read_meta(self, audit_id: str) -> bytes | None:
        """The ``meta`` of ``audit_id`` (one HEAD and one GET); ``None`` when it is not indexed or
        the index outlived its folder."""
        meta_path = self.find(audit_id)
        return self.read(meta_path) if meta_path is not None else None

    def _metadata(self, name: str) -> dict[str, str] | None:
        try:
            return dict(self._container.get_blob_client(name).get_blob_properties().metadata or {})
        except ResourceNotFoundError:
            return None

    def _delete_if_exists(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.delete_blob(name)

    def _storage(self, what: str) -> StorageErrors:
        return StorageErrors(what, self._url)

    def close(self) -> None:
        if self._owns_client:
            self._container.close()

    def __enter__(self) -> AuditIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _same_label(first: str | None, second: str | None) -> bool:
    """``same_image`` of two labels as the index stores them (percent-encoded)."""
    return same_image(unquote(first) if first is not None else None, unquote(second) if second is not None else None)
