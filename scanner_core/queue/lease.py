"""A received message held invisible while it is worked on (the listener's lease).

Azure queues hide a received message for the visibility timeout given at
receive; ``update_message`` extends it and returns a new pop receipt (the old
one then fails with ``PopReceiptMismatch``: measured against Azurite). The
lease renews it every third of the timeout from a thread of its own, so a long
scan is never handed to a second consumer, and deletes or releases it with the
current receipt.
"""

from __future__ import annotations

import threading

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from ..log import ScanLogger


class Lease:
    """``start()`` renewing, then exactly one of ``delete()`` or ``release(delay)``."""

    def __init__(self, client: QueueClient, message: QueueMessage, visibility_timeout: int, log: ScanLogger) -> None:
        self.client = client
        self.message = message
        self.visibility_timeout = visibility_timeout
        self.log = log
        self.lost = False  # the receipt is no longer ours: another consumer may have the message
        self._pop_receipt = message.pop_receipt
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{message.id}", daemon=True)

    def start(self) -> Lease:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def delete(self) -> bool:
        """Completes the message; ``False`` if it could not (it then comes back and is
        answered from its recorded audit)."""
        self.stop()
        with self._lock:
            try:
                self.client.delete_message(self.message.id, self._pop_receipt)
                return True
            except ResourceNotFoundError:
                return True  # already gone
            except AzureError as error:
                self.log.warning("message could not be deleted; it will be delivered again",
                                 fields={"error": _code(error)})
                return False

    def release(self, delay_seconds: int = 0) -> None:
        """Makes the message visible again after ``delay_seconds`` (0: now)."""
        self.stop()
        with self._lock:
            try:
                self.client.update_message(self.message.id, self._pop_receipt, visibility_timeout=delay_seconds)
            except AzureError as error:  # it becomes visible anyway when its timeout runs out
                self.log.warning("message could not be released; visible again after its timeout",
                                 fields={"error": _code(error)})

    def still_held(self) -> bool:
        """Renews the lease now. ``False`` when the receipt is no longer ours: another consumer
        has the message (its lease ran out while storage was unreachable) and will answer it,
        so nothing may be sent on its behalf (a retry copy or a quarantine entry sent by both
        would be a duplicate). ``True`` also when storage cannot tell: the send then fails as
        it would have."""
        with self._lock:
            if self.lost:
                return False
            try:
                updated = self.client.update_message(
                    self.message.id, self._pop_receipt, visibility_timeout=self.visibility_timeout
                )
                self._pop_receipt = updated.pop_receipt
            except (ResourceNotFoundError, HttpResponseError) as error:
                if isinstance(error, ResourceNotFoundError) or _code(error) in ("PopReceiptMismatch", "MessageNotFound"):
                    self.lost = True
                    self.log.warning("message lease lost; another consumer may have it", fields={"error": _code(error)})
                    return False
            except AzureError:
                pass
            return True

    def _renew(self) -> None:
        period = max(1.0, self.visibility_timeout / 3)
        while not self._stopped.wait(period):
            with self._lock:
                if self._stopped.is_set():
                    return
                try:
                    updated = self.client.update_message(
                        self.message.id, self._pop_receipt, visibility_timeout=self.visibility_timeout
                    )
                    self._pop_receipt = updated.pop_receipt
                except (ResourceNotFoundError, HttpResponseError) as error:
                    if isinstance(error, ResourceNotFoundError) or _code(error) in ("PopReceiptMismatch", "MessageNotFound"):
                        self.lost = True
                        self.log.warning("message lease lost; another consumer may have it",
                                         fields={"error": _code(error)})
                        return
                    self.log.warning("message lease not renewed; trying again", fields={"error": _code(error)})
                except AzureError as error:  # storage unreachable: keep trying while the scan runs
                    self.log.warning("message lease not renewed; trying again", fields={"error": _code(error)})


def _code(error: AzureError) -> str:
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code) or type(error).__name__)
