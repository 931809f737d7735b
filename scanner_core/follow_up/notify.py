"""Webhook notifications of what changed, at most once per audit.

When is an audit worth a message: its status became ``failed`` (from anything
else, or on the first audit of an image), or it has a new finding at or above
``NOTIFY_MIN_SEVERITY``. The event is one JSON object (below) POSTed to each
URL of ``NOTIFY_WEBHOOK_URLS``; its ``text`` field is what Slack incoming
webhooks and Teams (connector and workflow "post a message") display.

At most once: before sending, the audit folder gets a ``notification.json``
blob created with ``If-None-Match: *``; only the writer that created it sends,
so a redelivered message (or two instances racing on one) never sends twice.
The blob is then overwritten with each URL's outcome. A crash between the
claim and the send loses that notification: at most once, not at least once.

Never failing the audit: sending happens after ``meta`` is written; each URL
gets ``NOTIFY_ATTEMPTS`` attempts with exponential backoff (tenacity) on
connection errors, timeouts, 408, 429 and 5xx, each bounded by
``NOTIFY_TIMEOUT``; URLs are sent to in parallel; every error is logged (the
URL reduced to its host: webhook URLs carry credentials) and swallowed.

Signed: with ``NOTIFY_WEBHOOK_SECRET`` every POST carries ``X-Signature-256``
and ``X-Signature-Timestamp`` (``signing.py``), so receivers can verify it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import StorageError
from ..models import AuditMeta
from ..storage import NOTIFICATION_BLOB, BlobStore, image_identity, iso8601
from .changes import Key
from .signing import signature_headers

if TYPE_CHECKING:
    from ..config import Settings

EVENT_TYPE = "trivy-scanner.audit-changed"
_MAX_TEXT_IDS = 10


class WebhookRejected(Exception):
    """The receiver answered with a status that retrying cannot change (4xx)."""


class WebhookUnavailable(Exception):
    """The receiver did not answer, or answered 408, 429 or 5xx: worth retrying."""


@dataclass(frozen=True)
class Delivery:
    webhook: int  # 1-based position in NOTIFY_WEBHOOK_URLS
    host: str
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def document(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def should_notify(meta: AuditMeta) -> list[str]:
    """The reasons to notify (empty: do not). ``changes.new`` holds only findings
    at or above ``NOTIFY_MIN_SEVERITY`` (see ``changes.py``)."""
    if meta.changes is None:
        return []
    reasons = []
    if meta.scan_status == "failed" and meta.changes.status_from != "failed":
        reasons.append("status-failed")
    if meta.changes.new:
        reasons.append("new-findings")
    return reasons


def new_findings(meta: AuditMeta) -> list[Key]:
    """The new findings with package and severity, from the meta's ``details``."""
    ids = meta.changes.new if meta.changes else []
    listed = {Key(f.vulnerability_id, f.pkg_name, f.severity) for f in meta.details or [] if f.vulnerability_id in ids}
    found = {key.vulnerability_id for key in listed}
    keys = sorted(listed, key=lambda k: (ids.index(k.vulnerability_id), k.package))
    return keys + [Key(vid, "", "UNKNOWN") for vid in ids if vid not in found]


def audit_link(audit_id: str) -> str:
    """An absolute link on Azure (``WEBSITE_HOSTNAME`` is set by the platform), else root-relative."""
    path = f"/api/audits/{quote(audit_id)}"
    host = os.environ.get("WEBSITE_HOSTNAME")
    return f"https://{host}{path}" if host else path


def build_event(meta: AuditMeta, folder: str, reasons: list[str]) -> dict[str, Any]:
    new = new_findings(meta)
    repository, tag, digest = image_identity(meta.image, meta.image_digest)
    changes = meta.changes.model_dump(by_alias=True) if meta.changes else None
    event: dict[str, Any] = {
        "type": EVENT_TYPE,
        "reasons": reasons,
        "audit-id": meta.audit_id,
        "image": meta.image,
        "repository": repository,
        "tag": tag,
        "digest": digest,
        "status": meta.scan_status,
        "decision": meta.decision,
        "summary": meta.summary,
        "vulnerabilities": meta.vulnerabilities,
        "previous-audit-id": meta.previous_audit_id,
        "changes": changes,
        "new-findings": [{"id": k.vulnerability_id, "package": k.package, "severity": k.severity} for k in new],
        "trivy-db-updated-at": meta.trivy_db_updated_at,
        "scanned-at": iso8601(meta.timestamp),
        "meta": f"{folder}/meta",
        "links": {
            "audit": audit_link(meta.audit_id),
            "previous": audit_link(meta.previous_audit_id) if meta.previous_audit_id else None,
        },
    }
    event["text"] = _text(meta, event, new)
    return event


def _text(meta: AuditMeta, event: dict[str, Any], new: Sequence[Key]) -> str:
    status = (meta.scan_status or "unknown").upper()
    was = (
        f" (was {event['changes']['status-from']})" if event["changes"] and event["changes"].get("status-from") else ""
    )
    lines = [f"Trivy: {meta.image} is {status}{was}."]
    if new:
        ids = ", ".join(f"{k.vulnerability_id} ({k.severity.lower()}, {k.package})" for k in new[:_MAX_TEXT_IDS])
        more = f" and {len(new) - _MAX_TEXT_IDS} more" if len(new) > _MAX_TEXT_IDS else ""
        lines.append(f"New: {ids}{more}.")
    if meta.changes and meta.changes.fixed:
        lines.append(f"Fixed: {', '.join(meta.changes.fixed[:_MAX_TEXT_IDS])}.")
    if meta.summary:
        lines.append(meta.summary)
    lines.append(f"Audit {meta.audit_id}: {event['links']['audit']}")
    return "\n".join(lines)


class Notifier:
    """Sends one audit's event to every configured webhook, once."""

    def __init__(
        self,
        urls: Sequence[str],
        blob_store: BlobStore,
        *,
        attempts: int = 4,
        timeout_s: float = 10.0,
        backoff_multiplier: float = 0.5,
        backoff_max: float = 8.0,
        secret: str | None = None,
    ) -> None:
        """``secret``: ``NOTIFY_WEBHOOK_SECRET``; each POST is then signed (``signing.py``)."""
        self.urls = list(urls)
        self._secret = secret
        self.blob_store = blob_store
        self.attempts, self.timeout_s = attempts, timeout_s
        self.backoff_multiplier, self.backoff_max = backoff_multiplier, backoff_max

    @classmethod
    def from_settings(cls, settings: Settings, blob_store: BlobStore) -> Notifier:
        """The scanner's notifier: its webhooks, attempts, timeout and signing secret."""
        secret = settings.notify_webhook_secret
        return cls(
            [url.get_secret_value() for url in settings.notify_webhook_urls],
            blob_store,
            attempts=settings.notify_attempts,
            timeout_s=settings.notify_timeout_s,
            secret=secret.get_secret_value() if secret else None,
        )

    def send_once(self, folder: str, event: dict[str, Any]) -> list[Delivery] | None:
        """Claims the audit's notification and sends it; ``None`` when it was
        claimed before (already sent, or being sent, by another delivery)."""
        marker = f"{folder}/{NOTIFICATION_BLOB}"
        claim = {"audit-id": event["audit-id"], "state": "sending", "claimed-at": int(time.time())}
        if not self.blob_store.create_bytes(marker, _json(claim), "application/json"):
            return None
        body = json.dumps(event).encode("utf-8")
        with ThreadPoolExecutor(max_workers=min(8, len(self.urls)) or 1) as pool:
            deliveries = list(pool.map(lambda item: self._deliver(item[0], item[1], body), enumerate(self.urls, 1)))
        outcome = claim | {
            "state": "sent" if all(d.delivered for d in deliveries) else "failed",
            "finished-at": int(time.time()),
            "reasons": event["reasons"],
            "deliveries": [d.document() for d in deliveries],
        }
        try:
            self.blob_store.upload_bytes(marker, _json(outcome), "application/json")
        except StorageError:
            pass  # sent all the same; the claim (state "sending") still prevents a second send
        return deliveries

    def _deliver(self, position: int, url: str, body: bytes) -> Delivery:
        host = urlsplit(url).hostname or "?"
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_multiplier, max=self.backoff_max),
            retry=retry_if_exception(lambda error: isinstance(error, WebhookUnavailable)),
            reraise=True,
        )
        statuses: list[int | None] = []

        def attempt() -> int:
            try:
                headers = {"Content-Type": "application/json", "User-Agent": "trivy-scanner-notify"}
                if self._secret is not None:  # signed afresh on each attempt: a retry has a new timestamp
                    headers |= signature_headers(self._secret, body)
                response = requests.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=self.timeout_s,
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                statuses.append(None)
                raise WebhookUnavailable(type(error).__name__) from None  # its text quotes the URL
            statuses.append(response.status_code)
            if 200 <= response.status_code < 300:
                return response.status_code
            if response.status_code in (408, 429) or response.status_code >= 500:
                raise WebhookUnavailable(f"HTTP {response.status_code}")
            raise WebhookRejected(f"HTTP {response.status_code}")

        try:
            status = retrying(attempt)
        except (WebhookUnavailable, WebhookRejected) as error:
            return Delivery(position, host, False, _attempts(retrying.statistics), statuses[-1], str(error))
        return Delivery(position, host, True, _attempts(retrying.statistics), status)


def _attempts(statistics: dict[str, Any]) -> int:
    return int(statistics.get("attempt_number", 1))


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2).encode("utf-8")
