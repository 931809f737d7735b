"""Per-process caches of storage clients.

A ``ContainerClient`` holds a connection pool; building one per invocation
(the function app builds a ``Scanner`` per message) throws the pool away and
pays a new TCP (and, on Azure, TLS) handshake on the first request of every
scan. Clients are thread-safe, so one per (URL, options) serves the whole
process. The cache is bounded; an evicted client is not closed (another
thread may still use it) but left to the garbage collector.

``io_pool`` is the process's thread pool for independent storage requests
(the audit index's lookups and writes beside the report and ``meta``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.storage.blob import ContainerClient

from .container import container_client

MAX_CLIENTS = 32
IO_WORKERS = 8

_lock = threading.Lock()
_clients: OrderedDict[tuple[str, tuple[tuple[str, Any], ...]], ContainerClient] = OrderedDict()
_pool: ThreadPoolExecutor | None = None


def shared_container_client(container_url: str, **options: Any) -> ContainerClient:
    """The process's client for this container URL (with its SAS) and options."""
    key = (container_url, tuple(sorted(options.items())))
    with _lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
        client = container_client(container_url, **options)  # SAS or the app's identity
        _clients[key] = client
        while len(_clients) > MAX_CLIENTS:
            _clients.popitem(last=False)
        return client


def io_pool() -> ThreadPoolExecutor:
    """The process's pool for storage requests that may run side by side.

    Tasks submitted here must not wait on other tasks of this pool."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=IO_WORKERS, thread_name_prefix="storage-io")
        return _pool


def forget_clients() -> None:
    """Empties the client cache (tests)."""
    with _lock:
        _clients.clear()
