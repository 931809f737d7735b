"""A ``trivy server`` this instance starts on loopback for a batch of rescans (issue 26).

Every ``trivy sbom`` opens the vulnerability DB again; a server opens it once and then
matches each inventory a client sends it. The server runs the instance's own trivy on
the instance's own cache dir (the DB it already has: ``--skip-db-update``; trivy opens
the DB read-only, so standalone scans on the same cache dir go on beside it) with an
in-memory layer cache (``--cache-backend memory``: nothing written beside the DB), on
``127.0.0.1`` and a free port, for as long as the batch runs.

Its token is made here (``secrets.token_urlsafe``), for this server alone, and reaches it
as ``TRIVY_TOKEN`` in its environment, never on its command line; the clients get it the
same way (``runner.py``). Like every trivy child it dies with the thread that started it
(``process.py``: the parent-death signal), so a worker killed mid-batch leaves no server.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from ..redact import Redactor
from .connection import ServerConnection
from .process import child_environment, die_with_parent, stop_group

HOST = "127.0.0.1"
START_ATTEMPTS = 3  # a port taken between choosing it and the server binding it: try another
_HEALTH_POLL_SECONDS = 0.02
_LOG_TAIL_BYTES = 1024


class LocalServerFailed(RuntimeError):
    """The server did not start (the message holds its log's tail, redacted; never the token)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class LocalTrivyServer:
    """``with LocalTrivyServer(trivy, cache_dir) as server: server.connection``."""

    def __init__(
        self, executable: Path, cache_dir: Path, *, scratch_dir: Path | None = None,
        startup_seconds: float = 30.0, redactor: Redactor | None = None,
    ) -> None:
        self.executable = executable
        self.cache_dir = cache_dir
        self.scratch_dir = scratch_dir
        self.startup_seconds = startup_seconds
        self._token = secrets.token_urlsafe(32)
        self._redactor = (redactor or Redactor()).with_secrets([self._token])
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.connection: ServerConnection | None = None

    def __enter__(self) -> LocalTrivyServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> ServerConnection:
        """Starts the server and waits until it answers ``GET /healthz``; ``LocalServerFailed`` if it
        does not within ``startup_seconds`` (after ``START_ATTEMPTS`` ports)."""
        self._workdir = tempfile.TemporaryDirectory(prefix="trivy-server-", dir=self.scratch_dir)
        failure = "not started"
        for _ in range(START_ATTEMPTS):
            url = f"http://{HOST}:{free_port()}"
            self._spawn(url)
            failure = self._wait_until_healthy(url)
            if not failure:
                self.connection = ServerConnection(url, self._token)
                return self.connection
            self._end_process()
        self.stop()
        raise LocalServerFailed(failure)

    def stop(self) -> None:
        self._end_process()
        self.connection = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def _spawn(self, url: str) -> None:
        assert self._workdir is not None
        home = Path(self._workdir.name)
        env = child_environment(None, home) | {"TRIVY_TOKEN": self._token}
        command, preexec = die_with_parent([
            str(self.executable), "server", "--listen", url.removeprefix("http://"),
            "--cache-dir", str(self.cache_dir), "--cache-backend", "memory", "--skip-db-update",
            "--no-progress",  # (trivy server has no --disable-telemetry flag)
        ])  # fmt: skip
        with (home / "server.log").open("ab") as log:
            self._process = subprocess.Popen(
                command, preexec_fn=preexec,  # noqa: PLW1509 - only where setpriv is missing (process.py)
                env=env, cwd=home, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )

    def _wait_until_healthy(self, url: str) -> str:
        """'' once it answers; else why not."""
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            if not self.running:
                return f"trivy server exited during start-up: {self._log_tail()}"
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:  # noqa: S310 - loopback
                    if answer.status == 200:
                        return ""
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(_HEALTH_POLL_SECONDS)
        return f"trivy server did not answer GET /healthz within {self.startup_seconds:g} s: {self._log_tail()}"

    def _log_tail(self) -> str:
        if self._workdir is None:
            return ""
        path = Path(self._workdir.name) / "server.log"
        try:
            data = path.read_bytes()[-_LOG_TAIL_BYTES:]
        except OSError:
            return ""
        return self._redactor(data.decode("utf-8", "replace").strip())

    def _end_process(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_group(process)
