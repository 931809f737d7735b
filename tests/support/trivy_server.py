"""A real ``trivy server`` (the same binary the scanner runs), for client/server tests.

It serves the DB in its own cache dir (copied from a fixture DB built with
``trivy_db.build_trivy_db``) with ``--skip-db-update``, on a kernel-chosen
loopback port, with its token given as ``TRIVY_TOKEN`` in its environment.
Its layer cache (``fanal/``) lives in that cache dir too: a server must not
share a cache dir with local scans, whose trivy would wait on the lock of
the server's bolt file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import NoReturn

from .ports import ServiceProcess, free_port, log_tail, wait_until

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
DEFAULT_TOKEN_HEADER = "Trivy-Token"


class TrivyServerError(RuntimeError):
    """The server could not be started."""


class TrivyServer(ServiceProcess):
    """``with TrivyServer(trivy, workdir, db_cache) as server: server.url``."""

    def __init__(
        self,
        trivy: Path,
        workdir: Path,
        db_cache: Path,
        *,
        token: str | None = None,
        token_header: str = DEFAULT_TOKEN_HEADER,
    ) -> None:
        self.trivy = trivy
        self.workdir = workdir
        self.db_cache = db_cache
        self.token = token
        self.token_header = token_header
        self.cache_dir = workdir / "server-cache"
        self.log_path = workdir / "trivy-server.log"
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise TrivyServerError("the trivy server has not been started")
        return f"http://{HOST}:{self._port}"

    def start(self) -> TrivyServer:
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.cache_dir / "db").is_dir():
            shutil.copytree(self.db_cache / "db", self.cache_dir / "db")
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        self._port = self._port or free_port()
        env = {"PATH": os.defpath, "HOME": str(home), "TMPDIR": str(home)}
        if self.token:
            env["TRIVY_TOKEN"] = self.token  # like the scanner: a secret never goes on argv
        command = [
            str(self.trivy), "server", "--listen", f"{HOST}:{self._port}", "--cache-dir", str(self.cache_dir),
            "--skip-db-update", "--token-header", self.token_header,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, env=env, cwd=home, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        if not wait_until(self._answers, timeout=STARTUP_TIMEOUT):
            self.stop()
            self._fail("did not answer GET /healthz")
        return self

    def version(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.url}/version", timeout=5) as response:  # noqa: S310 - loopback
            return dict(json.loads(response.read()))

    def _answers(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            self._fail("exited during start-up")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:  # noqa: S310 - loopback
                return response.status == 200
        except OSError:
            return False

    def _fail(self, reason: str) -> NoReturn:
        raise TrivyServerError(f"trivy server {reason}; log tail:\n{log_tail(self.log_path)}")
