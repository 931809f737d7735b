"""The bodies of the function app's functions, kept out of ``function_app.py``
so that it stays wiring and this stays testable with real binding objects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import azure.functions as func

from ..config import load_config_cached
from ..core import Scanner
from ..heartbeat import write_heartbeat
from ..queue import Delivery, QueueSender, RetryLater, handle_message
from .host import max_dequeue_count, message_encoding
from .settings import FunctionSettings, load_function_settings, schedule_period_seconds


def binding_settings() -> FunctionSettings:
    return load_function_settings()


def make_scanner(app_root: Path) -> Scanner:
    """A scanner for one invocation, from the app settings (``ConfigurationError`` if invalid).

    Cheap: the configuration, the storage clients and trivy's version are per-process
    caches, each renewed when what it depends on changes."""
    return Scanner(load_config_cached(), app_root=app_root)


def enable_telemetry(scanner: Scanner) -> bool:
    """Azure Monitor, when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (``telemetry/``)."""
    from ..telemetry import configure_telemetry

    secret = scanner.config.settings.applicationinsights_connection_string
    return configure_telemetry(secret.get_secret_value() if secret else None)


def export_snapshot(scanner: Scanner, bindings: FunctionSettings) -> None:
    """The stored metrics as Azure Monitor gauges; the heartbeat timer (one instance) calls it."""
    from ..errors import StorageError
    from ..metrics import read_snapshot
    from ..metrics import record_snapshot

    settings = scanner.config.settings
    try:
        snapshot = read_snapshot(settings.blob_container_url, scanner.short_id, bindings.queue_connection_value,
                                 bindings.queue_name, fleet=scanner.fleet_state(),
                                 max_images=settings.metrics_max_images)  # fmt: skip
    except StorageError as error:
        scanner.logger.warning("metrics not exported this time", fields={"error": str(error)})
        return
    record_snapshot(snapshot)


def on_scan_message(
    message: func.QueueMessage,
    quarantine: Callable[[str], None],
    app_root: Path,
    retry_later: RetryLater | None = None,
) -> None:
    """Queue trigger. Raises to have the platform retry; returns ``None`` otherwise.

    ``retry_later`` re-sends a request after a transient failure, invisible for
    its backoff delay (an output binding cannot delay a message): by default on
    the trigger queue itself, through the queue-client factory.
    """
    delivery = Delivery(
        body=message.get_body(),
        message_id=message.id,
        dequeue_count=message.dequeue_count or 1,
        inserted_at=message.insertion_time,
    )
    # A configuration error raises here: retried, then poisoned by the host, never lost.
    scanner = make_scanner(app_root)
    enable_telemetry(scanner)
    sender: QueueSender | None = None
    if retry_later is None:
        bindings = binding_settings()
        sender = QueueSender(bindings.queue_connection_value, bindings.queue_name, message_encoding(app_root))
        retry_later = sender.retry_later
    try:
        handle_message(  # one request, or a batch of rescans (queue/batches.py)
            delivery,
            scanner,
            max_dequeue_count=max_dequeue_count(app_root),
            quarantine=quarantine,
            retry_later=retry_later,
        )
    finally:
        if sender is not None:
            sender.close()


def on_heartbeat(timer: func.TimerRequest, bindings: FunctionSettings, app_root: Path) -> None:
    scanner = make_scanner(app_root)
    period = scanner.config.file.heartbeat_period
    scheduled = schedule_period_seconds(bindings.heartbeat_schedule)
    if scheduled != period:
        scanner.logger.warning(
            "HEARTBEAT_SCHEDULE does not fire every heartbeat-period seconds",
            fields={"heartbeat-schedule": bindings.heartbeat_schedule, "heartbeat-period": period},
        )
    if timer.past_due:
        scanner.logger.info("heartbeat timer is past due; writing it now")
    write_heartbeat(scanner)
    take_fleet_snapshot(scanner)
    if enable_telemetry(scanner):
        export_snapshot(scanner, bindings)


def take_fleet_snapshot(scanner: Scanner) -> None:
    """The fleet's totals (issue 24, ``storage/fleet_views.py``): one walk of the images' state per
    heartbeat (a singleton timer), and the audit tally (``storage/audit_tally.py``: the audits
    indexed since the last one), so the fleet reads cost one point read whatever its size."""
    from ..errors import StorageError
    from ..storage import AuditIndex, take_snapshot, tally_audits

    settings = scanner.config.settings
    try:
        state = scanner.fleet_state()
        take_snapshot(state, newest=settings.metrics_max_images)
        with AuditIndex(settings.blob_container_url, scanner.short_id) as index:
            tally_audits(state, index.rows())
    except StorageError as error:
        scanner.logger.warning("fleet snapshot not taken this time", fields={"error": str(error)})


def on_db_refresh(timer: func.TimerRequest, app_root: Path) -> None:
    """Refreshes each DB (vulnerability, then Java) when it is due; a failure is logged
    and, once both were tried, raised (visible in monitoring) while scans go on with
    the DB in place."""
    scanner = make_scanner(app_root)
    failures: list[Exception] = []
    # The Java DB (~500 MiB) is fetched when a scan first meets Java archives; from then on it is kept fresh here.
    databases = [(scanner.database, False), (scanner.java_database, True)]
    if scanner.server is not None:
        scanner.logger.info("client/server mode: the trivy server keeps the vulnerability DB",
                            fields={"server": scanner.server.url})  # fmt: skip
        databases = databases[1:]  # the Java DB is still the client's (trivy issue #3560)
    for database, only_if_present in databases:
        name = database.kind.name
        try:
            result = database.refresh(only_if_present=only_if_present)
        except Exception as error:  # noqa: BLE001 - logged here, raised below once every DB was tried
            scanner.logger.error(f"{name} refresh failed; scans keep the DB in place", fields={"error": str(error)})
            failures.append(error)
            continue
        scanner.logger.info(
            f"{name} refresh",
            fields={"refreshed": result.refreshed, "reason": result.reason, "db-updated-at": result.database.updated_at},
        )
    _refresh_exploit_feeds(scanner)
    expire_audits_of(scanner)
    snapshot = scanner.db_snapshot
    if snapshot is not None:
        # The timer is the fleet's single writer of the DB snapshot (db_snapshot.py).
        try:
            snapshot.publish(scanner.config.settings.trivy_cache_dir)
        except Exception as error:  # noqa: BLE001 - raised below
            scanner.logger.error("DB snapshot not published; instances use the repositories", fields={"error": str(error)})
            failures.append(error)
    if failures:
        raise failures[0]


def expire_audits_of(scanner: Scanner) -> None:
    """``AUDIT_RETENTION_DAYS`` (issue 24, ``storage/retention.py``): tags the audits nothing current
    points at for the container's lifecycle rule; every 6 h with the DB refresh (one timer)."""
    days = scanner.config.settings.audit_retention_days
    if days <= 0 or scanner.audit_index is None:
        return
    from ..storage import expire_audits, shared_container_client

    try:
        count = expire_audits(shared_container_client(scanner.config.settings.blob_container_url), scanner.short_id,
                              scanner.fleet_state(), days, forget=scanner.audit_index.forget)
    except Exception as error:  # noqa: BLE001 - retention waits for the next run; scans go on
        scanner.logger.warning("audits not expired this time", fields={"error": scanner.redactor(str(error))[:500]})
        return
    scanner.logger.info("audits expired for the lifecycle rule",
                        fields={"folders": count.folders, "protected": count.protected, "expired": count.expired})


def _refresh_exploit_feeds(scanner: Scanner) -> None:
    """The KEV and EPSS feeds (exploits/): a feed that is down or malformed keeps the previous
    one, which the heartbeat says; never raised (scans go on without or with the old feed)."""
    from ..exploits import refresh_feeds

    try:
        results = refresh_feeds(scanner.config.settings)
    except Exception as error:  # noqa: BLE001 - e.g. a full disk: logged, the DBs matter more
        scanner.logger.error("exploitability feeds not refreshed", fields={"error": str(error)})
        return
    for result in results:
        if result.error:
            scanner.logger.warning(f"{result.feed} feed not refreshed; the previous one is kept",
                                   fields={"error": result.error})  # fmt: skip
        else:
            scanner.logger.info(f"{result.feed} feed refreshed")
