"""New tags are scanned without anyone asking: one run of the watch timer.

For each ``watch:`` entry: list the repository's tags through the registry
API (``GET /v2/<name>/tags/list``, following ``Link``), keep those matching
the entry's pattern, resolve each one's manifest digest (one ``HEAD``), and
enqueue ``registry/repository@digest`` labelled with its tag for every digest
not seen before in that repository; a re-pushed tag has a new digest and is
new. What was enqueued is recorded as seen (``records.py``) after the message
is on the queue, so a run that dies in between enqueues it again next time
(the dedup answers the second request without trivy).

The first run over a repository is bounded: ``WATCH_MAX_NEW_TAGS`` (default
10) of its unseen digests are enqueued, the newest first, and the others are
recorded as ``baseline`` (already there, not scanned). ``all`` enqueues every
one. Later runs enqueue every new digest. "Newest" is the highest tag in
version order (``1.10`` after ``1.9``, digits compared as numbers): the OCI
spec asks registries for lexical order, which puts ``1.10`` before ``1.9``,
and distribution 2.x (Debian's ``docker-registry``) lists its directory order,
so the registry's own order says nothing about age; reading every image's
creation time instead would cost two requests per tag on a first run.

A tag pointing to a multi-platform index is scanned for the entry's
``platform``: the platform's manifest digest is enqueued (the index's digest
is what is recorded as seen); without ``platform``, the index's digest is
enqueued and trivy picks its default platform.

A run is bounded (issue 23), so that one registry cannot take the memory or the
time of the others: per entry at most ``WATCH_MAX_PAGES`` tags/list pages and
``WATCH_MAX_TAGS`` tags are read (one page in memory at a time), and the run's
``WATCH_RUN_SECONDS`` are shared out: each entry gets an equal share of what the
entries before it left. Tags are resolved newest first, each new digest handled as
it is found, so a time cap leaves out the oldest tags. A capped entry is logged,
kept in its ``WatchResult`` and in the status the heartbeat shows, and a capped
first run does not count as the first run: the next one is bounded again.

``trivy-{id8}/monitor/watch.json`` holds the last run, one ``WatchState`` per
repository (pages and tags read, digests enqueued, the cap that stopped it, the
error), rewritten whole after every run. The watch timer and the heartbeat may
run on different instances: a blob, not a local file.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, Protocol

from pydantic import TypeAdapter, ValidationError

from ..config import ScannerConfig, WatchEntry
from ..errors import RequestError, ScanFailed
from ..log import ScanLogger
from ..models import WatchState
from ..registry import RegistryApi, TagLimits, current_guard, find_credentials, resolve_credentials
from ..storage import BlobStore, scanner_folder
from .records import MonitorStore, Seen

_CAP_SETTINGS = {"pages": "WATCH_MAX_PAGES", "tags": "WATCH_MAX_TAGS", "time": "WATCH_RUN_SECONDS"}


class Enqueue(Protocol):
    """Puts one scan request on the trigger queue."""

    def __call__(self, image: str, audit_id: str, *, tag: str | None, trigger: str, created_at: float) -> None: ...


@dataclass
class WatchResult:
    """What one run did for one repository."""

    repository: str
    first_run: bool = False
    matching_tags: int = 0
    enqueued: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, digest scanned, audit id)
    baseline: int = 0
    skipped: list[str] = field(default_factory=list)
    error: str | None = None
    pages: int = 0  # tags/list pages read
    tags_read: int = 0
    capped: Literal["pages", "tags", "time"] | None = None  # the bound that stopped the entry
    limit: float | None = None  # its value: WATCH_MAX_PAGES, WATCH_MAX_TAGS, or the entry's seconds

    def document(self) -> dict[str, object]:
        return {
            "repository": self.repository, "first-run": self.first_run, "matching-tags": self.matching_tags,
            "enqueued": len(self.enqueued), "baseline": self.baseline, "skipped": len(self.skipped),
            "error": self.error, "pages": self.pages, "tags": self.tags_read, "capped": self.capped,
        }


def version_key(tag: str) -> tuple[tuple[int, int | str], ...]:
    """Orders tags as versions: digit runs as numbers (``v1.10`` after ``v1.9``)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", tag) if part)


def registry_api(config: ScannerConfig, entry: WatchEntry) -> RegistryApi:
    """The registry API client for an entry, with the credentials configured for its host."""
    current_guard().check_image(entry.reference, "repository")  # the allowlist may have changed since start-up
    registry = find_credentials(entry.reference, config.file.registries)
    return RegistryApi(
        entry.reference.registry,
        credentials=resolve_credentials(registry),
        insecure=bool(registry and registry.insecure),
    )


def audit_id_for(trigger: str, digest: str, at: float) -> str:
    """``watch-<12 hex of the digest>-<unix seconds>``: readable, unique per run."""
    return f"{trigger}-{digest.split(':', 1)[-1][:12]}-{int(at)}"


def platform_digest(api: RegistryApi, repository: str, digest: str, platform: str | None) -> str | None:
    """The manifest to scan for ``platform`` when ``digest`` is an index; ``None`` when
    the index offers no such platform. A plain manifest is scanned as it is."""
    if platform is None:
        return digest
    manifest = api.manifest(repository, digest)
    if not manifest.is_index:
        return digest
    offered = manifest.platforms()
    for name, child in offered:
        if name == platform:
            return child
    for name, child in offered:  # linux/arm64 also matches linux/arm64/v8
        if name.startswith(platform + "/"):
            return child
    return None


class Watcher:
    """One run of the watch timer over every ``watch:`` entry."""

    def __init__(
        self,
        config: ScannerConfig,
        store: MonitorStore,
        enqueue: Enqueue,
        log: ScanLogger,
        *,
        api_factory: Callable[[WatchEntry], RegistryApi] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.enqueue = enqueue
        self.log = log
        self.api_factory = api_factory or (lambda entry: registry_api(config, entry))
        self.clock = clock

    def run(self) -> list[WatchResult]:
        """Every entry, each within its share of ``WATCH_RUN_SECONDS``; a registry failure is
        reported for its repository and the others go on. ``StorageError`` (results or queue
        unreachable) is raised."""
        entries = self.config.file.watch
        end = time.monotonic() + self.config.settings.watch_run_seconds
        results = []
        for position, entry in enumerate(entries):
            share = max(0.0, end - time.monotonic()) / (len(entries) - position)
            try:
                result = self.watch(entry, share)
            except (ScanFailed, RequestError) as error:  # RegistryNotAllowed is a RequestError
                result = WatchResult(entry.canonical, error=str(error))
                self.log.error("watched repository not listed", fields={"repository": entry.canonical,
                                                                        "error": str(error)})
            if result.capped is not None:
                self.log.warning(
                    "watched repository capped: the rest of its tags waits for a run within the bounds",
                    fields={"repository": result.repository, "cap": _CAP_SETTINGS[result.capped],
                            "limit": result.limit, "pages": result.pages, "tags": result.tags_read},
                )
            self.log.info("watched repository", fields=result.document())
            results.append(result)
        return results

    def watch(self, entry: WatchEntry, seconds: float | None = None) -> WatchResult:
        """One entry, within ``seconds`` (``None``: ``WATCH_RUN_SECONDS``)."""
        settings = self.config.settings
        seconds = settings.watch_run_seconds if seconds is None else seconds
        deadline = time.monotonic() + seconds
        repository, path = entry.canonical, entry.reference.repository
        result = WatchResult(repository)
        now = self.clock()
        with self.api_factory(entry) as api:
            listing = api.tags(path, limits=TagLimits(settings.watch_max_pages, settings.watch_max_tags, deadline))
            tags = [tag for tag in listing if entry.matches(tag)]  # at most WATCH_MAX_TAGS
            result.pages, result.tags_read = listing.pages, listing.tags
            if listing.capped is not None:
                result.capped = listing.capped
                result.limit = {"pages": settings.watch_max_pages, "tags": settings.watch_max_tags}.get(
                    listing.capped, round(seconds, 3))
            result.matching_tags = len(tags)
            seen = self.store.seen(repository)
            result.first_run = not self.store.watched_before(repository)
            limit = settings.watch_max_new_tags
            room = len(tags) if not result.first_run or limit == "all" else limit  # digests to enqueue
            handled: set[str] = set()
            # Newest first: each digest is met first under its highest tag, and a time cap leaves out the oldest.
            for tag in sorted(tags, key=version_key, reverse=True):
                if time.monotonic() >= deadline:
                    result.capped, result.limit = result.capped or "time", result.limit or round(seconds, 3)
                    break
                digest = api.digest(path, tag)
                if digest in seen or digest in handled:
                    continue
                handled.add(digest)
                if room > 0:
                    room -= 1
                    self._enqueue(api, entry, digest, tag, now, result)
                else:
                    self.store.mark_seen(repository, Seen(digest, tag, "baseline", None, int(now)))
                    result.baseline += 1
        if result.first_run and result.capped is None:  # a capped first run leaves tags unlooked at
            self.store.mark_watched(repository, int(now))
        return result

    def _enqueue(
        self, api: RegistryApi, entry: WatchEntry, digest: str, tag: str, now: float, result: WatchResult
    ) -> None:
        repository = entry.canonical
        scanned = platform_digest(api, entry.reference.repository, digest, entry.platform)
        if scanned is None:
            result.skipped.append(tag)
            self.store.mark_seen(repository, Seen(digest, tag, "no-platform", None, int(now)))
            self.log.warning(
                "tag skipped: its index offers no manifest for the watched platform",
                fields={"repository": repository, "tag": tag, "platform": entry.platform},
            )
            return
        audit_id = audit_id_for("watch", scanned, now)
        self.enqueue(f"{repository}@{scanned}", audit_id, tag=tag, trigger="watch", created_at=now)
        self.store.mark_seen(repository, Seen(digest, tag, "watch", audit_id, int(now)))
        result.enqueued.append((tag, scanned, audit_id))


# -- the last run, for the heartbeat ------------------------------------------------

_STATES = TypeAdapter(dict[str, WatchState])


def watch_status_blob(scanner_short_id: str) -> str:
    return f"{scanner_folder(scanner_short_id)}/monitor/watch.json"


def write_watch_status(store: BlobStore, scanner_short_id: str, results: Iterable[WatchResult], at: float) -> None:
    """Replaces the last run's status document; raises ``StorageError``."""
    checked_at = datetime.fromtimestamp(int(at), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    states = {
        result.repository: WatchState(
            checked_at=checked_at, pages=result.pages, tags=result.tags_read, enqueued=len(result.enqueued),
            capped=result.capped, limit=result.limit, error=result.error,
        ).model_dump(by_alias=True, exclude_none=True)
        for result in results
    }
    store.upload_bytes(watch_status_blob(scanner_short_id), json.dumps(states, indent=2).encode(), "application/json")


def read_watch_status(store: BlobStore, scanner_short_id: str) -> dict[str, WatchState] | None:
    """The last run's states; ``None`` before the first run or when the document is unreadable
    (written by another version). Raises ``StorageError``."""
    data = store.download_bytes(watch_status_blob(scanner_short_id))
    if data is None:
        return None
    try:
        return _STATES.validate_json(data) or None
    except ValidationError:
        return None
