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
    "decision_of": ".gate",
    "policy_fields": ".gate",
    "IMAGE_PUSHED": ".events",
    "IgnoredEvent": ".events",
    "PushHandler": ".events",
    "PushedImage": ".events",
    "parse_image_pushed": ".events",
    "scan_fingerprint": ".fingerprint",
    "tag_label": ".labels",
    "ImageRecord": ".records",
    "MonitorStore": ".records",
    "Seen": ".records",
    "Rescanner": ".rescan",
    "RescanResult": ".rescan",
    "due_for_rescan": ".rescan",
    "AuditReuse": ".reuse",
    "Enqueue": ".watch",
    "Watcher": ".watch",
    "WatchResult": ".watch",
    "WatchEntry": ".watchlist",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
