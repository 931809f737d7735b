"""Configuration: the environment (pydantic-settings) and the YAML file at
``TRIVY_CONFIG_PATH``, validated as a whole.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "ScannerConfig": ".loader",
    "load_config": ".loader",
    "load_config_cached": ".cache",
    "describe_error": ".problems",
    "WatchEntry": ".watchlist",
    "DEFAULT_TRIVY_TIMEOUT_MS": ".settings",
    "Settings": ".settings",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
