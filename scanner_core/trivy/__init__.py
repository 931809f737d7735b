"""trivy itself: running it once, finding the binary, classifying its failures,
the DBs it reads, and reading its JSON report.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "DatabaseInfo": ".database",
    "DatabaseSource": ".database",
    "VulnerabilityDatabase": ".database",
    "read_database_info": ".database",
    "DatabaseKind": ".db_kind",
    "JAVA_DB": ".db_kind",
    "VULNERABILITY_DB": ".db_kind",
    "is_stale": ".database",
    "classify_trivy_failure": ".failures",
    "locate_trivy": ".locate",
    "LocalServerFailed": ".local_server",
    "LocalTrivyServer": ".local_server",
    "child_environment": ".process",
    "ReportSummariser": ".report",
    "ReportSummary": ".report",
    "SEVERITIES": ".report",
    "iter_findings": ".report",
    "severity_rank": ".report",
    "summarise_report": ".report",
    "ServerConnection": ".connection",
    "ServerInfo": ".server",
    "ServerInfoUnavailable": ".server",
    "server_info": ".server",
    "ScanTarget": ".runner",
    "Trivy": ".runner",
    "TrivyOptions": ".runner",
    "TrivyRun": ".runner",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
