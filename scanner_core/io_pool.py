"""The process's thread pool for I/O that may run side by side (an explicit per-process cache).

Storage requests beside the report and ``meta`` (the audit index's lookups and writes, the
previous audit's look-up, the inventory's upload, the image record) and the trivy server's
``/version`` while trivy runs. Every layer that overlaps I/O takes it from here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

IO_WORKERS = 8

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def io_pool() -> ThreadPoolExecutor:
    """The process's pool for requests that may run side by side.

    Tasks submitted here must not wait on other tasks of this pool."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=IO_WORKERS, thread_name_prefix="storage-io")
        return _pool
