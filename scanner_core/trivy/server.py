"""trivy's client/server mode: what a scan needs to know about the server.

With ``TRIVY_SERVER`` set, scans run ``trivy image --server URL``: the server
holds the vulnerability DB and the layer cache (its ``fanal`` cache keyed by
layer digest, so a rescan sends no layer again), and the instance needs no
DB of its own. The Java DB is the exception: trivy's jar analyzer runs on the
client (trivy issue #3560), so images with jars still use a local Java DB.

The token is a secret: it reaches the trivy child as ``TRIVY_TOKEN`` in its
environment (never argv, which any local user can read in ``/proc``); the
header name, which is not secret, is passed as ``--token-header``.

``GET <server>/version`` (trivy's own route, no token needed) answers the
server's trivy version and its DBs' ``metadata.json``; the meta records that
DB age, asked while the scan runs.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from .connection import ServerConnection
from .database import DatabaseInfo

VERSION_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ServerInfo:
    """The server's ``/version`` answer."""

    version: str | None
    database: DatabaseInfo
    java_database: DatabaseInfo | None = None


class ServerInfoUnavailable(RuntimeError):
    """``/version`` could not be read (the message never holds the token)."""


def server_info(server: ServerConnection, timeout: float = VERSION_TIMEOUT_SECONDS) -> ServerInfo:
    """Asks the server for its version and DB age."""
    request = urllib.request.Request(f"{server.url}/version", method="GET")
    if server.token:
        request.add_header(server.token_header, server.token)  # for proxies in front that check it
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, validated
            document = json.loads(response.read(1024 * 1024))
    except urllib.error.HTTPError as error:
        raise ServerInfoUnavailable(f"GET {server.url}/version answered HTTP {error.code}") from None
    except (OSError, ValueError) as error:
        raise ServerInfoUnavailable(f"GET {server.url}/version failed: {type(error).__name__}") from None
    if not isinstance(document, dict):
        raise ServerInfoUnavailable(f"GET {server.url}/version did not answer a JSON object")
    return ServerInfo(
        version=document.get("Version"),
        database=_database(document.get("VulnerabilityDB")) or DatabaseInfo(),
        java_database=_database(document.get("JavaDB")),
    )


def _database(section: object) -> DatabaseInfo | None:
    if not isinstance(section, dict):
        return None
    return DatabaseInfo(
        updated_at=section.get("UpdatedAt"),
        next_update=section.get("NextUpdate"),
        downloaded_at=section.get("DownloadedAt"),
    )
