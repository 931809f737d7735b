"""The core's shipping steps that run side by side (issue 11).

* The report is uploaded in parallel blocks and summarised from the very bytes
  the upload reads (``AzureBlobStore.upload_file_observed``): one read of the
  file serves both, and the parsing overlaps the block uploads. A store
  without that method (a test double) uploads first, then the file is read.
* The audit index's pointer is looked up (one HEAD) while trivy runs, on the
  process's storage pool, instead of after the meta.

The order readers rely on is unchanged: the report, then ``meta``, then the
index entries (the row and the pointer, written side by side).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import FailureKind
from .models import AuditMeta, AuditResult
from .monitor import LookBack
from .storage import AuditIndex, BlobStore, io_pool
from .telemetry import traced
from .trivy import ReportSummariser, ReportSummary, ServerInfo, summarise_report

PointerLookup = Optional["Future[dict[str, str] | None]"]


BACKGROUND_PARSE_BYTES = 4 * 1024 * 1024  # above this, the summary is parsed on a thread of its own
_QUEUED_CHUNKS = 1  # a chunk read but not parsed yet: at most 4 MiB


@traced("upload")
def upload_report(store: BlobStore, name: str, path: Path, content_type: str, summariser: ReportSummariser) -> None:
    """Uploads the report, feeding ``summariser`` with its bytes when the store can.

    For a big report the parsing runs on a thread of its own, so that the thread
    that reads the file hands each block to the uploaders at once instead of after
    parsing it; a small one (a single PUT) is parsed in line."""
    observed = getattr(store, "upload_file_observed", None)
    if observed is None:
        store.upload_file(name, path, content_type)
        return
    if path.stat().st_size <= BACKGROUND_PARSE_BYTES:
        observed(name, path, content_type, summariser.feed)
        return
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)

    def parse() -> None:
        while (chunk := chunks.get()) is not None:
            summariser.feed(chunk)

    parser = threading.Thread(target=parse, name="report-summary", daemon=True)
    parser.start()
    try:
        observed(name, path, content_type, chunks.put)
    finally:
        chunks.put(None)
        parser.join()


def finish_summary(summariser: ReportSummariser, path: Path) -> tuple[ReportSummary, bool]:
    """The summary, and whether the summariser saw the whole report; it is read from
    the file only when the upload did not see all of it (it failed half-way, or the
    store could not show its bytes)."""
    if summariser.error is None and summariser.bytes_fed == path.stat().st_size:
        return summariser.close(), True
    if summariser.error is not None:
        summariser.close()  # raises the parse error: the report is not JSON
    return summarise_report(path), False


@dataclass(frozen=True)
class Ahead:
    """What a scan asks while trivy runs: the index pointer, the trivy server's DB age
    (client/server mode) and the previous audit of the image (the monitor's changes)."""

    pointer: Future[dict[str, str] | None] | None
    server: Future[ServerInfo] | None
    looked_back: Future[LookBack] | None


def upload_failed_fields(failure: Exception) -> dict[str, object]:
    """What a meta says when the scan succeeded but its report could not be stored."""
    return {
        "audit_result": AuditResult.UPLOAD_FAILED,
        "failure_description": f"the scan succeeded but its report could not be stored: {failure}",
        "failure_reason": "upload-failed",
        "failure_kind": FailureKind.TRANSIENT.value,
        "trivy_audit_path": None,
    }


def lookup_ahead(index: AuditIndex | None, audit_id: str) -> Future[dict[str, str] | None] | None:
    return io_pool().submit(index.lookup, audit_id) if index is not None else None


@traced("index")
def record_in_index(
    index: AuditIndex, meta: AuditMeta, folder: str, pointer: Future[dict[str, str] | None] | None
) -> None:
    """Records the audit, with the pointer looked up ahead when that lookup worked."""
    if pointer is not None:
        try:
            looked_up = pointer.result()
        except Exception:  # noqa: BLE001 - the lookup failed: record() asks again
            pointer = None
        else:
            index.record(meta, folder, known_pointer=looked_up)
            return
    index.record(meta, folder)
