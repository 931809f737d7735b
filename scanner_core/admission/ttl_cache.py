"""A small TTL cache with single flight (an explicit per-process cache): concurrent callers
of one key wait for one load; the answer is kept for ``ttl`` seconds, at most ``size`` keys."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(self, ttl_seconds: float, size: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self._clock = ttl_seconds, size, clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()
        self._flights: dict[str, threading.Lock] = {}

    def get(self, key: str, load: Callable[[], V]) -> V:
        found = self._fresh(key)
        if found is not None:
            return found[0]
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            found = self._fresh(key)
            if found is not None:
                return found[0]
            value = load()
            with self._lock:
                if self.ttl > 0:
                    self._entries[key] = (value, self._clock() + self.ttl)
                    self._entries.move_to_end(key)
                    while len(self._entries) > self.size:
                        self._entries.popitem(last=False)
                self._flights.pop(key, None)
            return value

    def _fresh(self, key: str) -> tuple[V] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] > self._clock():
                return (entry[0],)
            return None


_caches: dict[tuple[str, float], TtlCache] = {}  # type: ignore[type-arg]
_caches_lock = threading.Lock()


def process_cache(name: str, ttl_seconds: float) -> TtlCache:  # type: ignore[type-arg]
    """The process's cache ``name`` for a TTL setting's value; a new value starts it afresh."""
    with _caches_lock:
        cache = _caches.get((name, ttl_seconds))
        if cache is None:
            for key in [k for k in _caches if k[0] == name]:
                del _caches[key]
            cache = _caches[(name, ttl_seconds)] = TtlCache(ttl_seconds)
        return cache
