"""trivy's DBs in the shared cache dir, refreshed apart from scans.

Two kinds (``DatabaseKind``): the vulnerability DB (``db/``) and the Java DB
(``java-db/``, needed for images with Java archives). Both are handled alike:

Scans only ever read the DB (``--skip-db-update``; trivy opens it read-only,
so any number of scans share it), and each scan keeps its layer cache in
memory (``--cache-backend memory``), so concurrent invocations on one
instance never meet on trivy's file locks. Refreshing downloads into a fresh
directory and then swaps the ``db`` symlink atomically: a scan sees the old
DB or the new one, never half of one, and a failed download leaves the
usable DB in place.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import FailureKind, ScanFailed
from ..registry import Credentials, current_guard
from .db_kind import JAVA_DB, VULNERABILITY_DB, DatabaseKind
from .runner import Trivy

__all__ = [
    "JAVA_DB", "VULNERABILITY_DB", "DatabaseKind", "DatabaseSource", "VulnerabilityDatabase", "is_stale", "read_database_info",
]



@dataclass(frozen=True)
class DatabaseInfo:
    updated_at: str | None = None
    next_update: str | None = None
    downloaded_at: str | None = None


@dataclass(frozen=True)
class RefreshResult:
    refreshed: bool
    reason: str
    database: DatabaseInfo


class DatabaseSource(Protocol):
    """Somewhere a DB can be restored from before trivy's OCI repositories are asked
    (the fleet's snapshot in Blob Storage, ``db_snapshot.py``)."""

    def restore(self, database: VulnerabilityDatabase) -> bool:
        """Installs its copy of ``database.kind`` (``database.install``) when it is newer
        than the one in place and not stale; ``True`` if it did. Never raises for a
        missing or unreachable source: the repositories are the fallback."""
        ...

    def due_for_check(self, database: VulnerabilityDatabase) -> bool:
        """Whether a warm instance should look for a newer copy now (rate-limited)."""
        ...


class VulnerabilityDatabase:
    """One DB (``kind``, by default the vulnerability DB at ``<cache_dir>/db``) and
    how it is kept fresh."""

    def __init__(
        self,
        cache_dir: Path,
        trivy: Trivy,
        *,
        repositories: Sequence[str] = (),
        updates_allowed: bool = True,
        timeout_ms: int = 300_000,
        credentials: Credentials | Callable[[], Credentials | None] | None = None,
        insecure: bool = False,
        kind: DatabaseKind = VULNERABILITY_DB,
        snapshot: DatabaseSource | None = None,
    ) -> None:
        self.kind = kind
        self.snapshot = snapshot
        self.cache_dir = cache_dir
        self.trivy = trivy
        self.repositories = tuple(repositories)
        self.updates_allowed = updates_allowed
        self.timeout_ms = timeout_ms
        # Credentials, or how to get them when a download needs them: an ACR token expires, and a
        # scanner (so its DBs) may live for many scans (the listener's threads).
        self._credentials = credentials
        self._insecure = insecure

    @property
    def db_dir(self) -> Path:
        return self.cache_dir / self.kind.dir_name

    def usable(self) -> bool:
        return (self.db_dir / self.kind.db_file).is_file() and (self.db_dir / self.kind.metadata_file).is_file()

    def info(self) -> DatabaseInfo:
        return read_database_info(self.cache_dir, self.kind)

    def ensure(self) -> None:
        """Before a scan: get a DB if there is none yet (and updates are allowed): from the
        snapshot if there is a fresh one, else from the repositories. A warm instance also
        takes a newer snapshot, looking at most every few minutes."""
        if not self.updates_allowed:
            return
        if not self.usable():
            self.refresh(only_if_missing=True)
        elif self.snapshot is not None and self.snapshot.due_for_check(self):
            with self._exclusive():
                self.snapshot.restore(self)

    def refresh(
        self, *, force: bool = False, only_if_missing: bool = False, only_if_present: bool = False
    ) -> RefreshResult:
        """Downloads a new DB unless the current one is still fresh (its ``NextUpdate``
        is in the future). Raises a transient ``ScanFailed`` when the download fails;
        the DB in place, if any, stays."""
        if only_if_present and not self.usable():
            return RefreshResult(False, f"no {self.kind.name} yet: it is fetched when a scan first needs it", self.info())
        if not self.updates_allowed:
            return RefreshResult(False, f"updates are disabled ({self.kind.skip_setting}=true)", self.info())
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._exclusive():
            # Checked again under the lock: another invocation may have just refreshed it.
            if only_if_missing and self.usable():
                return RefreshResult(False, "a DB appeared while waiting", self.info())
            if not force and self.snapshot is not None and (not self.usable() or _is_due(self.info())):
                if self.snapshot.restore(self) and (only_if_missing or not _is_due(self.info())):
                    return RefreshResult(True, "restored from the DB snapshot", self.info())
            if not force and self.usable() and not _is_due(self.info()):
                return RefreshResult(False, "the DB is fresh (NextUpdate is in the future)", self.info())
            self._download_and_swap()
        return RefreshResult(True, "downloaded", self.info())

    def _download_and_swap(self) -> None:
        for repository in self.repositories:  # operator's mirrors: any address but the guard's always-refused
            current_guard().check_operator_registry(repository, self.kind.repository_setting)
        def download(staging: Path) -> None:
            credentials = self._credentials() if callable(self._credentials) else self._credentials
            self.trivy.download_db(
                staging, self.repositories, self.timeout_ms, credentials, self._insecure, kind=self.kind
            )

        self.install(download, "trivy downloaded")

    def install(self, fill: Callable[[Path], None], source: str = "the snapshot held") -> None:
        """Puts a new DB in place atomically: ``fill(staging)`` writes ``staging/<dir_name>/``
        (trivy's download, a restored snapshot), then the symlink is swapped. Call it under
        ``_exclusive()``. A failed fill leaves the DB in place."""
        kind = self.kind
        versions = self.cache_dir / kind.versions_dir
        versions.mkdir(parents=True, exist_ok=True)
        # Always a new, empty directory: trivy skips the download into a dir that holds a recent DB.
        staging = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d%H%M%S-"), dir=versions))
        try:
            fill(staging)
            if not (staging / kind.dir_name / kind.db_file).is_file():
                raise ScanFailed(f"{source} no {kind.name}", kind=FailureKind.TRANSIENT, reason="db-unavailable")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._adopt_plain_directory(versions)
        link = self.cache_dir / f".{kind.dir_name}-link-{os.getpid()}-{threading.get_ident()}"
        link.unlink(missing_ok=True)
        link.symlink_to(Path(kind.versions_dir) / staging.name / kind.dir_name, target_is_directory=True)
        os.replace(link, self.db_dir)  # atomic: readers see the old or the new DB
        self._remove_old_versions(versions, keep=staging.name)

    def _adopt_plain_directory(self, versions: Path) -> None:
        """A DB placed by hand (or baked into an image) is a real directory: move it
        under the versions dir and link to it, so that later swaps are atomic."""
        if self.db_dir.is_dir() and not self.db_dir.is_symlink():
            adopted = versions / "adopted"
            shutil.rmtree(adopted, ignore_errors=True)
            adopted.mkdir(parents=True)
            os.rename(self.db_dir, adopted / self.kind.dir_name)
            self.db_dir.symlink_to(Path(self.kind.versions_dir) / "adopted" / self.kind.dir_name,
                                   target_is_directory=True)

    def _remove_old_versions(self, versions: Path, keep: str) -> None:
        # Scans that opened an older DB keep their open file; unlinking it is safe.
        for entry in versions.iterdir():
            if entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with (self.cache_dir / self.kind.lock_file).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def is_stale(info: DatabaseInfo, after_hours: float, now: datetime | None = None) -> bool | None:
    """True when the DB is past its ``NextUpdate`` by more than ``after_hours``;
    ``None`` when there is no DB (or no readable ``NextUpdate``) to judge."""
    if not info.next_update:
        return None
    try:
        next_update = datetime.fromisoformat(info.next_update.replace("Z", "+00:00"))
    except ValueError:
        return None
    return next_update + timedelta(hours=after_hours) < (now or datetime.now(timezone.utc))


def _is_due(info: DatabaseInfo) -> bool:
    if not info.next_update:
        return True
    try:
        next_update = datetime.fromisoformat(info.next_update.replace("Z", "+00:00"))
    except ValueError:
        return True
    return next_update <= datetime.now(timezone.utc)


def read_database_info(cache_dir: Path, kind: DatabaseKind = VULNERABILITY_DB) -> DatabaseInfo:
    """The DB's ``metadata.json`` (``UpdatedAt``/``NextUpdate``), when there is one."""
    try:
        metadata = json.loads((cache_dir / kind.dir_name / kind.metadata_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DatabaseInfo()
    return DatabaseInfo(
        updated_at=metadata.get("UpdatedAt"),
        next_update=metadata.get("NextUpdate"),
        downloaded_at=metadata.get("DownloadedAt"),
    )
