"""The vulnerability DB in the shared cache dir, refreshed apart from scans.

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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import FailureKind, ScanFailed
from ..registry import Credentials
from .runner import Trivy

_VERSIONS_DIR = "db-versions"
_LOCK_FILE = ".db-refresh.lock"


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


class VulnerabilityDatabase:
    """The DB at ``<cache_dir>/db`` and how it is kept fresh."""

    def __init__(
        self,
        cache_dir: Path,
        trivy: Trivy,
        *,
        repositories: Sequence[str] = (),
        updates_allowed: bool = True,
        timeout_ms: int = 300_000,
        credentials: Credentials | None = None,
        insecure: bool = False,
    ) -> None:
        self.cache_dir = cache_dir
        self.trivy = trivy
        self.repositories = tuple(repositories)
        self.updates_allowed = updates_allowed
        self.timeout_ms = timeout_ms
        self._credentials = credentials
        self._insecure = insecure

    @property
    def db_dir(self) -> Path:
        return self.cache_dir / "db"

    def usable(self) -> bool:
        return (self.db_dir / "trivy.db").is_file() and (self.db_dir / "metadata.json").is_file()

    def info(self) -> DatabaseInfo:
        return read_database_info(self.cache_dir)

    def ensure(self) -> None:
        """Before a scan: download a DB if there is none yet (and updates are allowed)."""
        if not self.usable() and self.updates_allowed:
            self.refresh(only_if_missing=True)

    def refresh(self, *, force: bool = False, only_if_missing: bool = False) -> RefreshResult:
        """Downloads a new DB unless the current one is still fresh (its ``NextUpdate``
        is in the future). Raises a transient ``ScanFailed`` when the download fails;
        the DB in place, if any, stays."""
        if not self.updates_allowed:
            return RefreshResult(False, "updates are disabled (TRIVY_SKIP_DB_UPDATE=true)", self.info())
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._exclusive():
            # Checked again under the lock: another invocation may have just refreshed it.
            if only_if_missing and self.usable():
                return RefreshResult(False, "a DB appeared while waiting", self.info())
            if not force and self.usable() and not _is_due(self.info()):
                return RefreshResult(False, "the DB is fresh (NextUpdate is in the future)", self.info())
            self._download_and_swap()
        return RefreshResult(True, "downloaded", self.info())

    def _download_and_swap(self) -> None:
        versions = self.cache_dir / _VERSIONS_DIR
        versions.mkdir(parents=True, exist_ok=True)
        # Always a new, empty directory: trivy skips the download into a dir that holds a recent DB.
        staging = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d%H%M%S-"), dir=versions))
        try:
            self.trivy.download_db(staging, self.repositories, self.timeout_ms, self._credentials, self._insecure)
            if not (staging / "db" / "trivy.db").is_file():
                raise ScanFailed("trivy downloaded no DB", kind=FailureKind.TRANSIENT, reason="db-unavailable")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._adopt_plain_directory(versions)
        link = self.cache_dir / f".db-link-{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(Path(_VERSIONS_DIR) / staging.name / "db", target_is_directory=True)
        os.replace(link, self.db_dir)  # atomic: readers see the old or the new DB
        self._remove_old_versions(versions, keep=staging.name)

    def _adopt_plain_directory(self, versions: Path) -> None:
        """A DB placed by hand (or baked into an image) is a real directory: move it
        under the versions dir and link to it, so that later swaps are atomic."""
        if self.db_dir.is_dir() and not self.db_dir.is_symlink():
            adopted = versions / "adopted"
            shutil.rmtree(adopted, ignore_errors=True)
            adopted.mkdir(parents=True)
            os.rename(self.db_dir, adopted / "db")
            self.db_dir.symlink_to(Path(_VERSIONS_DIR) / "adopted" / "db", target_is_directory=True)

    def _remove_old_versions(self, versions: Path, keep: str) -> None:
        # Scans that opened an older DB keep their open file; unlinking it is safe.
        for entry in versions.iterdir():
            if entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with (self.cache_dir / _LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _is_due(info: DatabaseInfo) -> bool:
    if not info.next_update:
        return True
    try:
        next_update = datetime.fromisoformat(info.next_update.replace("Z", "+00:00"))
    except ValueError:
        return True
    return next_update <= datetime.now(timezone.utc)


def read_database_info(cache_dir: Path) -> DatabaseInfo:
    """The DB's ``metadata.json`` (``UpdatedAt``/``NextUpdate``), when there is one."""
    try:
        metadata = json.loads((cache_dir / "db" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DatabaseInfo()
    return DatabaseInfo(
        updated_at=metadata.get("UpdatedAt"),
        next_update=metadata.get("NextUpdate"),
        downloaded_at=metadata.get("DownloadedAt"),
    )
