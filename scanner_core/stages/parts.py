"""What the stages use of the scanner that runs them (``core.Scanner``), as a protocol,
so that the stages need not import the core that imports them."""

from __future__ import annotations

from typing import Protocol

from ..config import ScannerConfig
from ..follow_up import AuditFollowUp
from ..log import ScanLogger
from ..redact import Redactor
from ..trivy import ServerConnection, Trivy, VulnerabilityDatabase


class ServesRescans(Protocol):
    """A trivy server that inventory rescans ask while a batch runs (``rescan_server.py``)."""

    def connection(self, log: ScanLogger) -> ServerConnection | None: ...


class ScannerParts(Protocol):
    config: ScannerConfig
    redactor: Redactor
    refresh_db_before_scan: bool
    rescan_server: ServesRescans | None  # set for the duration of a batch of rescans

    @property
    def trivy(self) -> Trivy: ...

    @property
    def database(self) -> VulnerabilityDatabase: ...

    @property
    def java_database(self) -> VulnerabilityDatabase: ...

    @property
    def server(self) -> ServerConnection | None: ...

    @property
    def follow_up(self) -> AuditFollowUp: ...
