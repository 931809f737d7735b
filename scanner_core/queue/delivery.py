"""What happens to one delivered message: the rules the queue trigger and the
stand-alone listener share (one implementation for both).

* A request that can never succeed (bad message, invalid reference, image
  not found, unauthorized) is quarantined at once: the original message and
  its reason go to the poison queue, ``meta`` says ``audit-failed`` where an
  audit id is known, and the delivery completes normally.
* A transient failure is retried with exponential backoff (``backoff.py``):
  the request is sent again, invisible for the delay, with its attempt number
  and first-attempt time in the headers, and the delivery completes normally.
  Only the attempt number decides the last attempt (``RETRY_MAX_ATTEMPTS``),
  which writes ``meta`` with the reason and quarantines the request, saying how
  many attempts were made over how long. The dequeue count does not: a
  delivery that ran and failed transiently is re-sent whatever its count, so
  deliveries that died with their instance (scale-in, a deployment, an
  out-of-memory kill) do not eat the request's backoff.
* The dequeue count bounds what never finished. Each copy of a request gets
  ``maxDequeueCount`` deliveries from the platform; a worker that dies on each
  of them leaves no outcome, and the next delivery (the listener's, or the
  host's poisoning) ends it in quarantine with that reason and its attempt
  count instead of looping. New copies are made only by finished, transient
  attempts, so a request is delivered at most ``maxDequeueCount x
  RETRY_MAX_ATTEMPTS`` times (plus the listener's quarantining delivery).
* Only when the retry cannot be queued (the queue itself is down) does the
  delivery fail (``RetryableFailure``): the platform (or the listener) makes
  it visible again, and its dequeue count bounds it; on the copy's last
  delivery the request is quarantined (``meta`` written) instead, since the
  platform would otherwise poison it without a reason.
* The handler returns ``None`` or an outcome, never raises for a request that
  was dealt with: the Python worker fails an invocation that returns a value
  without a ``$return`` binding (the trigger discards it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from datetime import datetime

from ..audit import AuditOutcome, ScanRequest
from ..core import Scanner
from ..errors import FailureKind, RequestError, ScanFailed, ScannerError
from ..log import ScanLogger
from .backoff import RetryPolicy, RetryState
from .messages import parse_message, retry_message
from .quarantine import bounded_quarantine


class RetryableFailure(ScannerError):
    """Raised to make the platform deliver the message again (or poison it)."""


@dataclass(frozen=True)
class Delivery:
    """One queue message as the trigger received it."""

    body: bytes
    message_id: str | None
    dequeue_count: int
    inserted_at: datetime | None = None


# (message text, delay in seconds): puts the request back on the trigger queue,
# invisible for the delay; raises ``ScannerError`` (``StorageError``) when it cannot.
RetryLater = Callable[[str, int], None]


@dataclass(frozen=True)
class _Attempt:
    state: RetryState
    request: ScanRequest | None = None


def quarantine_record(
    delivery: Delivery,
    reason: str,
    *,
    audit_id: str | None,
    failure_reason: str,
    kind: FailureKind = FailureKind.PERMANENT,
    attempt: _Attempt | None = None,
) -> str:
    """The poison-queue entry for a request quarantined by the scanner: the original
    body (an operator can re-queue it as is) and why it was set aside. A request
    that was retried is given back as a fresh envelope, without its retry headers."""
    now = int(time.time())
    state = attempt.state if attempt else RetryState()
    original = delivery.body.decode("utf-8", "replace")
    if attempt and attempt.request is not None and state.attempt > 1:
        original = retry_message(attempt.request, RetryState()).to_text()
    return json.dumps(
        {
            "original-message": original,
            "reason": reason,
            "failure-reason": failure_reason,
            "failure-kind": kind.value,
            "audit-id": audit_id,
            "message-id": delivery.message_id,
            "dequeue-count": delivery.dequeue_count,
            "attempts": state.attempt,
            "first-attempt-at": state.first_attempt_at or now,
            "retried-for-seconds": state.elapsed_seconds(now),
            "quarantined-at": now,
        }
    )


def handle_delivery(
    delivery: Delivery,
    scanner: Scanner,
    *,
    max_dequeue_count: int,
    quarantine: Callable[[str], None],
    retry_later: RetryLater | None = None,
) -> AuditOutcome | None:
    """Processes one delivery; see the module docstring for the rules. Without
    ``retry_later`` a transient failure raises ``RetryableFailure`` (the platform's
    fixed redelivery), as when the retry cannot be queued."""
    log = scanner.logger.bind(message_id=delivery.message_id, dequeue_count=delivery.dequeue_count)
    # Every entry fits in a queue message: a too-big one keeps the body in Blob (quarantine.py).
    quarantine = bounded_quarantine(quarantine, scanner.blob_store, scanner.short_id, delivery.message_id)
    if delivery.dequeue_count > max_dequeue_count:
        return _too_many_deliveries(delivery, scanner, max_dequeue_count, quarantine, log)
    try:
        request, state = parse_message(delivery.body, delivery.message_id, delivery.inserted_at)
    except RequestError as error:  # an unusable message: no audit folder can be named
        log.error("invalid scan request quarantined", fields={"error": str(error)})
        quarantine(quarantine_record(delivery, str(error), audit_id=None, failure_reason=f"invalid-{error.field}"))
        return None

    return deliver_request(delivery, request, state, scanner, max_dequeue_count=max_dequeue_count,
                           quarantine=quarantine, retry_later=retry_later, log=log)


def deliver_request(
    delivery: Delivery,
    request: ScanRequest,
    state: RetryState,
    scanner: Scanner,
    *,
    max_dequeue_count: int,
    quarantine: Callable[[str], None],
    retry_later: RetryLater | None,
    log: ScanLogger,
    reuse_succeeded: bool = True,
) -> AuditOutcome | None:
    """One parsed request: scanned, then retried or quarantined by the rules above. A batch
    (``batches.py``) hands each of its digests here, with the digest's own envelope as
    ``delivery.body``, so that its retry and quarantine entry are the digest's alone.
    ``reuse_succeeded``: a request whose audit already succeeded is answered from its meta
    (one read first; a batch's first delivery skips it: none of its digests can have one)."""
    policy = RetryPolicy.from_settings(scanner.config.settings)
    attempt = _Attempt(state, request)
    final = policy.is_last(state.attempt)  # the attempts decide; the dequeue count bounds only crashes
    log = log.bind(attempt=state.attempt)
    try:
        outcome = scanner.scan(request, final_attempt=final, reuse_succeeded=reuse_succeeded)
    except RequestError as error:  # an invalid audit id
        log.error("invalid scan request quarantined", fields={"error": str(error)})
        quarantine(quarantine_record(delivery, str(error), audit_id=None, failure_reason=f"invalid-{error.field}"))
        return None
    except ScannerError as error:  # AuditNotRecorded: not even meta could be written
        _transient(delivery, attempt, policy, final, "not-recorded", str(error), (quarantine, retry_later), log,
                   (scanner, max_dequeue_count))
        return None

    if outcome.failure is None:
        return outcome
    description = outcome.meta.failure_description or str(outcome.failure)
    reason = outcome.meta.failure_reason or "transient"
    if outcome.retry_may_help:
        _transient(delivery, attempt, policy, final, reason, description, (quarantine, retry_later), log,
                   (scanner, max_dequeue_count))
        return outcome
    quarantine(quarantine_record(delivery, description, audit_id=request.audit_id,
                                 failure_reason=outcome.meta.failure_reason or "permanent", attempt=attempt))
    log.info("request quarantined", fields={"reason": outcome.meta.failure_reason})
    return outcome


def _too_many_deliveries(
    delivery: Delivery, scanner: Scanner, max_dequeue_count: int, quarantine: Callable[[str], None], log: ScanLogger
) -> None:
    """No attempt finished: ``meta`` says so where the request names an audit, then quarantine."""
    reason = (
        f"delivered {delivery.dequeue_count} times without an outcome (maximum {max_dequeue_count}): "
        "the worker ended during each attempt (out of memory, instance recycled), or the queue was "
        "unreachable each time a retry was to be queued"
    )
    audit_id: str | None = None
    try:
        request, state = parse_message(delivery.body, delivery.message_id, delivery.inserted_at)
        audit_id = request.audit_id
        scanner.record_failure(request, ScanFailed(reason, kind=FailureKind.TRANSIENT, reason="too-many-deliveries"))
    except ScannerError as error:  # an unusable message, or meta not writable: the quarantine entry says why
        log.warning("no meta for a message delivered too often", fields={"error": str(error)})
        state = RetryState()
    log.error("message quarantined after too many deliveries", fields={"reason": reason})
    quarantine(quarantine_record(delivery, reason, audit_id=audit_id, failure_reason="too-many-deliveries",
                                 kind=FailureKind.TRANSIENT, attempt=_Attempt(state)))


def _transient(
    delivery: Delivery,
    attempt: _Attempt,
    policy: RetryPolicy,
    final: bool,
    reason: str,
    description: str,
    senders: tuple[Callable[[str], None], RetryLater | None],
    log: ScanLogger,
    bound: tuple[Scanner, int],
) -> None:
    """A transient failure: retried after the backoff delay, or quarantined on the last attempt."""
    now = int(time.time())
    state, request = attempt.state, cast(ScanRequest, attempt.request)  # parsed before any scan
    quarantine, retry_later = senders
    if final:
        text = f"gave up after {state.attempt} attempt(s) over {state.elapsed_seconds(now)} s: {reason}: {description}"
        quarantine(quarantine_record(delivery, text, audit_id=request.audit_id, failure_reason=reason,
                                     kind=FailureKind.TRANSIENT, attempt=attempt))
        log.error("transient failure on the last attempt; quarantined", fields={"reason": reason})
        return
    delay = policy.delay(state.attempt)
    try:
        if retry_later is None:
            raise ScannerError("no queue to send it to was given")
        retry_later(retry_message(request, state.next(now)).to_text(), delay)
    except ScannerError as error:
        scanner, max_dequeue_count = bound
        text = (f"attempt {state.attempt} of {policy.max_attempts} failed ({reason}) and its retry could not be "
                f"queued ({error})")
        if delivery.dequeue_count < max_dequeue_count:
            raise RetryableFailure(f"{text}; delivery {delivery.dequeue_count} fails so the platform delivers it "
                                   "again") from None
        # The copy's last delivery: the platform would poison it without a reason; the quarantine says why.
        try:
            scanner.record_failure(request, ScanFailed(f"{text}: {description}", kind=FailureKind.TRANSIENT,
                                                       reason=reason))
        except ScannerError as meta_error:
            log.warning("no meta for a request whose retry could not be queued", fields={"error": str(meta_error)})
        quarantine(quarantine_record(delivery, f"{text} on delivery {delivery.dequeue_count} of "
                                     f"{max_dequeue_count}: {description}", audit_id=request.audit_id,
                                     failure_reason=reason, kind=FailureKind.TRANSIENT, attempt=attempt))
        log.error("transient failure and no retry could be queued on the last delivery; quarantined",
                  fields={"reason": reason})
        return
    log.warning(
        "transient failure; retried later",
        fields={"reason": reason, "next-attempt": state.attempt + 1, "delay-seconds": delay},
    )
