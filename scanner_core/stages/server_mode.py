"""The core's side of trivy's client/server mode (``TRIVY_SERVER``, trivy/server.py).

The server's DB age is asked (``GET /version``) on the process's I/O pool while
trivy runs, so it costs the scan no time; when the server cannot say, the meta
leaves the DB age out rather than failing an audit that succeeded.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from ..config import ScannerConfig
from ..config import Settings
from ..log import ScanLogger
from ..io_pool import io_pool
from ..trivy import (
    JAVA_DB,
    DatabaseInfo,
    ServerConnection,
    ServerInfo,
    ServerInfoUnavailable,
    is_stale,
    read_database_info,
    server_info,
)


def server_connection(config: ScannerConfig) -> ServerConnection | None:
    settings = config.settings
    if not settings.trivy_server:
        return None
    token = settings.trivy_server_token.get_secret_value() if settings.trivy_server_token else None
    return ServerConnection(settings.trivy_server, token, settings.trivy_server_token_header)


def ask_server_ahead(server: ServerConnection | None) -> Future[ServerInfo] | None:
    return io_pool().submit(server_info, server) if server is not None else None


def database_fields(
    settings: Settings, server: ServerConnection | None, asked: Future[ServerInfo] | None, log: ScanLogger
) -> dict[str, object]:
    """The meta's fields on the DBs a scan used: their age (the server's vulnerability DB in
    client/server mode), whether it is stale, and the server asked."""
    database = database_age(settings.trivy_cache_dir, asked, log)
    java_database = read_database_info(settings.trivy_cache_dir, JAVA_DB)
    return {
        "trivy_server": server.url if server is not None else None,
        "trivy_db_updated_at": database.updated_at,
        "trivy_db_next_update": database.next_update,
        "trivy_java_db_updated_at": java_database.updated_at,
        "trivy_java_db_next_update": java_database.next_update,
        "trivy_db_stale": is_stale(database, settings.trivy_db_stale_after_hours),
    }


def database_age(cache_dir: Path, asked: Future[ServerInfo] | None, log: ScanLogger) -> DatabaseInfo:
    """The DB the scan used: the server's in client/server mode, else the local one."""
    if asked is None:
        return read_database_info(cache_dir)
    try:
        return asked.result().database
    except ServerInfoUnavailable as error:
        log.warning("the trivy server's DB age is unknown", fields={"error": str(error)})
        return DatabaseInfo()
