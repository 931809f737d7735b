"""Per-process caches of storage clients.

A ``ContainerClient`` holds a connection pool; building one per invocation
(the function app builds a ``Scanner`` per message) throws the pool away and
pays a new TCP (and, on Azure, TLS) handshake on the first request of every
scan. Clients are thread-safe, so one per (URL, options) serves the whole
process. The cache is bounded; an evicted client is not closed (another
thread may still use it) but left to the garbage collector.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from azure.storage.blob import ContainerClient

from .container import container_client

MAX_CLIENTS = 32

_lock = threading.Lock()
_clients: OrderedDict[tuple[str, tuple[tuple[str, Any], ...]], ContainerClient] = OrderedDict()


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


def forget_clients() -> None:
    """Empties the client cache (tests)."""
    with _lock:
        _clients.clear()
