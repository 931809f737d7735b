"""A per-process cache of the validated configuration.

The function app builds a scanner per invocation; the configuration is the
environment plus the YAML file (and the policy file), which change only on a restart (an app setting)
or when the file is replaced. It is therefore parsed again only when either
changed: the key is the whole environment and the file's identity (inode, size,
mtime). A configuration error is never cached: it is raised again each time.
"""

from __future__ import annotations

import os
import threading

from .loader import ScannerConfig, load_config

_lock = threading.Lock()
_cached: tuple[object, ScannerConfig] | None = None  # explicit per-process cache: (key, config)


def _file_identity(path: str | None) -> tuple[int, int, int] | None:
    if not path:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None  # load_config reports it
    return status.st_ino, status.st_size, status.st_mtime_ns


def load_config_cached() -> ScannerConfig:
    """``load_config()``, or the configuration it returned last in this process if
    neither the environment nor the YAML file has changed since."""
    global _cached
    environment = tuple(sorted(os.environ.items()))
    files = (_file_identity(os.environ.get("TRIVY_CONFIG_PATH")), _file_identity(os.environ.get("POLICY_PATH")))
    key = (environment, files)
    with _lock:
        if _cached is not None and _cached[0] == key:
            return _cached[1]
    config = load_config()
    with _lock:
        _cached = (key, config)
    return config


def forget_config() -> None:
    """Empties the cache (tests)."""
    global _cached
    with _lock:
        _cached = None
