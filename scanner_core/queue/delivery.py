"""What the queue trigger does with one delivery, under the platform's rules.

* A request that can never succeed (bad message, invalid reference, image
  not found, unauthorized) is quarantined at once: the original message and
  its reason go to the poison queue, ``meta`` says ``audit-failed`` where an
  audit id is known, and the invocation returns normally, so it is not retried.
* A transient failure raises ``RetryableFailure``: the host makes the
  message visible again after the visibility timeout, and after the last
  allowed attempt moves it to ``<queue>-poison`` itself. On that last attempt
  the core writes ``meta`` first, so readers learn why.
* The handler returns ``None``: the Python worker fails an invocation that
  returns a value without a ``$return`` binding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ..audit import AuditOutcome
from ..core import Scanner
from ..errors import FailureKind, RequestError, ScannerError
from .messages import request_from_message


class RetryableFailure(ScannerError):
    """Raised to make the platform deliver the message again (or poison it)."""


@dataclass(frozen=True)
class Delivery:
    """One queue message as the trigger received it."""

    body: bytes
    message_id: str | None
    dequeue_count: int
    inserted_at: datetime | None = None


def quarantine_record(delivery: Delivery, reason: str, *, audit_id: str | None, failure_reason: str) -> str:
    """The poison-queue entry for a request quarantined by the scanner: the original
    body verbatim (an operator can re-queue it as is) and why it was set aside."""
    return json.dumps(
        {
            "original-message": delivery.body.decode("utf-8", "replace"),
            "reason": reason,
            "failure-reason": failure_reason,
            "failure-kind": FailureKind.PERMANENT.value,
            "audit-id": audit_id,
            "message-id": delivery.message_id,
            "dequeue-count": delivery.dequeue_count,
            "quarantined-at": int(time.time()),
        }
    )


def handle_delivery(
    delivery: Delivery,
    scanner: Scanner,
    *,
    max_dequeue_count: int,
    quarantine: Callable[[str], None],
) -> AuditOutcome | None:
    """Processes one delivery; see the module docstring for the rules."""
    log = scanner.logger.bind(message_id=delivery.message_id, dequeue_count=delivery.dequeue_count)
    try:
        request = request_from_message(delivery.body, delivery.message_id, delivery.inserted_at)
        final_attempt = delivery.dequeue_count >= max_dequeue_count
        outcome = scanner.scan(request, final_attempt=final_attempt, reuse_succeeded=True)
    except RequestError as error:  # an unusable message or audit id: no audit folder can be named
        log.error("invalid scan request quarantined", fields={"error": str(error)})
        quarantine(quarantine_record(delivery, str(error), audit_id=None, failure_reason=f"invalid-{error.field}"))
        return None
    except ScannerError as error:  # AuditNotRecorded and the like: nothing was recorded, try again
        raise RetryableFailure(f"attempt {delivery.dequeue_count} of {max_dequeue_count}: {error}") from None

    if outcome.failure is None:
        return outcome
    if outcome.retry_may_help:
        raise RetryableFailure(
            f"attempt {delivery.dequeue_count} of {max_dequeue_count} failed "
            f"({outcome.meta.failure_reason}): {outcome.meta.failure_description}"
        )
    quarantine(
        quarantine_record(
            delivery,
            outcome.meta.failure_description or str(outcome.failure),
            audit_id=request.audit_id,
            failure_reason=outcome.meta.failure_reason or "permanent",
        )
    )
    log.info("request quarantined", fields={"reason": outcome.meta.failure_reason})
    return outcome
