"""The bodies of the monitor loop's functions: the watch timer, the rescan
timer and the Event Grid trigger (``monitor_loop.py`` wires them). Each takes an
``enqueue`` for tests; by default requests go to the trigger queue as the
HTTP API sends them (``SCAN_QUEUE_CONNECTION``, ``SCAN_QUEUE_NAME``,
host.json's ``messageEncoding``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import azure.functions as func

from ..core import Scanner
from ..errors import RequestError, StorageError
from ..monitor import (
    Enqueue,
    EnqueueBatch,
    IgnoredEvent,
    MonitorStore,
    PushHandler,
    Rescanner,
    RescanResult,
    Watcher,
    WatchResult,
    parse_image_pushed,
    write_watch_status,
)
from ..queue import bounded_quarantine, build_message, enqueue, pack_batches
from .handlers import make_scanner
from .host import message_encoding
from .settings import load_function_settings


def queue_enqueue(app_root: Path) -> Enqueue:
    """Sends scan requests to the trigger queue (the queue is created once per run)."""
    bindings = load_function_settings()
    encoding = message_encoding(app_root)
    created = False

    def send(image: str, audit_id: str, *, tag: str | None, trigger: str, created_at: float) -> None:
        nonlocal created
        message = build_message(image, audit_id, created_at, tag=tag, trigger=trigger)  # type: ignore[arg-type]
        enqueue(message, connection=bindings.queue_connection_value, queue_name=bindings.queue_name,
                encoding=encoding, create_queue=not created)
        created = True

    return send


def queue_enqueue_batch(app_root: Path) -> EnqueueBatch:
    """Sends batches of rescans to the trigger queue (queue/batches.py: split further when one
    would not fit in a queue message)."""
    bindings = load_function_settings()
    encoding = message_encoding(app_root)
    created = False

    def send(rescans: list[tuple[str, str, str | None]], *, created_at: float) -> int:
        nonlocal created
        messages = pack_batches(rescans, created_at, len(rescans))
        for message in messages:
            enqueue(message, connection=bindings.queue_connection_value, queue_name=bindings.queue_name,
                    encoding=encoding, create_queue=not created)
            created = True
        return len(messages)

    return send


def monitor_store(scanner: Scanner) -> MonitorStore:
    return MonitorStore(scanner.config.settings.blob_container_url, scanner.short_id)


def on_watch(timer: func.TimerRequest | None, app_root: Path, *, send: Enqueue | None = None) -> list[WatchResult]:
    """Timer (or ``python -m scanner_core watch``): enqueue the new digests of every watched repository."""
    scanner = make_scanner(app_root)
    if not scanner.config.file.watch:
        scanner.logger.info("no repositories to watch ('watch:' in TRIVY_CONFIG_PATH)")
        return []
    started = time.time()
    with monitor_store(scanner) as store:
        results = Watcher(scanner.config, store, send or queue_enqueue(app_root), scanner.logger).run()
    try:  # what the heartbeat shows of the run: its caps and errors per repository
        write_watch_status(scanner.blob_store, scanner.short_id, results, started)
    except StorageError as error:
        scanner.logger.warning("watch status not written", fields={"error": str(error)})
    return results


def on_rescan(
    timer: func.TimerRequest | None, app_root: Path, *, send: Enqueue | None = None,
    send_batch: EnqueueBatch | None = None,
) -> RescanResult:
    """Timer (or ``python -m scanner_core rescan``): enqueue the images whose latest scan used an older DB,
    ``RESCAN_BATCH_SIZE`` per message. A test's ``send`` alone gets every image one by one."""
    scanner = make_scanner(app_root)
    batches = send_batch or (queue_enqueue_batch(app_root) if send is None else None)
    with monitor_store(scanner) as store:
        state = scanner.fleet_state() if scanner.audit_index is not None else None  # the choice reads it
        return Rescanner(scanner.config, store, send or queue_enqueue(app_root), scanner.database,
                         scanner.logger, enqueue_batch=batches, state=state).run()


def on_image_pushed(
    event: func.EventGridEvent, quarantine: Callable[[str], None], app_root: Path, *, send: Enqueue | None = None
) -> str | None:
    """Event Grid trigger: ACR's ImagePushed → a scan request; the audit id, or ``None``.

    A malformed event is quarantined with its reason (on the scan queue's
    poison queue) and not retried; a storage, queue or registry failure
    raises, and Event Grid delivers the event again with its retry policy.
    """
    scanner = make_scanner(app_root)
    log = scanner.logger.bind(event_id=event.id)
    # An event may be up to 1 MB: a too-big entry keeps the event in Blob (queue/quarantine.py).
    quarantine = bounded_quarantine(quarantine, scanner.blob_store, scanner.short_id, event.id)
    try:
        pushed = parse_image_pushed(event.event_type, event.id, event.get_json(), event.event_time)
    except IgnoredEvent as reason:
        log.info("event ignored", fields={"reason": str(reason)})
        return None
    except RequestError as error:
        log.error("malformed event quarantined", fields={"error": str(error)})
        quarantine(quarantine_record(event, error))
        return None
    with monitor_store(scanner) as store:
        return PushHandler(scanner.config, store, send or queue_enqueue(app_root), log).handle(pushed)


def quarantine_record(event: func.EventGridEvent, error: RequestError) -> str:
    """The poison-queue entry of a malformed event, in the scan queue's quarantine format."""
    original = {
        "id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "dataVersion": event.data_version, "data": event.get_json(),
    }
    return json.dumps(
        {
            "original-message": json.dumps(original),
            "reason": str(error),
            "failure-reason": getattr(error, "reason", None) or f"invalid-{error.field}",  # registry-not-allowed
            "failure-kind": "permanent",
            "audit-id": None,
            "message-id": event.id,
            "dequeue-count": None,
            "quarantined-at": int(time.time()),
        }
    )
