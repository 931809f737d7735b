"""Lazy public faces for the subpackages.

Each subpackage's ``__init__`` names what the rest of the code may use and the
private module that defines it. A name's module is imported on first access
(PEP 562), so ``from scanner_core.storage import validate_audit_id`` loads
``storage/layout.py`` without the Azure SDK behind ``storage/blob.py``: the
faces cost nothing at a cold start, and a file can be split later without
touching any caller.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose ``exports`` map each
    public name to the relative module (``".blob"``) that defines it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
