"""The dedup key: what makes two scans of one image give the same audit.

Two requests get the same answer from trivy and the same verdict from the
core when they scan the same manifest (repository and digest, and platform)
with the same trivy, the same DB (``UpdatedAt``), the same settings and the
same suppression files. ``scan_fingerprint`` hashes exactly that, so an audit
can be answered from an earlier one whose fingerprint is equal (``reuse.py``).

Extending it: every setting of ``config.Settings`` is in the key unless it is
listed in ``OPERATIONAL_SETTINGS`` (it cannot change a report or a verdict);
so a new setting is in the key by default, and the worst a forgotten entry
costs is a missed reuse, never a wrong one. Settings that name files whose
*content* matters (suppressions) are listed in ``CONTENT_SETTINGS``: their
files' SHA-256 go in the key. Secret values never go in (not even hashed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ..config import ScannerConfig

FINGERPRINT_VERSION = "2"  # 2: index audits record their manifests (issue 23); older ones are not reused

# Settings that cannot change what trivy reports or what the core decides.
OPERATIONAL_SETTINGS = frozenset(
    {
        "trivy_config_path",
        "blob_storage_service_type",
        "messaging_service_type",
        "scanner_identifier",
        "log_format",
        "az_blob_storage_sas",
        "trivy_path",  # the binary's version is in the key instead
        "trivy_timeout_ms",
        "trivy_cache_dir",
        "trivy_skip_db_update",  # the DB's UpdatedAt is in the key instead
        "trivy_db_repository",
        "trivy_java_db_repository",
        "watch_max_new_tags",
        "watch_max_pages",
        "watch_max_tags",
        "watch_run_seconds",
        "rescan_max_age_hours",
        "rescan_window_days",
        "rescan_batch_size",  # how rescans are grouped into messages and run, not what they find
        "rescan_batch_seconds",
        "rescan_server",
        "scan_dedup",
        "scan_scratch_dir",
        "notify_webhook_urls",
        "notify_webhook_secret",
        "allowed_registries",
        "egress_guard",
        "notify_min_severity",
        "notify_attempts",
        "notify_timeout_s",
        "approver_roles",  # who may decide an approval, not what a scan finds
        "policy_path",  # the policy is evaluated anew for an audit answered by dedup (gate.py)
    }
)
# Settings naming files (one path, or a list of paths) whose content is in the key.
CONTENT_SETTINGS = ("trivy_ignorefile", "trivy_vex")


@dataclass(frozen=True)
class ScanIdentity:
    """The image and the tools of one scan, as far as they make its result."""

    repository: str  # canonical: registry/path
    digest: str
    trivy_version: str | None
    db_updated_at: str | None
    platform: str | None = None
    scanner_version: str | None = None
    extra: Mapping[str, str | None] | None = None  # e.g. the Java DB's UpdatedAt


def fingerprint_document(config: ScannerConfig, identity: ScanIdentity) -> dict[str, Any]:
    """What the key hashes, readable (for tests and troubleshooting)."""
    settings = config.settings
    chosen = {
        name: _plain(getattr(settings, name))
        for name in sorted(type(settings).model_fields)
        if name not in OPERATIONAL_SETTINGS and name not in CONTENT_SETTINGS
        and not isinstance(getattr(settings, name), SecretStr)
    }
    return {
        "v": FINGERPRINT_VERSION,
        "repository": identity.repository,
        "digest": identity.digest,
        "platform": identity.platform,
        "trivy-version": identity.trivy_version,
        "db-updated-at": identity.db_updated_at,
        "scanner-version": identity.scanner_version,
        "extra": dict(sorted((identity.extra or {}).items())),
        "settings": chosen,
        "files": {name: _file_hashes(getattr(settings, name, None)) for name in CONTENT_SETTINGS},
    }


def scan_fingerprint(config: ScannerConfig, identity: ScanIdentity) -> str:
    """The dedup key: SHA-256 (hex) of the canonical JSON of ``fingerprint_document``.

    Raises ``OSError`` when a suppression file cannot be read (no key: scan).
    """
    document = json.dumps(fingerprint_document(config, identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return str(value)


def _file_hashes(value: Any) -> list[list[str]] | None:
    """``[[name, sha256], ...]`` for a path or a list of paths; ``None`` when unset."""
    if value is None or value == [] or value == "":
        return None
    paths: Iterable[Any] = value if isinstance(value, (list, tuple)) else [value]
    hashes = []
    for path in paths:
        digest = hashlib.sha256(Path(str(path)).read_bytes()).hexdigest()
        hashes.append([Path(str(path)).name, digest])
    return hashes
