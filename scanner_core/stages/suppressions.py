"""The suppression files trivy is given (``TRIVY_IGNOREFILE``, ``TRIVY_VEX``),
recorded by name and SHA-256 so a reader can later tell why a finding was not
counted. The settings check at start-up that each file is readable; a file
that has become unreadable since is a permanent failure naming its setting."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..config import Settings
from ..errors import FailureKind, ScanFailed
from ..models import OsInfo, SuppressionFile
from ..trivy import ReportSummary

_CHUNK = 1024 * 1024


def suppression_files(settings: Settings) -> list[SuppressionFile]:
    configured: list[tuple[str, Path]] = []
    if settings.trivy_ignorefile is not None:
        configured.append(("TRIVY_IGNOREFILE", settings.trivy_ignorefile))
    configured += [("TRIVY_VEX", path) for path in settings.trivy_vex]
    return [SuppressionFile(setting=setting, file=str(path), sha256=_sha256(setting, path))
            for setting, path in configured]


def _sha256(setting: str, path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise ScanFailed(
            f"{setting}: {path} cannot be read: {error.strerror or error}",
            kind=FailureKind.PERMANENT, reason="invalid-suppression-file",
        ) from None
    return digest.hexdigest()


def suppression_fields(settings: Settings, summary: ReportSummary) -> dict[str, object]:
    """Meta fields: counts are made after suppression (trivy leaves suppressed findings out of
    ``Vulnerabilities``); what was suppressed, and the files that did it, are recorded beside them."""
    files = suppression_files(settings)
    if not files:
        return {}
    counts = {severity.lower(): count for severity, count in summary.suppressed.items()}
    return {"suppressed": {**counts, "total": sum(counts.values())}, "suppressions": files}


def os_info(summary: ReportSummary) -> OsInfo | None:
    """Meta ``os``: the image's OS as trivy detected it, and whether it is past its end of life."""
    if summary.os_family is None and summary.os_name is None:
        return None
    return OsInfo(family=summary.os_family, name=summary.os_name, eosl=bool(summary.os_eosl))
