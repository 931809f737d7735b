"""A scan request, and what became of it (the core's input and output)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import FailureKind, ScannerError
from .models import AuditMeta, AuditResult
from .storage import META_BLOB
from .trivy import ReportSummary


@dataclass(frozen=True)
class ScanRequest:
    """One request: an image reference, a local tarball, or both."""

    audit_id: str
    requested_at: datetime
    image: str | None = None
    input_tar: Path | None = None
    image_field: str = "image"  # how errors name the reference: the message's field, or the CLI's
    platform: str | None = None  # os/arch[/variant]; else TRIVY_PLATFORM
    platform_field: str = "platform"
    # The monitor loop's label and origin: the tag a digest was found under (the meta's
    # ``image`` then reads ``repo:tag@digest``), and what asked for the scan.
    tag: str | None = None
    trigger: str | None = None
    requested_by: str | None = None  # the App Service principal that asked (POST /api/scans)


@dataclass(frozen=True)
class AuditOutcome:
    """What became of a request.

    ``failure`` is set when the scan did not succeed; ``meta_written`` is false
    only for a transient failure on a non-final attempt (the request is to be
    retried and readers learn nothing yet).
    """

    meta: AuditMeta
    folder: str
    meta_written: bool
    failure: ScannerError | None = None
    summary: ReportSummary | None = None

    @property
    def succeeded(self) -> bool:
        return self.meta.audit_result is AuditResult.SUCCEEDED

    @property
    def retry_may_help(self) -> bool:
        return self.failure is not None and getattr(self.failure, "kind", None) is FailureKind.TRANSIENT

    @property
    def meta_path(self) -> str:
        return f"{self.folder}/{META_BLOB}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)
