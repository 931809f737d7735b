"""Scanning images with Java archives: trivy needs its Java DB for them.

Every scan passes ``--skip-java-db-update``, so no scan downloads a DB; trivy
opens the Java DB only when the image holds Java archives. When it is missing,
it is fetched once per instance (``VulnerabilityDatabase.ensure``: under the
refresh lock, re-checked after the lock is taken) and the image scanned again.
The first attempt fails early, at the end of layer analysis, so this costs one
analysis instead of making every cold instance fetch ~500 MiB before any scan.
With updates disabled, the audit fails with ``java-db-missing``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FailureKind, ScanFailed
from ..log import ScanLogger
from ..registry import Credentials, current_guard
from ..trivy import (
    JAVA_DB,
    VULNERABILITY_DB,
    ScanTarget,
    Trivy,
    TrivyOptions,
    TrivyRun,
    VulnerabilityDatabase,
)

ScanArguments = tuple[ScanTarget, TrivyOptions, Path, Credentials | None]


def scan_with_java_db(
    trivy: Trivy, java: VulnerabilityDatabase, scan: ScanArguments, log: ScanLogger, *, refresh_first: bool = False
) -> TrivyRun:
    """``trivy.scan(*scan)``, fetching the Java DB and scanning once more when trivy lacks it."""
    if refresh_first and java.usable():  # the one-time runner, which has no refresh timer beside it
        try:
            java.refresh()
        except ScanFailed as failure:
            log.warning("Java DB refresh failed; scanning with the Java DB in place", fields={"error": str(failure)})
    had_java_db = java.usable()
    if scan[0].image is not None:  # trivy resolves the name itself: checked once more right before it starts
        current_guard().check_image(scan[0].image)
    try:
        return trivy.scan(*scan)
    except ScanFailed as failure:
        if failure.reason != "java-db-missing":
            raise
        # A Java DB that was there before the scan and still fails is broken: fetching is not the cure.
        # One that was missing may have just been fetched by a concurrent scan: ensure() then finds it.
        if not java.updates_allowed or had_java_db:
            raise java_db_missing(java) from None
    log.info("the image has Java archives and there is no Java DB yet: fetching it once, then scanning again")
    java.ensure()  # a transient db-unavailable when the download fails
    return trivy.scan(*scan)


def java_db_missing(java: VulnerabilityDatabase) -> ScanFailed:
    state = "is unusable" if java.usable() else "is missing"
    return ScanFailed(
        f"the image has Java archives and the Java DB in {java.db_dir} {state}, with updates disabled "
        f"({JAVA_DB.skip_setting}, or {VULNERABILITY_DB.skip_setting} when it is unset). Put trivy-java.db and "
        f"metadata.json in that directory (from 'trivy image --download-java-db-only --cache-dir <dir>' on a "
        f"connected machine, or 'oras pull ghcr.io/aquasecurity/trivy-java-db:1'), or allow updates from a "
        f"reachable mirror ({JAVA_DB.repository_setting})",
        kind=FailureKind.PERMANENT,
        reason="java-db-missing",
    )
