"""Blob names: the contract with the readers of the results."""

from __future__ import annotations

from datetime import datetime, timezone

REPORT_BLOB = "scan-result.json"
META_BLOB = "meta"
SBOM_BLOB = "sbom.cdx.json"


def scanner_folder(scanner_short_id: str) -> str:
    return f"trivy-{scanner_short_id}"


def heartbeat_blob(scanner_short_id: str) -> str:
    return f"{scanner_folder(scanner_short_id)}/trivy-{scanner_short_id}.meta"


def audit_folder(scanner_short_id: str, requested_at: datetime, audit_id: str) -> str:
    """``trivy-{id8}/{YYYYMMDD-HHMMSS}-{audit-id}``, the time being the request's (UTC),
    so a redelivered request writes the same folder."""
    stamp = requested_at.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{scanner_folder(scanner_short_id)}/{stamp}-{audit_id}"
