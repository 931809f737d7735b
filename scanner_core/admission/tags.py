"""A tag's digest, from the registry, trusted for a short TTL (an explicit per-process cache).

An admission answer is about what the node will pull: a reference by digest needs no
registry call; one by tag is resolved (``HEAD`` of the manifest, through the egress guard
``ALLOWED_REGISTRIES`` and with the registry's configured credentials) once per
``ADMISSION_TAG_TTL_SECONDS`` per process. Concurrent reviews of the same tag wait for one
request (single flight), so a rollout of 50 pods asks the registry once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ..config import ScannerConfig
from ..registry import ImageReference, RegistryApi, current_guard, find_credentials, resolve_credentials

Resolve = Callable[[ImageReference], str]
MAX_ENTRIES = 4096
REQUEST_TIMEOUT_SECONDS = 2.0  # inside Gatekeeper's 3 s and the webhook's 10 s


class TagResolver:
    """``digest(reference, resolve)``: the cached digest of ``registry/repository:tag``, else
    ``resolve``'s (which carries the configuration of the moment: guard, credentials)."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self._clock = ttl_seconds, clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._pending: dict[str, threading.Lock] = {}

    def digest(self, reference: ImageReference, resolve: Resolve) -> str:
        if reference.digest:
            return reference.digest
        key = f"{reference.registry}/{reference.repository}:{reference.tag or 'latest'}"
        found = self._fresh(key)
        if found is not None:
            return found
        with self._lock:
            flight = self._pending.setdefault(key, threading.Lock())
        with flight:  # one registry request per key at a time; the others find its answer
            found = self._fresh(key)
            if found is not None:
                return found
            digest = resolve(reference)
            with self._lock:
                self._entries[key] = (digest, self._clock() + self.ttl)
                self._entries.move_to_end(key)
                while len(self._entries) > MAX_ENTRIES:
                    self._entries.popitem(last=False)
                self._pending.pop(key, None)
            return digest

    def _fresh(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] > self._clock():
                return entry[0]
            return None


def registry_digest(config: ScannerConfig) -> Resolve:
    """Resolves a tag with the registry API, the guard and the credentials configured for its host."""

    def resolve(reference: ImageReference) -> str:
        current_guard().check_image(reference, "image")  # RegistryNotAllowed: a 400 naming the image
        entry = find_credentials(reference, config.file.registries)
        with RegistryApi(reference.registry, credentials=resolve_credentials(entry),
                         insecure=bool(entry and entry.insecure), timeout=REQUEST_TIMEOUT_SECONDS) as api:
            return api.digest(reference.repository, reference.tag or "latest")

    return resolve


_resolvers: dict[float, TagResolver] = {}
_resolvers_lock = threading.Lock()


def tag_resolver(ttl_seconds: float) -> TagResolver:
    """The process's cache of tags' digests (an explicit per-process cache), one per TTL."""
    with _resolvers_lock:
        resolver = _resolvers.get(ttl_seconds)
        if resolver is None:
            _resolvers.clear()  # a new TTL setting: the old cache goes with it
            resolver = _resolvers[ttl_seconds] = TagResolver(ttl_seconds)
        return resolver
