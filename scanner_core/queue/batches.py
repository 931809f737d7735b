"""Batches of rescans (issue 26): many digests in one message, each still its own audit.

The rescan timer packs the digests due into messages of at most ``RESCAN_BATCH_SIZE``
(and at most one queue message, 64 KiB base64-encoded: ``pack_batches``). One delivery
of a batch then amortises what every invocation pays once (the scanner, its clients, the
configuration) and asks one loopback trivy server that keeps the DB open for the batch
(``Scanner.serving_rescans``), instead of a ``trivy sbom`` opening the DB per rescan.

What a batch guarantees (``handle_message``): no digest is lost and none gets two audits.

* **First delivery**: the digests are scanned one after the other, each as its own request
  (``delivery.deliver_request``, with the digest's own envelope as its body): its own audit
  id and folder, and its own retry: a transient failure re-sends *that digest alone* as a
  single message with its backoff and attempt count, a permanent one quarantines that
  digest alone (its entry's ``original-message`` is the digest's envelope, re-queueable
  as is). An inventory that is gone falls back to a pull scan of that digest alone.
* **Bounded in time**: no digest is started after ``RESCAN_BATCH_SECONDS``; the ones left
  go on as a new batch message (the same time and audit ids, so the same folders).
* **A redelivered batch** (dequeue count above 1: the worker died or the invocation failed
  mid-batch) is not scanned again as a batch: each digest whose audit is not recorded as
  succeeded is re-sent as a single message (same audit id and folder), and the ones that
  are are left alone. So a digest that kills its worker (e.g. out of memory) is set aside by
  its own dequeue count without taking the others with it, the digests done before the
  crash are not redone, and the ones not reached are delivered on their own.
* When no message can be sent (the queue is down) the delivery fails and the platform
  delivers the batch again; on the copy's last delivery the digests left are quarantined
  together, each with an ``audit-failed`` meta saying why.

A digest re-sent while its first attempt was still running (a worker that lost its message's
visibility) writes the same folder: at most one audit per digest, whatever the order.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..audit import AuditOutcome, ScanRequest
from ..core import Scanner
from ..errors import FailureKind, RequestError, ScanFailed, ScannerError
from ..log import ScanLogger
from .backoff import RetryState
from .delivery import Delivery, RetryableFailure, RetryLater, deliver_request, handle_delivery, quarantine_record
from .messages import BatchMessage, batch_message, parse_batch, retry_message
from .quarantine import bounded_quarantine, fits

Rescan = tuple[str, str, "str | None"]  # (image by digest, audit id, tag label)


def pack_batches(rescans: list[Rescan], created_at: float, max_count: int) -> list[BatchMessage]:
    """``rescans`` in order, as batch messages of at most ``max_count`` digests, each fitting in
    one queue message once base64-encoded (the stricter ``messageEncoding``)."""
    batches: list[BatchMessage] = []
    start = 0
    while start < len(rescans):
        end = min(start + max_count, len(rescans))
        batch = batch_message(rescans[start:end], created_at)
        while end - start > 1 and not fits(batch.to_text()):
            end = start + (end - start) // 2
            batch = batch_message(rescans[start:end], created_at)
        batches.append(batch)
        start = end
    return batches


def handle_message(
    delivery: Delivery,
    scanner: Scanner,
    *,
    max_dequeue_count: int,
    quarantine: Callable[[str], None],
    retry_later: RetryLater | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AuditOutcome | None:
    """A delivered message of either form: a batch (this module) or one request (``delivery.py``)."""
    try:
        batch = parse_batch(delivery.body)
    except RequestError as error:
        log = scanner.logger.bind(message_id=delivery.message_id)
        log.error("invalid rescan batch quarantined", fields={"error": str(error)})
        bounded = bounded_quarantine(quarantine, scanner.blob_store, scanner.short_id, delivery.message_id)
        bounded(quarantine_record(delivery, str(error), audit_id=None, failure_reason=f"invalid-{error.field}"))
        return None
    if batch is None:
        return handle_delivery(delivery, scanner, max_dequeue_count=max_dequeue_count, quarantine=quarantine,
                               retry_later=retry_later)  # fmt: skip
    BatchDelivery(delivery, batch, scanner, max_dequeue_count, quarantine, retry_later).run(clock)
    return None


class BatchDelivery:
    """One delivery of a batch (see the module docstring)."""

    def __init__(
        self, delivery: Delivery, batch: BatchMessage, scanner: Scanner, max_dequeue_count: int,
        quarantine: Callable[[str], None], retry_later: RetryLater | None,
    ) -> None:
        self.delivery = delivery
        self.batch = batch
        self.scanner = scanner
        self.max_dequeue_count = max_dequeue_count
        self.quarantine = quarantine
        self.retry_later = retry_later
        self.requests = batch.requests()
        self.log: ScanLogger = scanner.logger.bind(message_id=delivery.message_id,
                                                   dequeue_count=delivery.dequeue_count, batch=len(self.requests))

    def run(self, clock: Callable[[], float]) -> None:
        if self.delivery.dequeue_count > 1:
            self.split()
            return
        deadline = clock() + self.scanner.config.settings.rescan_batch_seconds
        with self.scanner.serving_rescans(len(self.requests)):
            for index, request in enumerate(self.requests):
                if index and clock() >= deadline:
                    self.log.info("batch time used up; the rest goes on as a new batch",
                                  fields={"done": index, "left": len(self.requests) - index})  # fmt: skip
                    self.send([self.batch.rest(self.requests[index:]).to_text()], self.requests[index:])
                    return
                self.deliver(index, request)

    def deliver(self, index: int, request: ScanRequest) -> None:
        """One digest, as if it had come alone: its own retry and quarantine entry."""
        single = Delivery(body=retry_message(request, RetryState()).to_text().encode("utf-8"),
                          message_id=f"{self.delivery.message_id}-{index}",
                          dequeue_count=self.delivery.dequeue_count, inserted_at=self.delivery.inserted_at)
        quarantine = bounded_quarantine(self.quarantine, self.scanner.blob_store, self.scanner.short_id,
                                        single.message_id)  # fmt: skip
        deliver_request(single, request, RetryState(), self.scanner, max_dequeue_count=self.max_dequeue_count,
                        quarantine=quarantine, retry_later=self.retry_later,
                        log=self.log.bind(audit_id=request.audit_id),
                        # A first delivery (the only kind that scans): no digest has an audit yet,
                        # so the read that answers a redelivery from its meta is skipped.
                        reuse_succeeded=self.delivery.dequeue_count > 1)  # fmt: skip

    def split(self) -> None:
        """A redelivered batch: each digest not recorded as succeeded goes on as a single message."""
        left = [request for request in self.requests if self.scanner.succeeded_audit(request) is None]
        self.log.warning("batch delivered again: its digests not done go on one by one",
                         fields={"done": len(self.requests) - len(left), "left": len(left)})  # fmt: skip
        self.send([retry_message(request, RetryState()).to_text() for request in left], left)

    def send(self, texts: list[str], requests: list[ScanRequest]) -> None:
        """Puts ``texts`` on the trigger queue; when it cannot, fails the delivery (redelivered, then
        split) or, on the copy's last delivery, quarantines ``requests`` with a meta each."""
        try:
            if self.retry_later is None:
                raise ScannerError("no queue to send it to was given")
            for text in texts:
                self.retry_later(text, 0)
        except ScannerError as error:
            reason = f"the batch's digests could not be handed on ({error})"
            if self.delivery.dequeue_count < self.max_dequeue_count:
                raise RetryableFailure(f"{reason}; the platform delivers the batch again") from None
            self.give_up(reason, requests)

    def give_up(self, reason: str, requests: list[ScanRequest]) -> None:
        text = f"{reason} on delivery {self.delivery.dequeue_count} of {self.max_dequeue_count}"
        for request in requests:
            try:
                self.scanner.record_failure(request, ScanFailed(text, kind=FailureKind.TRANSIENT, reason="not-queued"))
            except ScannerError as meta_error:
                self.log.warning("no meta for a digest of a batch", fields={"error": str(meta_error)})
        remaining = Delivery(body=self.batch.rest(requests).to_text().encode("utf-8"),
                             message_id=self.delivery.message_id, dequeue_count=self.delivery.dequeue_count,
                             inserted_at=self.delivery.inserted_at)  # fmt: skip
        bounded = bounded_quarantine(self.quarantine, self.scanner.blob_store, self.scanner.short_id,
                                     self.delivery.message_id)  # fmt: skip
        bounded(quarantine_record(remaining, text, audit_id=None, failure_reason="not-queued",
                                  kind=FailureKind.TRANSIENT))  # fmt: skip
        self.log.error("batch's digests quarantined: none could be handed on", fields={"left": len(requests)})
