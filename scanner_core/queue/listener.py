"""The stand-alone message listener (``python -m scanner_core listen``): the seed's
``message-listener``, for running outside Azure Functions (Container Apps or AKS
with KEDA, a VM, a laptop without Core Tools).

Competing consumers: any number of listener processes, each with
``concurrency`` workers, read the trigger queue. A worker receives one message
with a visibility timeout, holds it invisible while the scan runs (``Lease``),
and hands it to ``handle_message`` (one request or a batch of rescans), the same rules as the function app's
trigger (backoff, quarantine, the dequeue-count bound). Success (or a request
dealt with: retried later or quarantined) deletes the message; a delivery that
failed (the retry could not be queued) is made visible again after the
backoff base delay, as the host does after its ``visibilityTimeout``.

SIGTERM or SIGINT: stop receiving, let running scans finish within the grace
period; after it (or at a second signal) kill their trivy and make their
messages visible again at once, without spending an attempt. A heartbeat is
written every ``heartbeat-period`` seconds, as the function app's timer does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient, QueueMessage

from ..core import Scanner
from ..errors import ScannerError
from ..heartbeat import write_heartbeat
from ..log import ScanLogger
from .backoff import RetryPolicy
from .client import QueueSender, queue_client
from ..storage import QueueConnection
from .batches import handle_message
from .delivery import Delivery, RetryableFailure
from .lease import Lease
from .messages import QueueEncoding

_CLIENT_OPTIONS = {"retry_total": 0, "connection_timeout": 10, "read_timeout": 30}  # retried here, visibly


@dataclass(frozen=True)
class ListenerOptions:
    connection: str | QueueConnection
    queue_name: str
    encoding: QueueEncoding = "none"
    concurrency: int = 1
    visibility_timeout: int = 300  # seconds, at receive; renewed every third of it while a scan runs
    grace_seconds: int = 60
    max_dequeue_count: int = 3
    poll_seconds: float = 5.0  # longest pause between receives on an empty queue
    heartbeat: bool = True


class _Abandoned(Exception):
    """Raised into a worker whose message was given back at a hard stop, or whose lease
    another consumer now holds: nothing more is sent for it, and it is neither deleted nor released."""


class Listener:
    """Runs until ``stop()`` (or a signal, with ``install_signal_handlers``)."""

    def __init__(self, make_scanner: Callable[[], Scanner], options: ListenerOptions) -> None:
        self.make_scanner = make_scanner
        self.options = options
        self.stopping = threading.Event()  # no new messages
        self.abandoning = threading.Event()  # the grace period is over
        self._in_flight: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self.log: ScanLogger = make_scanner().logger.bind(listener_pid=os.getpid())
        self.processed = 0

    # -- control --------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self.stopping.is_set():
                self.log.warning("second signal: not waiting for running scans")
                self.abandoning.set()
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Returns 0 after a clean stop, 1 when running scans had to be abandoned."""
        options = self.options
        self.log.info("listening", fields={"queue": options.queue_name, "concurrency": options.concurrency,
                                           "visibility-timeout": options.visibility_timeout})
        workers = [threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
                   for i in range(options.concurrency)]
        if options.heartbeat:
            threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()
        for worker in workers:
            worker.start()
        while not self.stopping.wait(0.5):
            pass
        self.log.info("stopping: no new messages; waiting for running scans",
                      fields={"grace-seconds": options.grace_seconds, "running": len(self._in_flight)})
        deadline = time.monotonic() + options.grace_seconds
        for worker in workers:
            while worker.is_alive() and time.monotonic() < deadline and not self.abandoning.is_set():
                worker.join(timeout=0.2)
        if not any(worker.is_alive() for worker in workers):
            self.log.info("stopped", fields={"processed": self.processed})
            return 0
        self._abandon()
        return 1

    def _abandon(self) -> None:
        """Kills the running trivy processes and makes their messages visible again now."""
        self.abandoning.set()
        killed = kill_child_process_groups()
        with self._lock:
            leases = list(self._in_flight.values())
        for lease in leases:
            lease.release(0)
        self.log.warning("grace period over: scans abandoned, their messages visible again",
                         fields={"messages": len(leases), "trivy-killed": killed})

    # -- workers --------------------------------------------------------------

    def _work(self) -> None:
        options = self.options
        scanner = self.make_scanner()
        client = queue_client(options.connection, options.queue_name, **_CLIENT_OPTIONS)
        retries = QueueSender(options.connection, options.queue_name, options.encoding)
        poison = QueueSender(options.connection, f"{options.queue_name}-poison", options.encoding)
        idle, failures = 0.1, 0
        with client:
            while not self.stopping.is_set():
                try:
                    message = client.receive_message(visibility_timeout=options.visibility_timeout)
                except AzureError as error:
                    failures += 1
                    pause = min(30.0, 0.5 * 2 ** min(failures, 6))
                    self.log.warning("queue unreachable; trying again", fields={
                        "error": getattr(error, "error_code", None) or type(error).__name__, "pause-seconds": pause})
                    self.stopping.wait(pause)
                    continue
                failures = 0
                if message is None:
                    self.stopping.wait(idle)
                    idle = min(options.poll_seconds, idle * 2)
                    continue
                idle = 0.1
                self._process(scanner, client, message, retries, poison)
        retries.close()
        poison.close()

    def _process(self, scanner: Scanner, client: QueueClient, message: QueueMessage,
                 retries: QueueSender, poison: QueueSender) -> None:
        log = self.log.bind(message_id=message.id, dequeue_count=message.dequeue_count)
        lease = Lease(client, message, self.options.visibility_timeout, log).start()
        with self._lock:
            self._in_flight[message.id] = lease
        body = message.content if isinstance(message.content, bytes) else str(message.content).encode("utf-8")
        delivery = Delivery(body=body, message_id=message.id, dequeue_count=message.dequeue_count or 1,
                            inserted_at=message.inserted_on)
        completed = False
        try:
            handle_message(delivery, scanner, max_dequeue_count=self.options.max_dequeue_count,
                            quarantine=self._guard(poison.quarantine, lease),
                            retry_later=self._guard(retries.retry_later, lease))
            completed = True
        except _Abandoned:
            return
        except RetryableFailure as failure:
            log.warning("delivery failed; the message will be delivered again", fields={"error": str(failure)})
        except Exception as error:  # noqa: BLE001 - one message must never stop a worker
            log.error("delivery failed unexpectedly", fields={"error-type": type(error).__name__,
                                                                "error": scanner.redactor(str(error))[:500]})
        finally:
            with self._lock:
                self._in_flight.pop(message.id, None)
        if self.abandoning.is_set():
            return  # given back already
        if completed:
            lease.delete()
            self.processed += 1
        else:
            lease.release(RetryPolicy.from_settings(scanner.config.settings).base_seconds)

    def _guard(self, action: Callable[..., None], lease: Lease) -> Callable[..., None]:
        """Nothing more is sent for a message given back at a hard stop, nor for one whose
        lease another consumer took over (``Lease.still_held``): that one sends its own."""

        def guarded(*args: object) -> None:
            if self.abandoning.is_set() or not lease.still_held():
                raise _Abandoned()
            action(*args)

        return guarded

    def _beat(self) -> None:
        scanner = self.make_scanner()
        period = scanner.config.file.heartbeat_period
        while not self.stopping.is_set():
            try:
                write_heartbeat(scanner)
            except ScannerError as error:
                scanner.logger.warning("heartbeat not written", fields={"error": str(error)})
            self.stopping.wait(period)


def kill_child_process_groups() -> int:
    """SIGKILLs the process group of each child of this process (trivy runs in its own
    group, so its whole tree goes); returns how many."""
    me, killed = os.getpid(), 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[1]) == me and fields[0] != "Z":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed
