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
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..config import ScannerConfig, WatchEntry
from ..errors import RequestError, ScanFailed
from ..log import ScanLogger
from ..registry import RegistryApi, current_guard, find_credentials, resolve_credentials
from .records import MonitorStore, Seen


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

    def document(self) -> dict[str, object]:
        return {
            "repository": self.repository, "first-run": self.first_run, "matching-tags": self.matching_tags,
            "enqueued": len(self.enqueued), "baseline": self.baseline, "skipped": len(self.skipped),
            "error": self.error,
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
        """Every entry; a registry failure is reported for its repository and the
        others go on. ``StorageError`` (results or queue unreachable) is raised."""
        results = []
        for entry in self.config.file.watch:
            try:
                result = self.watch(entry)
            except (ScanFailed, RequestError) as error:  # RegistryNotAllowed is a RequestError
                result = WatchResult(entry.canonical, error=str(error))
                self.log.error("watched repository not listed", fields={"repository": entry.canonical,
                                                                        "error": str(error)})
            self.log.info("watched repository", fields=result.document())
            results.append(result)
        return results

    def watch(self, entry: WatchEntry) -> WatchResult:
        repository, path = entry.canonical, entry.reference.repository
        result = WatchResult(repository)
        now = self.clock()
        with self.api_factory(entry) as api:
            tags = [tag for tag in api.tags(path) if entry.matches(tag)]
            result.matching_tags = len(tags)
            seen = self.store.seen(repository)
            result.first_run = not self.store.watched_before(repository)
            new: dict[str, str] = {}  # digest -> its highest tag
            for tag in tags:
                digest = api.digest(path, tag)
                if digest not in seen and (digest not in new or version_key(tag) > version_key(new[digest])):
                    new[digest] = tag
            ordered = sorted(new.items(), key=lambda item: version_key(item[1]))
            limit = self.config.settings.watch_max_new_tags
            cut = max(0, len(ordered) - limit) if result.first_run and limit != "all" else 0
            for digest, tag in reversed(ordered[cut:]):  # newest first
                self._enqueue(api, entry, digest, tag, now, result)
            for digest, tag in ordered[:cut]:
                self.store.mark_seen(repository, Seen(digest, tag, "baseline", None, int(now)))
            result.baseline = cut
        if result.first_run:
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

