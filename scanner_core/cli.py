"""The one-time runner: ``python -m scanner_core scan|heartbeat|enqueue|reindex|expire|watch|rescan``, and the
stand-alone listener ``listen``.

Runs the same core as the function app, once, with the environment's
configuration. Exit codes: 0 succeeded, 1 the audit failed, 2 usage or
configuration error, 3 the results could not be stored, and ``--exit-code N``
when the audit succeeded but its status is ``failed``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import AuditNotRecorded, ConfigurationError, RequestError, ScannerError, StorageError

if TYPE_CHECKING:
    from .audit import AuditOutcome
    from .core import Scanner
    from .storage import AuditRebuilder

# What a verb needs is imported by that verb: ``--help`` and ``enqueue`` never load
# the core, pydantic-settings' YAML file loader or the Blob SDK (docs/performance.md, cold start).

EXIT_OK, EXIT_AUDIT_FAILED, EXIT_USAGE, EXIT_NOT_STORED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scanner_core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    scan = commands.add_parser("scan", help="scan one image once and ship the results to Blob Storage")
    scan.add_argument("image", nargs="?", help="image reference, e.g. registry.example.com/team/app:1.0")
    scan.add_argument("--input", type=Path, help="scan this image tarball (docker-archive or OCI) instead of pulling")
    scan.add_argument("--audit-id", help="the audit's id (default: a new UUID)")
    scan.add_argument("--platform", help="os/arch[/variant] to scan in a multi-platform image (default: TRIVY_PLATFORM)")
    scan.add_argument(
        "--exit-code",
        type=int,
        default=0,
        metavar="N",
        help="for CI pipelines: exit with N when the scan status is 'failed' (default 0: the verdict does not change "
        "the exit code)",
    )

    commands.add_parser("heartbeat", help="write the scanner's heartbeat meta once")

    commands.add_parser(
        "reindex", help="rebuild the audit index and the fleet state from the metas in Blob Storage (maintenance; "
        "idempotent)"
    )

    commands.add_parser(
        "expire", help="tag the audits older than AUDIT_RETENTION_DAYS that no image's current state names, for the "
        "container's lifecycle rule (docs/operations.md#retention)"
    )
    commands.add_parser("watch", help="one run of the watch timer: queue the new tags of the 'watch:' repositories")
    commands.add_parser("rescan", help="one run of the rescan timer: queue the images whose scan used an older DB")

    enqueue = commands.add_parser(
        "enqueue",
        help="put a scan request on the trigger queue (connection: the app setting named by SCAN_QUEUE_CONNECTION, "
        "default AzureWebJobsStorage; Azurite when unset)",
    )
    enqueue.add_argument("image", help="image reference, e.g. registry.example.com/team/app:1.0")
    enqueue.add_argument("--audit-id", help="the audit's id (default: a new UUID)")
    enqueue.add_argument("--queue", help="queue name (default: SCAN_QUEUE_NAME, else trivy-scan-requests)")
    enqueue.add_argument("--platform", help="os/arch[/variant] to scan in a multi-platform image")

    requeue = commands.add_parser(
        "requeue",
        help="put a quarantined request back on the trigger queue: reads one quarantine entry (JSON) from FILE or "
        "stdin; its original body inline, or from its blob for a big one (SHA-256 checked)",
    )
    requeue.add_argument("entry", nargs="?", type=Path, help="file holding the entry (default: stdin)")
    requeue.add_argument("--queue", help="queue name (default: SCAN_QUEUE_NAME, else trivy-scan-requests)")

    listen = commands.add_parser(
        "listen",
        help="the stand-alone message listener: competing consumers on the trigger queue, the function app's "
        "retry and quarantine rules (outside Azure Functions: Container Apps, AKS with KEDA, a VM)",
    )
    # One scan per CPU: the knee of bench/bench_listener.py and bench_concurrency.py (issue 18).
    listen.add_argument("--concurrency", type=int, default=len(os.sched_getaffinity(0)), metavar="N",
                        help="scans at once (default: one per CPU this process may use)")
    listen.add_argument("--queue", help="queue name (default: SCAN_QUEUE_NAME, else trivy-scan-requests)")
    listen.add_argument("--visibility-timeout", type=int, default=300, metavar="S",
                        help="seconds a received message stays invisible, renewed every third of it (default 300)")
    listen.add_argument("--grace-period", type=int, default=60, metavar="S",
                        help="after SIGTERM/SIGINT, seconds running scans may take before they are abandoned "
                        "(default 60)")
    listen.add_argument("--max-dequeue-count", type=int, metavar="N",
                        help="deliveries of one message at most (default: host.json maxDequeueCount, 3)")
    listen.add_argument("--log-level", choices=["debug", "info", "warning"], default="info",
                        help="debug: every library's records too (the storage SDK, urllib3), redacted (default info)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "scan" and not args.image and not args.input:
        parser.error("scan needs an IMAGE, --input TAR, or both")
    if args.command == "enqueue":
        return _enqueue(args)
    if args.command == "listen":
        return _listen(args)
    if args.command == "requeue":
        return _requeue(args)
    from .config import load_config
    from .core import Scanner
    from .storage import AuditRebuilder
    from .log import configure_cli_logging

    try:
        config = load_config()
    except ConfigurationError as error:
        return _fail(error)
    configure_cli_logging(config.settings.log_format)
    if args.command in ("watch", "rescan"):
        return _monitor(args.command)
    # The one-time runner has no refresh timer beside it: it refreshes a due DB itself.
    scanner = Scanner(config, app_root=Path.cwd(), refresh_db_before_scan=True)
    if args.command == "heartbeat":
        return _heartbeat(scanner)
    if args.command == "reindex":
        return _reindex(scanner)
    if args.command == "expire":
        return _expire(scanner)
    return _scan(scanner, args)


def _enqueue(args: argparse.Namespace) -> int:
    """Needs no scanner configuration: only the queue's connection (never on argv: it is a secret)."""
    from .functions import load_function_settings, message_encoding
    from .queue import build_message, enqueue

    app_root = Path.cwd()
    try:
        bindings = load_function_settings()
        message = build_message(args.image, args.audit_id or str(uuid.uuid4()), platform=args.platform)
        sent = enqueue(
            message,
            connection=bindings.queue_connection_value,
            queue_name=args.queue or bindings.queue_name,
            encoding=message_encoding(app_root),
        )
    except ScannerError as error:
        return _fail(error)
    print(f"queued audit {message.payload.image_scan_id} for {args.image} on {sent.queue} (message {sent.message_id})")
    print(sent.body)
    return EXIT_OK


def _requeue(args: argparse.Namespace) -> int:
    """Either form of a quarantine entry (``queue/quarantine.py``) back on the trigger queue, as is."""
    from .config import load_config
    from .functions import load_function_settings, message_encoding
    from .queue import QueueSender, requeue_text
    from .redact import Redactor
    from .storage import AzureBlobStore

    try:
        entry = json.loads(args.entry.read_text("utf-8") if args.entry else sys.stdin.read())
        if not isinstance(entry, dict):
            raise RequestError("entry", "must be one quarantine entry, a JSON object")
        config = load_config()
        bindings = load_function_settings()
        original = requeue_text(entry, AzureBlobStore(config.settings.blob_container_url, Redactor(config.secrets)))
        sender = QueueSender(bindings.queue_connection_value, args.queue or bindings.queue_name,
                             message_encoding(Path.cwd()))
        try:
            message_id = sender.send(original)
        finally:
            sender.close()
    except ValueError as error:  # not JSON
        return _fail(RequestError("entry", f"is not JSON: {error}"))
    except ScannerError as error:
        return _fail(error)
    print(f"re-queued {entry.get('audit-id') or 'the request'} on {args.queue or bindings.queue_name} "
          f"(message {message_id})")
    return EXIT_OK


def _listen(args: argparse.Namespace) -> int:
    """Runs until SIGTERM/SIGINT; see ``scanner_core/queue/listener.py``."""
    from .config import load_config
    from .core import Scanner
    from .storage import AuditRebuilder
    from .functions import load_function_settings, max_dequeue_count, message_encoding
    from .log import LOGGER_NAME, configure_cli_logging
    from .queue import Listener, ListenerOptions

    app_root = Path.cwd()
    if args.concurrency < 1 or args.visibility_timeout < 2 or args.grace_period < 0:
        print("error: --concurrency must be >= 1, --visibility-timeout >= 2, --grace-period >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config()
        bindings = load_function_settings()
    except ScannerError as error:
        return _fail(error)
    configure_cli_logging(config.settings.log_format, getattr(logging, args.log_level.upper()))
    if args.log_level == "debug":  # as host.json logLevel "Debug": every logger, through the same handler
        logging.getLogger().handlers[:] = logging.getLogger(LOGGER_NAME).handlers
        logging.getLogger().setLevel(logging.DEBUG)
        logging.getLogger("azure").setLevel(logging.DEBUG)
    options = ListenerOptions(
        connection=bindings.queue_connection_value,
        queue_name=args.queue or bindings.queue_name,
        encoding=message_encoding(app_root),
        concurrency=args.concurrency,
        visibility_timeout=args.visibility_timeout,
        grace_seconds=args.grace_period,
        max_dequeue_count=args.max_dequeue_count or max_dequeue_count(app_root),
    )
    # No refresh timer beside it: a due DB is refreshed before a scan, as the one-time runner does.
    listener = Listener(lambda: Scanner(config, app_root=app_root, refresh_db_before_scan=True), options)
    listener.install_signal_handlers()
    return listener.run()


def _monitor(command: str) -> int:
    """The timer's body, once; requests go to the app's trigger queue (as ``enqueue``)."""
    from .functions import on_rescan, on_watch

    try:
        if command == "watch":
            for result in on_watch(None, Path.cwd()):
                print(f"{result.repository}: {len(result.enqueued)} queued, {result.baseline} set aside"
                      + (f", error: {result.error}" if result.error else ""))
        else:
            rescan = on_rescan(None, Path.cwd())
            print(f"{len(rescan.enqueued)} of {rescan.images} images queued for a rescan (DB {rescan.current_db})")
    except ScannerError as error:
        return _fail(error)
    return EXIT_OK


def _fail(error: ScannerError) -> int:
    """Prints the error and returns the exit code its type stands for."""
    print(f"error: {error}", file=sys.stderr)
    if isinstance(error, (RequestError, ConfigurationError)):
        return EXIT_USAGE
    if isinstance(error, (StorageError, AuditNotRecorded)):
        return EXIT_NOT_STORED
    return EXIT_AUDIT_FAILED


def audit_rebuilders(scanner: Scanner) -> list[AuditRebuilder]:
    """What ``reindex`` writes again from each stored meta: the audit index, the fleet state,
    and (the extension point) every other table kept per audit; add a feature's rebuilder here."""
    from .storage import NamedRebuilder

    from .fleet_queries import QueryTables, fleet_tables_connection, rebuild_queries

    assert scanner.audit_index is not None
    index = scanner.audit_index
    state = scanner.fleet_state()
    rebuilders = [NamedRebuilder("index", index.record), NamedRebuilder("state", state.record)]
    if (connection := fleet_tables_connection(scanner.config.settings.fleet_tables_connection)) is not None:
        tables = QueryTables(connection, scanner.config.settings)  # the fleet queries' tables (issue 24.3): from the stored report and inventory
        rebuilders.append(NamedRebuilder("queries", lambda meta, _folder: rebuild_queries(tables, meta, index.read_chunks)))
    return rebuilders


def _reindex(scanner: Scanner) -> int:
    """Rebuilds the index and the fleet state from the stored metas (idempotent), then copies
    every approval request's state onto its digest and brings the sorted pages' rows in line
    with the state; a progress bar on stderr, a count at the end."""
    from tqdm import tqdm

    from .approvals import ApprovalStore, unix
    from .storage import audit_folders, rebuild_audits, shared_container_client, take_snapshot

    settings = scanner.config.settings
    try:
        container = shared_container_client(settings.blob_container_url, retry_total=3)
        folders = audit_folders(container, scanner.short_id)
        rebuilders = audit_rebuilders(scanner)
        with tqdm(total=len(folders), unit="audit", desc="reindex", disable=None) as bar:
            count = rebuild_audits(container, folders, rebuilders, bar.update)
        state = scanner.fleet_state()
        approvals = 0
        for row in ApprovalStore(settings.blob_container_url, scanner.short_id).rows():
            if row.get("repository") and row.get("digest") and row.get("id") and row.get("state"):
                approvals += state.approval_changed(
                    row["repository"], row["digest"], row["id"], row["state"], row.get("deadline"),
                    unix(row.get("decided")) or None, row.get("decidedby"))  # not a time: not recent (digest)
        ordered = state.sync_every_order()  # the sorted pages, from the state just rebuilt
        take_snapshot(state, newest=settings.metrics_max_images)
    except ScannerError as error:
        return _fail(error)
    failed = ", ".join(f"{name}: {n}" for name, n in count.failures.items() if n)
    print(f"reindexed {count.audits} audits under trivy-{scanner.short_id}/ ({count.unreadable} unreadable metas "
          f"skipped), {approvals} approval states copied, {ordered} sorted-page rows written" + (f"; failed: {failed} (run it again)" if failed else ""))
    return EXIT_OK if not failed else EXIT_NOT_STORED


def _expire(scanner: Scanner) -> int:
    from .storage import expire_audits, shared_container_client

    settings = scanner.config.settings
    assert scanner.audit_index is not None
    try:
        count = expire_audits(shared_container_client(settings.blob_container_url), scanner.short_id,
                              scanner.fleet_state(), settings.audit_retention_days, forget=scanner.audit_index.forget)
    except ScannerError as error:
        return _fail(error)
    print(f"{count.expired} of {count.folders} audit folders tagged for deletion ({count.protected} named by the "
          f"fleet state kept; AUDIT_RETENTION_DAYS={settings.audit_retention_days})")
    return EXIT_OK


def _heartbeat(scanner: Scanner) -> int:
    from .heartbeat import write_heartbeat

    try:
        name, meta = write_heartbeat(scanner)
    except ScannerError as error:
        return _fail(error)
    print(f"heartbeat written to {name} (heartbeat={meta.heartbeat})")
    return EXIT_OK


def _scan(scanner: Scanner, args: argparse.Namespace) -> int:
    from .audit import ScanRequest, utc_now

    request = ScanRequest(
        audit_id=args.audit_id or str(uuid.uuid4()),
        requested_at=utc_now(),
        image=args.image,
        input_tar=args.input,
        platform=args.platform,
        platform_field="--platform",
    )
    try:
        outcome = scanner.scan(request, final_attempt=True)
    except ScannerError as error:
        return _fail(error)
    _print_outcome(outcome)
    if outcome.succeeded:
        return args.exit_code if outcome.meta.scan_status == "failed" else EXIT_OK
    print(f"error: {outcome.meta.failure_description}", file=sys.stderr)
    return EXIT_NOT_STORED if outcome.meta.audit_result.value == "upload-failed" else EXIT_AUDIT_FAILED


def _print_outcome(outcome: AuditOutcome) -> None:
    meta = outcome.meta
    print(f"audit {meta.audit_id}: {meta.audit_result.value}")
    print(f"  meta:   {outcome.meta_path}")
    if meta.trivy_audit_path:
        print(f"  report: {meta.trivy_audit_path}")
    print(f"  image:  {meta.image}" + (f" ({meta.image_digest})" if meta.image_digest else ""))
    if meta.platform:
        print(f"  platform: {meta.platform}" + (f" ({meta.platform_digest})" if meta.platform_digest else ""))
    if meta.vulnerabilities is not None:
        counts = ", ".join(f"{count} {severity}" for severity, count in meta.vulnerabilities.items())
        print(f"  counts: {counts}")
        print(
            f"  status: {meta.scan_status} (critical threshold {meta.critical_threshold}, "
            f"high threshold {meta.high_threshold})"
        )
        print(f"  {meta.summary}")
