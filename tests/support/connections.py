"""Records (and refuses) the process's outgoing connections, for the registry guard's tests.

A ``sys.addaudithook`` hook sees every ``socket.connect`` of this process
(urllib3, requests, the Azure SDK). While a ``ConnectionRecorder`` is active it
records each address and, for anything but the loopback addresses the test
allows, raises in the hook, which aborts the connect: a test can prove that no
connection to a refused address was attempted, and no packet ever leaves for
a link-local or private address even if the guard were wrong.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
from types import TracebackType
from typing import Any, Self

_lock = threading.Lock()
_active: list[ConnectionRecorder] = []
_installed = False


class RefusedByTest(ConnectionRefusedError):
    """The recorder stopped a connection to an address the test does not allow."""


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect" or not _active:
        return
    address = args[1]
    if not isinstance(address, tuple):
        return  # a Unix socket
    for recorder in list(_active):
        recorder.record(str(address[0]), int(address[1]))


class ConnectionRecorder:
    """``with ConnectionRecorder() as seen: ...; seen.hosts()``; connects to anything but
    ``allowed`` (default 127.0.0.1) are recorded and refused."""

    def __init__(self, allowed: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.allowed = {str(ipaddress.ip_address(a)) for a in allowed}
        self.attempts: list[tuple[str, int]] = []

    def record(self, host: str, port: int) -> None:
        self.attempts.append((host, port))
        if str(ipaddress.ip_address(host.split("%", 1)[0])) not in self.allowed:
            raise RefusedByTest(f"test refused a connection to {host}:{port}")

    def hosts(self) -> set[str]:
        return {host for host, _ in self.attempts}

    def __enter__(self) -> Self:
        global _installed
        with _lock:
            if not _installed:
                sys.addaudithook(_hook)  # cannot be removed; inert while no recorder is active
                _installed = True
            _active.append(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        with _lock:
            _active.remove(self)
