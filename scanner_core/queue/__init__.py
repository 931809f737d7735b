"""The scan queue: the message contract, enqueueing, and the delivery rules
(retry, quarantine) the trigger applies, for one request or a batch of rescans.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "enqueue": ".client",
    "QueueSender": ".client",
    "RetryPolicy": ".backoff",
    "RetryState": ".backoff",
    "queue_client": ".client",
    "Delivery": ".delivery",
    "RetryableFailure": ".delivery",
    "RetryLater": ".delivery",
    "handle_delivery": ".delivery",
    "quarantine_record": ".delivery",
    "QUEUE_MESSAGE_LIMIT": ".quarantine",
    "requeue_text": ".quarantine",
    "bounded_quarantine": ".quarantine",
    "Listener": ".listener",
    "ListenerOptions": ".listener",
    "BatchDelivery": ".batches",
    "Rescan": ".batches",
    "handle_message": ".batches",
    "pack_batches": ".batches",
    "BatchMessage": ".messages",
    "batch_message": ".messages",
    "parse_batch": ".messages",
    "QueueEncoding": ".messages",
    "build_message": ".messages",
    "parse_message": ".messages",
    "request_from_message": ".messages",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
