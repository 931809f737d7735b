"""Unscanned images are queued once (issue 25, item 3): the ledger claims an image for a
window with a blob created only if absent (``If-None-Match: *``), so 20 identical reviews,
on one instance or several, queue one scan; a per-process memo spares the repeats even the
blob request. ``NamespaceRateLimit`` caps the scans one namespace can queue per minute on
an instance (an explicit per-process cache), so a namespace that deploys hundreds of
unknown images cannot flood the queue.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from ..storage import StorageErrors, scanner_folder, shared_container_client

MAX_MEMO = 10_000


@dataclass(frozen=True)
class Claim:
    """``won``: this caller queues the scan; ``audit_id``: the scan's (when known); ``limited``: the
    namespace's rate limit refused it."""

    won: bool
    audit_id: str | None = None
    limited: bool = False


class EnqueueLedger:
    """One marker blob per image key and window: ``trivy-{id8}/admission-queued/{sha}-{window}``."""

    def __init__(self, container_url: str, short_id: str, window_seconds: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.container_url, self.short_id, self.window, self._clock = container_url, short_id, window_seconds, clock
        self._memo: dict[str, tuple[str | None, float]] = {}
        self._flights: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, audit_id: str, admit: Callable[[], bool]) -> Claim:
        """Claims ``key`` for this window with ``audit_id``; ``admit`` (the rate limit) is asked only
        when no claim of this window is known, so repeats do not spend the namespace's budget.
        Concurrent claims of one key on this instance wait for the first (single flight)."""
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            now = self._clock()
            with self._lock:
                known = self._memo.get(key)
                if known is not None and known[1] > now:
                    return Claim(False, known[0])
            if not admit():
                return Claim(False, None, limited=True)
            window = int(now // self.window)
            won, holder = self._create(self._blob(key, window), key, audit_id, now)
            with self._lock:
                if len(self._memo) >= MAX_MEMO:
                    self._memo = {k: v for k, v in self._memo.items() if v[1] > now}
                    self._flights = {k: v for k, v in self._flights.items() if k in self._memo}
                self._memo[key] = (holder, (window + 1) * self.window)
            return Claim(won, holder)

    def _create(self, blob: str, key: str, audit_id: str, now: float) -> tuple[bool, str | None]:
        """Creates the marker (won), or reads whose it is (another instance queued it)."""
        document = json.dumps({"key": key, "audit-id": audit_id, "claimed-at": int(now)}).encode()
        client = self._client()
        with StorageErrors("claiming an image for an admission scan", self.container_url):
            try:
                client.upload_blob(blob, document, overwrite=False)
                return True, audit_id
            except ResourceExistsError:
                pass
            try:
                return False, json.loads(client.download_blob(blob).readall()).get("audit-id")
            except (ResourceNotFoundError, ValueError, AttributeError):
                return False, None

    def release(self, key: str) -> None:
        """Undoes a claim whose scan could not be queued, so the next review tries again."""
        now = self._clock()
        with self._lock:
            self._memo.pop(key, None)
        with StorageErrors("releasing an admission claim", self.container_url):
            try:
                self._client().delete_blob(self._blob(key, int(now // self.window)))
            except ResourceNotFoundError:
                pass

    def _blob(self, key: str, window: int) -> str:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return f"{scanner_folder(self.short_id)}/admission-queued/{digest}-{window}"

    def _client(self):  # noqa: ANN202 - the SDK's ContainerClient
        return shared_container_client(self.container_url)


class NamespaceRateLimit:
    """At most ``per_minute`` scans queued per namespace per minute on this instance."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self._clock = per_minute, clock
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, namespace: str) -> bool:
        now = self._clock()
        with self._lock:
            times = self._times.setdefault(namespace, deque())
            while times and times[0] <= now - 60:
                times.popleft()
            if len(times) >= self.per_minute:
                return False
            times.append(now)
            if len(self._times) > MAX_MEMO:
                self._times = {k: v for k, v in self._times.items() if v}
            return True


_ledgers: dict[tuple[str, str, int], EnqueueLedger] = {}
_limits: dict[int, NamespaceRateLimit] = {}
_lock = threading.Lock()


def enqueue_ledger(container_url: str, short_id: str, window_seconds: int) -> EnqueueLedger:
    """The process's ledger per container and window (an explicit per-process cache)."""
    with _lock:
        key = (container_url, short_id, window_seconds)
        if key not in _ledgers:
            _ledgers.clear()
            _ledgers[key] = EnqueueLedger(container_url, short_id, window_seconds)
        return _ledgers[key]


def rate_limit(per_minute: int) -> NamespaceRateLimit:
    """The process's per-namespace limit for a setting's value (an explicit per-process cache)."""
    with _lock:
        if per_minute not in _limits:
            _limits.clear()
            _limits[per_minute] = NamespaceRateLimit(per_minute)
        return _limits[per_minute]
