"""Plumbing shared by the local test-service launchers: ports, waits, teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it (bind to port 0), so parallel test runs do not collide
    on fixed ports; there is a small window before the caller binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a service log, for start-up error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def stop_process_group(process: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM the process's group, SIGKILL whatever is left after ``grace`` s, reap the leader.

    Services are started with ``start_new_session=True`` so that any helper
    processes they spawn go down with them and none outlive a test run.
    """
    if process.poll() is None:
        signal_group(process, signal.SIGCONT)  # a SIGSTOPped process would hold SIGTERM pending
        signal_group(process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    signal_group(process, signal.SIGKILL)
    process.wait()


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``process`` (gone already: no-op)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


class ServiceProcess:
    """A local service run as one process group: the lifecycle both launchers share.

    Subclasses set ``self._process`` in ``start()`` (which returns ``self``).
    """

    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the service; a no-op if it is not running. Ports and data are kept for ``start()``."""
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
