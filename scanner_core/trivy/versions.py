"""A per-process cache of ``trivy --version``, keyed by the executable file.

Asking the version costs a second trivy process (~90 ms measured), and the
function app builds a ``Trivy`` per invocation. The answer cannot change while
the file does not, so it is kept for the process's lifetime under the key
(resolved path, size, mtime): replacing the binary (a new deployment, a new
private copy) changes the key and asks again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

_lock = threading.Lock()
_versions: dict[tuple[str, int, int], str] = {}  # explicit per-process cache


def executable_key(executable: Path) -> tuple[str, int, int] | None:
    """The cache key of an executable, or ``None`` if it cannot be stat'ed."""
    try:
        resolved = os.path.realpath(executable)
        status = os.stat(resolved)
    except OSError:
        return None
    return resolved, status.st_size, status.st_mtime_ns


def cached_version(executable: Path, ask: Callable[[], str]) -> str:
    """The version of ``executable``: from the cache when its file is unchanged,
    else from ``ask()`` (whose errors propagate and are not cached)."""
    key = executable_key(executable)
    if key is not None:
        with _lock:
            known = _versions.get(key)
        if known is not None:
            return known
    version = ask()
    if key is not None:
        with _lock:
            _versions[key] = version
    return version


def forget_versions() -> None:
    """Empties the cache (tests)."""
    with _lock:
        _versions.clear()
