"""Signatures of the webhook events (``NOTIFY_WEBHOOK_SECRET``), as GitHub and Stripe sign theirs.

Each POST carries ``X-Signature-Timestamp: <unix seconds>`` and
``X-Signature-256: sha256=<hex HMAC-SHA256>`` computed with the secret over
``<timestamp>.<raw body>``: the timestamp is inside the signed text, so a
receiver that checks the signature and refuses old timestamps refuses both
forged and replayed events. Every attempt is signed afresh (a retry has a new
timestamp). The secret is never logged, quoted or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Signature-256"
TIMESTAMP_HEADER = "X-Signature-Timestamp"


def signature_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers for ``body``, signed now (or at ``timestamp``)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode("utf-8"), stamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"sha256={digest}"}
