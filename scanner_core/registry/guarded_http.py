"""A ``requests`` session that applies the registry guard (``guard.py``) at connect time.

Every request's host is checked before it is sent, and each new connection
resolves the name once, checks every address, then connects to an address it
checked (TLS still names the host). So a redirect or a Bearer token realm that
leads to a refused address is refused, and a name cannot resolve to a public
address for the check and a refused one for the connection.
"""

from __future__ import annotations

from socket import timeout as SocketTimeout
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as urllib3_connection

from .guard import current_guard


class _GuardedConnect:
    """``_new_conn`` of urllib3's connections, to checked addresses only."""

    def _new_conn(self) -> Any:
        host, port = self._dns_host, self.port  # type: ignore[attr-defined]
        addresses = current_guard().checked_addresses(host, port, "registry")
        if not addresses:  # does not resolve: urllib3 reports it as it always does
            return super()._new_conn()  # type: ignore[misc]
        error: OSError | None = None
        for address in addresses:
            try:
                return urllib3_connection.create_connection(
                    (str(address), port), self.timeout,  # type: ignore[attr-defined]
                    source_address=self.source_address,  # type: ignore[attr-defined]
                    socket_options=self.socket_options,  # type: ignore[attr-defined]
                )
            except SocketTimeout:
                raise ConnectTimeoutError(self, f"Connection to {host} timed out") from None
            except OSError as failed:
                error = failed
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")  # type: ignore[arg-type]


class _HTTPConnection(_GuardedConnect, HTTPConnection):
    pass


class _HTTPSConnection(_GuardedConnect, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class GuardedSession(requests.Session):
    """``requests.Session`` whose every request (redirects included) passes the guard."""

    def __init__(self) -> None:
        super().__init__()
        adapter = _GuardedAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        if parts.hostname:  # also through a proxy, which connects on our behalf
            current_guard().checked_addresses(parts.hostname, parts.port or default_port(parts.scheme), "registry")
        return super().send(request, **kwargs)


def default_port(scheme: str) -> int:
    """The port a URL without one names."""
    return 443 if scheme == "https" else 80
