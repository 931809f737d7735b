"""Quarantine entries that always fit in a queue message.

A queue message holds at most 64 KiB. An entry carries the original body plus
the reason, so a body near the limit (or one whose JSON escaping grows it)
would make an entry the poison queue refuses, and the request would be lost
to the operator. So the entry's size is checked as if base64-encoded (the
stricter of the two ``messageEncoding`` values: it fits whichever the host
uses); one that would not fit stores the original body in Blob Storage
(``trivy-{id8}/quarantine/<message id>``) and carries its path, SHA-256 and
length instead of ``original-message``. Either form is re-queued as docs/operations.md
describes (``python -m scanner_core requeue``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RequestError
from ..storage import BlobStore, scanner_folder

QUEUE_MESSAGE_LIMIT = 64 * 1024
_MAX_REASON_CHARACTERS = 4096
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def encoded_size(text: str) -> int:
    """The size of ``text`` on the queue, base64-encoded: 4 bytes for every 3 (started)."""
    return 4 * -(-len(text.encode("utf-8")) // 3)


def fits(text: str) -> bool:
    return encoded_size(text) <= QUEUE_MESSAGE_LIMIT


def quarantine_blob(scanner_short_id: str, message_id: str | None, original: bytes) -> str:
    """``trivy-{id8}/quarantine/<message id>`` (the body's SHA-256 when there is no id)."""
    name = _SAFE_NAME.sub("-", message_id) if message_id else hashlib.sha256(original).hexdigest()
    return f"{scanner_folder(scanner_short_id)}/quarantine/{name}"


def bounded_quarantine(
    quarantine: Callable[[str], None], store: BlobStore, scanner_short_id: str, message_id: str | None
) -> Callable[[str], None]:
    """``quarantine``, with entries that would not fit moved to their blob form first.
    A failure to store the body raises (``StorageError``): the delivery is then retried."""

    def send(entry_text: str) -> None:
        if fits(entry_text):
            quarantine(entry_text)
            return
        entry: dict[str, Any] = json.loads(entry_text)
        original = str(entry.pop("original-message", "")).encode("utf-8")
        name = quarantine_blob(scanner_short_id, message_id, original)
        store.upload_bytes(name, original, "application/octet-stream")
        entry |= {
            "original-message-blob": name,
            "original-message-sha256": hashlib.sha256(original).hexdigest(),
            "original-message-bytes": len(original),
            "reason": str(entry.get("reason", ""))[:_MAX_REASON_CHARACTERS],
        }
        quarantine(json.dumps(entry))

    return send


def requeue_text(entry: Mapping[str, Any], store: BlobStore) -> str:
    """The body to put back on the trigger queue, from either form of an entry; raises
    ``RequestError`` naming the field when the entry or its blob is not usable."""
    if isinstance(entry.get("original-message"), str):
        return str(entry["original-message"])
    name = entry.get("original-message-blob")
    if not isinstance(name, str) or not name:
        raise RequestError("original-message", "the entry holds neither original-message nor original-message-blob")
    data = store.download_bytes(name)
    if data is None:
        raise RequestError("original-message-blob", f"{name} does not exist (deleted, or another container?)")
    if hashlib.sha256(data).hexdigest() != entry.get("original-message-sha256"):
        raise RequestError("original-message-sha256", f"does not match the content of {name}")
    return data.decode("utf-8")
