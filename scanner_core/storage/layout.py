"""Blob names: the contract with the readers of the results."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ..errors import RequestError

REPORT_BLOB = "scan-result.json"
META_BLOB = "meta"
SBOM_BLOB = "sbom.cdx.json"
NOTIFICATION_BLOB = "notification.json"  # the claim of an audit's webhook notification
# Not ending in "." either: Azure may drop a trailing dot of a path segment, so that "a." and "a"
# would share a folder.
_AUDIT_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_-])?")
_RECORDED_AUDIT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # what ids were before issue 23


def scanner_folder(scanner_short_id: str) -> str:
    return f"trivy-{scanner_short_id}"


def heartbeat_blob(scanner_short_id: str) -> str:
    return f"{scanner_folder(scanner_short_id)}/trivy-{scanner_short_id}.meta"


def audit_folder(scanner_short_id: str, requested_at: datetime, audit_id: str) -> str:
    """``trivy-{id8}/{YYYYMMDD-HHMMSS}-{audit-id}``, the time being the request's (UTC),
    so a redelivered request writes the same folder."""
    stamp = requested_at.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{scanner_folder(scanner_short_id)}/{stamp}-{audit_id}"


def validate_audit_id(audit_id: str, field: str = "audit-id", *, recorded: bool = False) -> str:
    """An audit id names a blob folder: 1-128 characters of ``[A-Za-z0-9._-]``."""
    pattern = _RECORDED_AUDIT_ID if recorded else _AUDIT_ID  # an audit recorded before the rule still reads
    if not isinstance(audit_id, str) or not pattern.fullmatch(audit_id):
        raise RequestError(
            field,
            f"{audit_id!r} is not a valid audit id: 1-128 characters of [A-Za-z0-9._-], starting with a letter or "
            "digit and not ending with '.'",
        )
    return audit_id
