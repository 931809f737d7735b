"""One DB download per fleet: the DB snapshot in Blob Storage (``DB_SNAPSHOT=blob``).

Timer triggers run on one instance at a time, so the DB-refresh timer is the
fleet's single writer: after a refresh it publishes each DB it holds (the
vulnerability DB, and the Java DB when there is one) as a gzip'd tar of the
DB file and its ``metadata.json``, then a pointer ``metadata.json`` naming the
archive (written last: a reader who sees the pointer finds its archive).
Cold instances restore from the snapshot, through the same atomic swap as a
download (``trivy/database.py``), and go to trivy's OCI repositories only when
there is no snapshot, it is stale (``UpdatedAt`` older than
``DB_SNAPSHOT_MAX_AGE_HOURS``) or it cannot be read. Warm instances look for a
newer snapshot at most every ``DB_SNAPSHOT_CHECK_SECONDS``, so the fleet
follows the timer instead of keeping its first DB forever.

The DB kinds are trivy's (``trivy/db_kind.py``, issue 8): each is published
from and restored into its own directory and versions dir, under its own
refresh lock. The Java DB is restored when an instance first needs it (a scan
meets Java archives), as it would otherwise be downloaded then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ..config import ScannerConfig
from ..errors import ScanFailed, StorageError
from ..log import ScanLogger
from ..redact import Redactor
from ..storage import SnapshotBlobs, snapshot_prefix
from ..registry import Credentials, find_credentials, parse_image_reference, resolve_credentials
from ..telemetry import traced
from ..trivy import JAVA_DB, VULNERABILITY_DB, DatabaseKind, Trivy, VulnerabilityDatabase

SNAPSHOT_FORMAT = 1
COMPRESS_LEVEL = 1  # the timer may share a 1-vCPU instance with scans: fast beats small here
_KEEP_ARCHIVES = 2  # the current one and the one before (a reader may still be fetching it)


KINDS: tuple[DatabaseKind, ...] = (VULNERABILITY_DB, JAVA_DB)

_checks_lock = threading.Lock()
_last_checks: dict[str, float] = {}  # explicit per-process cache: cache dir -> when a warm check last ran


class DbSnapshot:
    """The snapshot of one scanner (``trivy-{id8}``), as a ``DatabaseSource``."""

    def __init__(
        self,
        blobs: SnapshotBlobs,
        scanner_short_id: str,
        logger: ScanLogger,
        *,
        max_age: timedelta = timedelta(hours=24),
        check_seconds: float = 600.0,
    ) -> None:
        self.blobs = blobs
        self.short_id = scanner_short_id
        self.logger = logger
        self.max_age = max_age
        self.check_seconds = check_seconds

    # -- publishing (the refresh timer) ----------------------------------------

    def publish(self, cache_dir: Path) -> list[str]:
        """Publishes each local DB the snapshot does not hold yet; returns the kinds published."""
        published = []
        for kind in KINDS:
            local = _metadata(cache_dir / kind.dir_name)
            if local is None or not (cache_dir / kind.dir_name / kind.db_file).is_file():
                continue
            pointer = self.blobs.read_json(self._pointer(kind))
            if pointer is not None and pointer.get("metadata", {}).get("UpdatedAt") == local.get("UpdatedAt"):
                continue
            self._publish(kind, cache_dir / kind.dir_name, local)
            published.append(kind.dir_name)
        from ..exploits import publish_feeds  # the KEV/EPSS feeds travel with the DBs (issue 15)

        published += [f"exploits/{feed}" for feed in publish_feeds(self.blobs, self.short_id, cache_dir)]
        return published

    def _publish(self, kind: DatabaseKind, directory: Path, metadata: dict[str, Any]) -> None:
        prefix = snapshot_prefix(self.short_id, kind.dir_name)
        with tempfile.TemporaryDirectory(prefix="db-snapshot-", dir=directory.resolve().parent) as work:
            archive = Path(work) / "snapshot.tar.gz"
            with tarfile.open(archive, "w:gz", compresslevel=COMPRESS_LEVEL, format=tarfile.PAX_FORMAT) as tar:
                for name in (kind.db_file, "metadata.json"):
                    tar.add(directory / name, arcname=name, recursive=False)
            digest = _sha256(archive)
            stamp = str(metadata.get("UpdatedAt", "unknown")).replace(":", "").replace("-", "")
            name = f"{prefix}{stamp}-{digest[:12]}.tar.gz"
            self.blobs.upload_file(name, archive)
            size = archive.stat().st_size
        self.blobs.write_json(
            self._pointer(kind),
            {
                "format": SNAPSHOT_FORMAT,
                "kind": kind.dir_name,
                "archive": name,
                "bytes": size,
                "sha256": digest,
                "metadata": metadata,
                "published-at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "published-by": socket.gethostname(),
            },
        )
        for old in self.blobs.names(prefix)[:-_KEEP_ARCHIVES]:
            if old.endswith(".tar.gz") and old != name:
                self.blobs.delete(old)
        self.logger.info("DB snapshot published", fields={"kind": kind.dir_name, "blob": name, "bytes": size})

    # -- restoring (cold and warm instances) -----------------------------------

    def restore(self, database: VulnerabilityDatabase) -> bool:
        """Restores ``database.kind`` when the snapshot's is newer than the one in place
        and not stale; ``True`` if it did. Failures are logged, never raised."""
        if database.kind == VULNERABILITY_DB:
            self._restore_feeds(database.cache_dir)
        try:
            return self._restore(database)
        except (StorageError, ScanFailed, OSError, tarfile.TarError, ValueError) as error:
            self.logger.warning(
                "DB snapshot not restored; the OCI repositories will be used",
                fields={"kind": database.kind.dir_name, "error": str(error)},
            )
            return False

    def _restore_feeds(self, cache_dir: Path) -> None:
        """The KEV/EPSS feeds the timer published, when newer than the ones in place."""
        from ..exploits import restore_feeds

        try:
            if restored := restore_feeds(self.blobs, self.short_id, cache_dir):
                self.logger.info("exploitability feeds restored from the snapshot", fields={"feeds": restored})
        except (StorageError, OSError, ValueError) as error:
            self.logger.warning("exploitability feeds not restored", fields={"error": str(error)})

    def due_for_check(self, database: VulnerabilityDatabase) -> bool:
        key = str(database.cache_dir)
        now = time.monotonic()
        with _checks_lock:
            last = _last_checks.get(key)
            if last is not None and now - last < self.check_seconds:
                return False
            _last_checks[key] = now
            return True

    def _restore(self, database: VulnerabilityDatabase) -> bool:
        kind, cache_dir = database.kind, database.cache_dir
        pointer = self.blobs.read_json(self._pointer(kind))
        if pointer is None or pointer.get("format") != SNAPSHOT_FORMAT:
            return False
        metadata = pointer.get("metadata") or {}
        updated_at = _instant(metadata.get("UpdatedAt"))
        if updated_at is None or datetime.now(timezone.utc) - updated_at > self.max_age:
            self.logger.info("DB snapshot is stale",
                             fields={"kind": kind.dir_name, "updated-at": metadata.get("UpdatedAt")})  # fmt: skip
            return False
        local = _instant((_metadata(cache_dir / kind.dir_name) or {}).get("UpdatedAt"))
        if local is not None and local >= updated_at:
            return False  # nothing newer

        def fill(staging: Path) -> None:
            archive = staging / "snapshot.tar.gz"
            self.blobs.download_file(str(pointer["archive"]), archive)
            if archive.stat().st_size != pointer.get("bytes") or _sha256(archive) != pointer.get("sha256"):
                raise ValueError(f"the archive {pointer['archive']} does not match its pointer (size or sha256)")
            _extract(archive, staging / kind.dir_name, kind)
            archive.unlink()

        started = time.monotonic()
        database.install(fill)
        self.logger.info(
            "DB restored from the snapshot",
            fields={"kind": kind.dir_name, "updated-at": metadata.get("UpdatedAt"),
                    "seconds": round(time.monotonic() - started, 2)},
        )  # fmt: skip
        return True

    def _pointer(self, kind: DatabaseKind) -> str:
        return f"{snapshot_prefix(self.short_id, kind.dir_name)}metadata.json"


def database_for(
    config: ScannerConfig,
    trivy: Trivy,
    kind: DatabaseKind,
    repositories: list[str],
    updates_allowed: bool,
    snapshot: DbSnapshot | None,
) -> VulnerabilityDatabase:
    """One of trivy's DBs in the cache dir, with the credentials of its mirror's registry
    and the snapshot it is restored from first."""
    settings = config.settings
    credentials: Callable[[], Credentials | None] | None = None
    insecure = False
    if repositories:
        # A private DB mirror uses the credentials configured for its registry, resolved when a
        # download needs them (an ACR token is cached per process until it expires).
        registry = find_credentials(
            parse_image_reference(repositories[0], kind.repository_setting), config.file.registries
        )

        def mirror_credentials() -> Credentials | None:
            try:
                return resolve_credentials(registry)
            except ScanFailed as failure:
                # A refused or unreachable token exchange must not stop scans with a usable DB;
                # a download without credentials then fails as unauthorized (db-unavailable).
                logging.getLogger(__name__).warning("no credentials for the DB mirror: %s", failure)
                return None

        credentials = mirror_credentials
        insecure = bool(registry and registry.insecure)
    return VulnerabilityDatabase(
        settings.trivy_cache_dir,
        trivy,
        repositories=repositories,
        updates_allowed=updates_allowed,
        timeout_ms=settings.trivy_timeout_ms,
        credentials=credentials,
        insecure=insecure,
        kind=kind,
        snapshot=snapshot,
    )


@traced("DB")
def ensure_database(database: VulnerabilityDatabase, *, refresh: bool, log: ScanLogger) -> None:
    """Before a scan: a DB in place (from the snapshot or the repositories); ``refresh``
    (the one-time runner) also refreshes a due one. A failure with a usable DB in
    place is only logged: a rate-limited DB host never fails a scan that can run."""
    try:
        if refresh:
            database.refresh()
        else:
            database.ensure()
    except ScanFailed as failure:
        if not database.usable():
            raise
        log.warning("DB refresh failed; scanning with the DB in place", fields={"error": str(failure)})


def snapshot_for(config: ScannerConfig, redactor: Redactor, logger: ScanLogger) -> DbSnapshot | None:
    """The scanner's snapshot as the settings describe it (``None``: ``DB_SNAPSHOT=none``)."""
    settings = config.settings
    if settings.db_snapshot != "blob":
        return None
    return DbSnapshot(
        SnapshotBlobs(settings.blob_container_url, redactor),
        settings.scanner_short_id,
        logger,
        max_age=timedelta(hours=settings.db_snapshot_max_age_hours),
        check_seconds=settings.db_snapshot_check_seconds,
    )


def _extract(archive: Path, target: Path, kind: DatabaseKind) -> None:
    """Only the two expected regular files, whatever else the archive holds."""
    target.mkdir(parents=True)
    wanted = {kind.db_file, "metadata.json"}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                with source, (target / member.name).open("wb") as out:
                    shutil.copyfileobj(source, out, 4 * 1024 * 1024)
                wanted.discard(member.name)
    if wanted:
        raise ValueError(f"the archive lacks {sorted(wanted)}")


def _metadata(directory: Path) -> dict[str, Any] | None:
    try:
        document = json.loads((directory / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def forget_checks() -> None:
    """Empties the warm-check timestamps (tests)."""
    with _checks_lock:
        _last_checks.clear()


__all__ = ["DbSnapshot", "KINDS", "database_for", "ensure_database", "forget_checks", "snapshot_for"]
