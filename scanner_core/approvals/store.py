"""Approval requests in Blob Storage, beside the audits (no other service):

``trivy-{id8}/approvals/requests/{id}.json``
    The request as it is now. Its ETag is its version: every change is written
    with ``If-Match`` (a stale writer gets ``StaleVersion`` and changes nothing),
    and the first is created with ``If-None-Match: *`` (of two concurrent first
    audits of one image, one creates the request, the other finds it).
``trivy-{id8}/approvals/history/{id}.jsonl``
    An Append Blob, one JSON line per change (``HistoryEntry``): appended, never
    rewritten. Lines are written with ``json_line`` (every line-breaking character
    escaped) and read with ``read_json_lines`` (split on ``\\n`` only; models.py),
    so no reason can cut a line, and a line the old code wrote reads as written.
``trivy-{id8}/approvals/index/{scope}/{9999999999 - created:010d}-{id}.row``
    Empty blobs whose names list requests newest first and whose metadata is the
    list's row, one per query the API answers with one listing call: ``all``,
    ``state/{state}``, ``repo/{sha256(repository)[:32]}/all`` and
    ``repo/{hash}/{state}``. A change moves the state rows after the document is
    written: a crash in between leaves the lists behind until the next change
    (the document, read by ``GET /api/approvals/{id}``, is the truth).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.core.paging import PageIterator
from azure.storage.blob import BlobProperties, ContainerClient, ContentSettings
from pydantic import ValidationError

from ..errors import ScannerError, StorageError
from ..io_pool import io_pool
from ..models import DamagedJsonLines, json_line, read_json_lines
from ..storage import (
    FleetState,
    InvalidCursor,
    StorageErrors,
    decode_cursor,
    encode_cursor,
    shared_container_client,
)
from .models import ApprovalRequest, HistoryEntry

INVERT_FROM = 9_999_999_999
_log = logging.getLogger("scanner_core.approvals")
JSON = ContentSettings(content_type="application/json")


class StaleVersion(ScannerError):
    """The request changed since the version the caller saw (HTTP 412 from the service)."""


class DamagedHistory(StorageError):
    """A history line that is not an entry even after repair: written outside the app."""


class ApprovalStore:
    """The approvals of one scanner; every call asks Blob Storage. ``StorageError`` when it fails."""

    def __init__(self, container: ContainerClient | str, scanner_short_id: str, *,
                 fleet_state: Callable[[], FleetState] | None = None) -> None:
        if isinstance(container, str):
            container = shared_container_client(container, retry_total=3, connection_timeout=10, read_timeout=60)
        self._container = container
        self._fleet_state = fleet_state  # issue 24: every saved request updates its digest's state
        self.prefix = f"trivy-{scanner_short_id}/approvals/"

    # -- names -----------------------------------------------------------------

    def request_name(self, approval_id: str) -> str:
        return f"{self.prefix}requests/{approval_id}.json"

    def history_name(self, approval_id: str) -> str:
        return f"{self.prefix}history/{approval_id}.jsonl"

    def scope(self, state: str | None = None, repository: str | None = None) -> str:
        base = f"repo/{hashlib.sha256(repository.encode('utf-8')).hexdigest()[:32]}/" if repository else ""
        return f"{self.prefix}index/{base}{state or 'all'}/" if repository else f"{self.prefix}index/" + (
            f"state/{state}/" if state else "all/")

    def _row_names(self, request: ApprovalRequest, state: str) -> list[str]:
        leaf = f"{INVERT_FROM - _unix(request.created_at):010d}-{request.id}.row"
        return [self.scope(s, r) + leaf for s in (None, state) for r in (None, request.repository)]

    # -- reading -----------------------------------------------------------------

    def get(self, approval_id: str) -> tuple[ApprovalRequest, str] | None:
        """The request and its version (ETag), or ``None``."""
        with self._errors(f"reading approval {approval_id}"):
            try:
                download = self._container.download_blob(self.request_name(approval_id))
            except ResourceNotFoundError:
                return None
            data = download.readall()
            etag = download.properties.etag
        return ApprovalRequest.model_validate_json(data), etag

    def history(self, approval_id: str) -> list[HistoryEntry]:
        with self._errors(f"reading the history of approval {approval_id}"):
            try:
                data = self._container.download_blob(self.history_name(approval_id)).readall()
            except ResourceNotFoundError:
                return []
        try:
            return [HistoryEntry.model_validate(value) for value in read_json_lines(data)]
        except (DamagedJsonLines, ValidationError) as error:
            problem = str(error) if isinstance(error, DamagedJsonLines) else "a line is JSON but not a history entry"
            raise DamagedHistory(f"the history of approval {approval_id} cannot be read: {problem}") from None

    def page(
        self, limit: int, cursor: str | None = None, *, state: str | None = None, repository: str | None = None
    ) -> tuple[list[dict[str, str]], str | None]:
        """Up to ``limit`` index rows (metadata), newest request first; and the next page's cursor."""
        marker = decode_cursor(cursor) if cursor else None
        with self._errors("listing approval requests"):
            listing = self._container.list_blobs(
                name_starts_with=self.scope(state, repository), include=["metadata"], results_per_page=limit
            )
            pages = cast("PageIterator[BlobProperties]", listing.by_page(continuation_token=marker))
            try:
                blobs = list(next(pages))
            except StopIteration:
                return [], None
            except Exception as error:  # an unknown marker: the service answers 400
                if marker is not None and getattr(error, "status_code", None) == 400:
                    raise InvalidCursor("is not a cursor of this listing (it may have expired)") from None
                raise
            next_marker = pages.continuation_token
        return [dict(blob.metadata or {}) for blob in blobs], encode_cursor(next_marker) if next_marker else None

    def rows(self, state: str | None = None) -> Iterator[dict[str, str]]:
        """Every index row (of one state), newest first."""
        with self._errors("listing approval requests"):
            for blob in self._container.list_blobs(name_starts_with=self.scope(state), include=["metadata"]):
                yield dict(blob.metadata or {})

    # -- writing -----------------------------------------------------------------

    def create(self, request: ApprovalRequest, entry: HistoryEntry) -> str | None:
        """Creates the request (``If-None-Match: *``), its history and its rows; its
        version, or ``None`` when it exists already (nothing written)."""
        with self._errors(f"creating approval {request.id}"):
            try:
                answer = self._container.get_blob_client(self.request_name(request.id)).upload_blob(
                    request.to_json_bytes(), overwrite=False, content_settings=JSON
                )
            except ResourceExistsError:
                return None
            history = self._container.get_blob_client(self.history_name(request.id))
            with contextlib.suppress(ResourceExistsError):
                history.create_append_blob(match_condition=MatchConditions.IfMissing)
            history.append_block(json_line(entry.to_json_bytes()))
            self._move_rows(request, self._row_names(request, request.state), [])
        self._saved(request)
        return str(answer["etag"])

    def replace(self, request: ApprovalRequest, etag: str, entry: HistoryEntry | None, previous_state: str) -> str:
        """Writes ``request`` if its version is still ``etag`` (else ``StaleVersion``),
        appends ``entry`` to its history and moves its index rows; the new version."""
        with self._errors(f"updating approval {request.id}"):
            try:
                answer = self._container.get_blob_client(self.request_name(request.id)).upload_blob(
                    request.to_json_bytes(), overwrite=True, content_settings=JSON,
                    etag=etag, match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                raise StaleVersion(f"approval {request.id} changed since version {etag}") from None
            if entry is not None:
                self._append(request.id, entry)
            new_rows = self._row_names(request, request.state)
            self._move_rows(request, new_rows, sorted(set(self._row_names(request, previous_state)) - set(new_rows)))
        self._saved(request)
        return str(answer["etag"])

    def _saved(self, request: ApprovalRequest) -> None:
        """Every transition, whatever its state, copied to the digest's fleet state (its state,
        its ``deadline`` when the request has one, when and by whom it last changed: the daily
        digest). A failure is logged: the request is the truth, and ``reindex`` copies it again."""
        if self._fleet_state is None:
            return
        try:
            deadline = request.at_risk.deadline if request.at_risk else None  # issue 25: an at-risk request's
            self._fleet_state().approval_changed(
                request.repository, request.digest, request.id, request.state,
                str(deadline) if deadline is not None else None,
                _unix(request.decided_at) if request.decided_at else None, _row(request)["decidedby"])
        except Exception as error:  # noqa: BLE001 - the approval is saved; the state catches up on reindex
            _log.warning("fleet state not updated for approval %s: %s", request.id, type(error).__name__)

    def _move_rows(self, request: ApprovalRequest, writes: list[str], deletes: list[str]) -> None:
        """Independent requests, side by side on the process's storage pool."""
        metadata = _row(request)

        def delete(name: str) -> None:
            with contextlib.suppress(ResourceNotFoundError):
                self._container.delete_blob(name)

        pending = [io_pool().submit(self._container.upload_blob, name, b"", overwrite=True, metadata=metadata)
                   for name in writes] + [io_pool().submit(delete, name) for name in deletes]
        for write in pending:
            write.result()

    def _append(self, approval_id: str, entry: HistoryEntry) -> None:
        history = self._container.get_blob_client(self.history_name(approval_id))
        line = json_line(entry.to_json_bytes())
        try:
            history.append_block(line)
        except ResourceNotFoundError:  # a request created before its history was: start it now
            with contextlib.suppress(ResourceExistsError):
                history.create_append_blob(match_condition=MatchConditions.IfMissing)
            history.append_block(line)

    def _errors(self, what: str) -> StorageErrors:
        return StorageErrors(what, self._container.url)


def _unix(iso: str) -> int:
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())


def _row(request: ApprovalRequest) -> dict[str, str]:
    """The list's row: ASCII metadata (repositories, tags and digests are ASCII by their grammar)."""
    counts = request.security_scan.get("vulnerabilities") or {}
    values = {
        "id": request.id, "state": request.state, "repository": request.repository, "tag": request.tag,
        "digest": request.digest, "created": request.created_at, "updated": request.updated_at,
        "decided": request.decided_at, "deadline": request.at_risk.deadline if request.at_risk else None,
        "decidedby": request.decided_by.encode("ascii", "backslashreplace").decode()[:256],
        "auditid": request.latest_audit_id, "scanstatus": request.security_scan.get("status"),
        "counts": json.dumps({k: counts.get(k, 0) for k in ("critical", "high", "medium", "low", "unknown", "total")},
                             separators=(",", ":")),
    }
    return {key: str(value) for key, value in values.items() if value is not None}
