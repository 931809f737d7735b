"""The scanner's heartbeat meta: tells readers the scanner is alive, how
often to expect it, and how old its vulnerability DB is."""

from __future__ import annotations

import time

from . import __version__
from .core import JSON_CONTENT_TYPE, Scanner
from .errors import ScannerError, StorageError
from .models import FeedState, HeartbeatMeta, WatchState
from .storage import heartbeat_blob
from .trivy import JAVA_DB, is_stale, read_database_info
from .stages import ask_server_ahead, database_age


def build_heartbeat(scanner: Scanner, now: float | None = None) -> HeartbeatMeta:
    settings = scanner.config.settings
    database = database_age(settings.trivy_cache_dir, ask_server_ahead(scanner.server), scanner.logger)
    java_database = read_database_info(settings.trivy_cache_dir, JAVA_DB)
    try:
        trivy_version: str | None = scanner.trivy.version()
    except ScannerError:
        trivy_version = None  # the heartbeat still beats: it is how an operator learns trivy is missing
    return HeartbeatMeta(
        scanner_id=str(settings.scanner_identifier),
        heartbeat_periodicity=scanner.config.file.heartbeat_period,
        heartbeat=int(now if now is not None else time.time()),
        scanner_version=__version__,
        trivy_version=trivy_version,
        trivy_db_updated_at=database.updated_at,
        trivy_db_next_update=database.next_update,
        trivy_java_db_updated_at=java_database.updated_at,
        trivy_java_db_next_update=java_database.next_update,
        trivy_db_stale=is_stale(database, settings.trivy_db_stale_after_hours),
        exploit_feeds=_feed_states(scanner),
        watch=_watch_states(scanner),
    )


def _feed_states(scanner: Scanner) -> dict[str, FeedState] | None:
    """The exploitability feeds that are turned on, as the refresh timer left them."""
    from .exploits import read_status

    settings = scanner.config.settings
    status = read_status(settings.trivy_cache_dir)
    on = {"kev": settings.kev_feed_url, "epss": settings.epss_feed_url}
    states = {feed: FeedState.model_validate(status.get(feed) or {}) for feed, url in on.items() if url}
    return states or None


def _watch_states(scanner: Scanner) -> dict[str, WatchState] | None:
    """The watch timer's last run (caps hit, errors), per watched repository; ``None`` when
    nothing is watched or it has not run yet, or its status cannot be read."""
    if not scanner.config.file.watch:
        return None
    from .monitor import read_watch_status  # only where something is watched

    try:
        return read_watch_status(scanner.blob_store, scanner.short_id)
    except StorageError as error:  # the heartbeat still beats
        scanner.logger.warning("watch status not read", fields={"error": str(error)})
        return None


def write_heartbeat(scanner: Scanner, now: float | None = None) -> tuple[str, HeartbeatMeta]:
    """Uploads the heartbeat; returns its blob name and content. Raises ``StorageError``."""
    meta = build_heartbeat(scanner, now)
    name = heartbeat_blob(scanner.short_id)
    scanner.blob_store.upload_bytes(name, meta.to_json_bytes(), JSON_CONTENT_TYPE)
    scanner.logger.info("heartbeat written", fields={"blob": name})
    return name, meta
