"""Values of ``host.json`` the code must agree with, read from the deployed file.

App settings of the form ``AzureFunctionsJobHost__extensions__queues__<name>``
override host.json on the platform, so they win here too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # a type only: importing queue.messages at a cold start costs pydantic (~100 ms)
    from ..queue import QueueEncoding

# The function app's root (where host.json lives): scanner_core sits at its top.
APP_ROOT = Path(__file__).resolve().parents[2]
PLATFORM_DEFAULT_MAX_DEQUEUE_COUNT = 5
_OVERRIDE_PREFIX = "AzureFunctionsJobHost__extensions__queues__"


def _queues_section(app_root: Path) -> dict[str, Any]:
    try:
        document = json.loads((app_root / "host.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cast(dict[str, Any], document.get("extensions", {}).get("queues", {}))


def _setting(app_root: Path, name: str) -> Any:
    override = os.environ.get(_OVERRIDE_PREFIX + name)
    return override if override is not None else _queues_section(app_root).get(name)


def max_dequeue_count(app_root: Path) -> int:
    """After a failed attempt with ``dequeueCount >= this``, the host poisons the message."""
    value = _setting(app_root, "maxDequeueCount")
    try:
        return int(value) if value is not None else PLATFORM_DEFAULT_MAX_DEQUEUE_COUNT
    except ValueError:
        return PLATFORM_DEFAULT_MAX_DEQUEUE_COUNT


def message_encoding(app_root: Path) -> QueueEncoding:
    value = str(_setting(app_root, "messageEncoding") or "base64").lower()
    return "none" if value == "none" else "base64"
