"""Fault injection for the queue tests and the fault bench: real faults on real parts.

* ``kill_service``: SIGKILL a test service (Azurite, the registry) without any
  shutdown, keeping its ports and data so that ``start()`` brings it back at the
  same address with what it had stored (``ServiceProcess.stop`` is the polite
  SIGTERM; a killed Azurite loses whatever it had not flushed, as a crash does).
* ``Blackhole``: a TCP server that accepts connections and never answers a byte
  (a registry behind a hung load balancer): clients hang until their own timeout.
* ``trivy_processes`` / ``kill_trivy``: find and kill trivy processes by their
  executable, e.g. mid-scan, and check that none is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .ports import ServiceProcess, signal_group


def kill_service(service: ServiceProcess) -> None:
    """SIGKILL the service's whole process group and reap it; ``start()`` restarts it
    on the same ports and data directory."""
    process, service._process = service._process, None
    if process is not None:
        signal_group(process, signal.SIGCONT)
        signal_group(process, signal.SIGKILL)
        process.wait()


class Blackhole:
    """Listens on 127.0.0.1, accepts every connection, reads and discards, never writes."""

    def __init__(self) -> None:
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self._connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self.accepted = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.getsockname()[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            self._connections.append(connection)  # held open, never answered

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    command: list[str]


def _read_process(pid: int) -> ProcessInfo | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    if not raw:  # a zombie or a kernel thread
        return None
    ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")
    if state == "Z":
        return None
    return ProcessInfo(pid, ppid, [part.decode(errors="replace") for part in raw.split(b"\0") if part])


def trivy_processes(marker: str | None = None) -> list[ProcessInfo]:
    """Running trivy processes of this user (``argv[0]`` ends in ``trivy``); with
    ``marker``, only those whose command line contains it (e.g. a test's cache dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _read_process(int(entry))
        if info is None or not info.command or not info.command[0].endswith("trivy"):
            continue
        if marker is None or any(marker in part for part in info.command):
            found.append(info)
    return found


def kill_trivy(marker: str | None = None) -> int:
    """SIGKILL the running trivy processes (see ``trivy_processes``); returns how many."""
    killed = 0
    for info in trivy_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGKILL)
            killed += 1
    return killed
