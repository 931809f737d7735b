"""The monitor loop (issue 10): watching repositories, rescans, change notifications.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "AuditFollowUp": ".follow_up",
    "LookBack": ".follow_up",
    "Notifier": ".notify",
    "NOTIFICATION_BLOB": ".notify",
    "decide": ".decision",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
