"""The monitor loop (issue 10): watching repositories, ACR's push events, rescans,
dedup (answering a request from an earlier audit) and the images' records.

What each audit adds afterwards (the policy's decision, changes, approvals, webhooks) is
the follow-up's job: ``scanner_core/follow_up/``.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "IMAGE_PUSHED": ".events",
    "IgnoredEvent": ".events",
    "PushHandler": ".events",
    "PushedImage": ".events",
    "parse_image_pushed": ".events",
    "scan_fingerprint": ".fingerprint",
    "ImageRecord": ".records",
    "MonitorStore": ".records",
    "Seen": ".records",
    "EnqueueBatch": ".rescan",
    "Rescanner": ".rescan",
    "RescanResult": ".rescan",
    "due_for_rescan": ".rescan",
    "AuditReuse": ".reuse",
    "Enqueue": ".watch",
    "Watcher": ".watch",
    "WatchResult": ".watch",
    "read_watch_status": ".watch",
    "watch_status_blob": ".watch",
    "write_watch_status": ".watch",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
