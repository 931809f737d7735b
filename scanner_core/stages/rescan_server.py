"""A batch of inventory rescans asks one trivy server that keeps the DB open (issue 26).

``RESCAN_SERVER=auto`` (default ``off``, as measured: docs/performance.md, issue 26): when a rescan
message holds two digests or more,
``RESCAN_FROM=inventory`` and no ``TRIVY_SERVER`` is set, the instance starts a ``trivy
server`` on loopback over its own DB (``trivy/local_server.py``) for the batch, and each
inventory rescan of the batch runs ``trivy sbom --server`` against it: the DB is opened
once per batch instead of once per rescan. With ``TRIVY_SERVER`` set, rescans already ask
that server. Anything that stops the server from starting (no DB yet, the binary, a port)
is logged and the batch's rescans run standalone ``trivy sbom``, as before.

The server serves the DB it opened; should the instance's DB change under it during a
batch (the snapshot or the refresh timer swapped it in), it is restarted before the next
rescan, so that the meta's ``trivy-db-updated-at`` (read from the instance's DB, as for a
standalone scan) is the DB that matched. A server that died is restarted the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ScannerError
from ..log import ScanLogger
from ..trivy import LocalServerFailed, LocalTrivyServer, ServerConnection, read_database_info
from .db_snapshot import ensure_database
from .parts import ScannerParts

MIN_BATCH = 2  # one rescan opens the DB once either way: no server for it


class RescanServer:
    """The loopback server of one batch (see the module docstring)."""

    def __init__(self, scanner: ScannerParts) -> None:
        self.scanner = scanner
        settings = scanner.config.settings
        self._server = LocalTrivyServer(scanner.trivy.executable, settings.trivy_cache_dir,
                                        scratch_dir=settings.scan_scratch_dir, redactor=scanner.redactor)  # fmt: skip
        self._serves: str | None = None  # the DB's UpdatedAt when the server opened it
        self.starts = 0

    def start(self, log: ScanLogger) -> ServerConnection:
        """Raises ``LocalServerFailed``."""
        self._server.stop()
        self._serves = self._database_now()
        connection = self._server.start()
        self.starts += 1
        log.info("trivy server started for a batch of rescans",
                 fields={"server": connection.url, "db-updated-at": self._serves})  # fmt: skip
        return connection

    def connection(self, log: ScanLogger) -> ServerConnection | None:
        """The server to ask for the next rescan (restarted if the DB changed or it died), or
        ``None``: run standalone."""
        if self._server.running and self._server.connection is not None and self._database_now() == self._serves:
            return self._server.connection
        try:
            return self.start(log)
        except LocalServerFailed as failure:
            log.warning("trivy server not restarted; rescanning standalone", fields={"error": str(failure)})
            return None

    def stop(self) -> None:
        self._server.stop()

    def _database_now(self) -> str | None:
        return read_database_info(self.scanner.config.settings.trivy_cache_dir).updated_at


def wants_rescan_server(scanner: ScannerParts, rescans: int) -> bool:
    settings = scanner.config.settings
    return (settings.rescan_server == "auto" and settings.trivy_server is None
            and settings.rescan_from == "inventory" and rescans >= MIN_BATCH)  # fmt: skip


@contextmanager
def rescan_server_for(scanner: ScannerParts, rescans: int, log: ScanLogger) -> Iterator[RescanServer | None]:
    """A started ``RescanServer`` for a batch of ``rescans``, stopped afterwards; or ``None``."""
    if not wants_rescan_server(scanner, rescans):
        yield None
        return
    server = RescanServer(scanner)
    try:
        ensure_database(scanner.database, refresh=scanner.refresh_db_before_scan, log=log)
        server.start(log)
    except (ScannerError, LocalServerFailed, OSError) as failure:  # no DB yet, a snapshot read, the binary
        server.stop()
        log.warning("no trivy server for this batch; rescanning standalone", fields={"error": str(failure)})
        yield None
        return
    try:
        yield server
    finally:
        server.stop()
