"""A private Docker registry (distribution v2) with htpasswd basic auth, for tests.

Plain HTTP on 127.0.0.1, its own config, storage and log in ``workdir``; it
needs neither /etc/docker/registry nor the Debian package's systemd service
(which, if running, listens on :5000 and is left alone). Images are pushed with
skopeo, credentials going through an auth file, never on the command line.

``auth=`` replaces the htpasswd section of the registry's config, e.g. with
``{"token": {...}}`` for a registry behind a token service (``tests/support/acr.py``).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn

from .ports import ServiceProcess, free_port, log_tail, wait_until

HOST = "127.0.0.1"
# The suite's registries, token services and doubles all listen on loopback, which the scanner
# contacts only when ALLOWED_REGISTRIES lists it (scanner_core/registry/guard.py); "*" keeps the
# default for every other name (tests name registry.example.com, myacr.azurecr.io...). tests/conftest.py
# puts this in the session's environment, so every test and every process a test starts has it.
LOOPBACK_REGISTRIES = "*,127.0.0.1,localhost,[::1]"
REGISTRY_EXECUTABLE = Path("/usr/bin/docker-registry")
SKOPEO_EXECUTABLE = Path("/usr/bin/skopeo")
STARTUP_TIMEOUT = 30.0
PUSH_TIMEOUT = 120.0
_START_ATTEMPTS = 3  # a freshly picked free port can be taken before the registry binds it


class RegistryError(RuntimeError):
    """The registry could not be started, or a push to it failed."""


def unreachable_address() -> str:
    """``127.0.0.1:<port>`` with nothing listening, for "registry is down" tests."""
    return f"{HOST}:{free_port()}"


def write_auth_file(path: Path, address: str, username: str, password: str) -> Path:
    """Write a containers-auth.json (as skopeo/podman/docker read it) for one registry."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    path.write_text(json.dumps({"auths": {address: {"auth": token}}}), encoding="utf-8")
    path.chmod(0o600)
    return path


class Registry(ServiceProcess):
    """A private registry process; ``with Registry(tmp_path) as registry: ...``."""

    def __init__(
        self,
        workdir: Path,
        *,
        username: str = "scanner",
        password: str | None = None,
        executable: Path = REGISTRY_EXECUTABLE,
        startup_timeout: float = STARTUP_TIMEOUT,
        auth: dict | None = None,
        access_log: bool = False,
    ) -> None:
        self.workdir = workdir
        self.auth = auth
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(16)
        self.executable = executable
        self.startup_timeout = startup_timeout
        self.access_log = access_log  # one line per request in the log, for counting downloads
        self.config_path = workdir / "config.yml"
        self.htpasswd_path = workdir / "htpasswd"
        self.auth_file = workdir / "auth.json"
        self.log_path = workdir / "registry.log"
        self.storage_dir = workdir / "storage"
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Registry:
        """Start the registry (on the previous port, if restarted) and wait for ``/v2/`` → 401."""
        if self.running:
            return self
        if not self.executable.exists():
            raise RegistryError(f"{self.executable} not found; install the Debian package docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        self._write_htpasswd()
        attempts = 1 if self._port is not None else _START_ATTEMPTS  # a restart keeps its port
        for attempt in range(1, attempts + 1):
            if self._port is None:
                self._port = free_port()
            try:
                self._spawn()
            except RegistryError:
                if attempt == attempts or "address already in use" not in log_tail(self.log_path, 5):
                    raise
                self._port = None  # lost the race for the port: pick another
            else:
                break
        return self

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, the registry part of image references."""
        if self._port is None:
            raise RegistryError("the registry has not been started yet")
        return f"{HOST}:{self._port}"

    # -- pushing -------------------------------------------------------------

    def push_docker_archive(self, tarball: Path, repository: str, tag: str) -> str:
        """Push a ``docker save``-style tarball; returns the manifest digest ``sha256:...``.

        Note: skopeo converts the archive to a v2s2 manifest, so the digest is
        the registry's, not anything found inside the tarball.
        """
        digest_file = self.workdir / "push.digest"
        digest_file.unlink(missing_ok=True)
        command = [
            str(SKOPEO_EXECUTABLE),
            "--insecure-policy",  # no dependency on /etc/containers/policy.json
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-authfile",
            str(write_auth_file(self.auth_file, self.address, self.username, self.password)),
            "--digestfile",
            str(digest_file),
            f"docker-archive:{tarball}",
            f"docker://{self.address}/{repository}:{tag}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=PUSH_TIMEOUT, check=False)
        if result.returncode != 0:
            raise RegistryError(f"skopeo copy failed ({result.returncode}): {result.stderr.strip()}")
        return digest_file.read_text(encoding="utf-8").strip()

    # -- internals -----------------------------------------------------------

    def _spawn(self) -> None:
        self._write_config()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self.executable), "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=_clean_env(),
                start_new_session=True,
            )
        try:
            if not wait_until(self._answers_401, timeout=self.startup_timeout):
                self._fail(f"registry did not answer 401 on /v2/ within {self.startup_timeout:.0f} s")
        except BaseException:
            self.stop()
            raise

    def _answers_401(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            self._fail(f"registry exited with code {code}")
        try:
            urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False
        self._fail("registry answered /v2/ without credentials: auth is not configured")

    def _write_htpasswd(self) -> None:
        """bcrypt entry made by htpasswd(1); the password goes through stdin, not argv."""
        result = subprocess.run(
            ["htpasswd", "-B", "-i", "-n", self.username],
            input=self.password,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RegistryError(f"htpasswd failed ({result.returncode}): {result.stderr.strip()}")
        self.htpasswd_path.write_text(result.stdout.strip() + "\n", encoding="utf-8")
        self.htpasswd_path.chmod(0o600)

    def _write_config(self) -> None:
        """Registry config; JSON is valid YAML, so no YAML writer or escaping is needed."""
        config = {
            "version": 0.1,
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": not self.access_log}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.address, "secret": secrets.token_hex(16)},
            "auth": self.auth or {"htpasswd": {"realm": "test-registry", "path": str(self.htpasswd_path)}},
            "health": {"storagedriver": {"enabled": False}},
        }
        self.config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    def blob_downloads(self, repository: str, digest: str) -> int:
        """Successful ``GET /v2/<repository>/blobs/<digest>`` so far (needs ``access_log=True``)."""
        if not self.access_log:
            raise RegistryError("blob_downloads needs Registry(access_log=True)")
        needle = f'"GET /v2/{repository}/blobs/{digest} '
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return sum(1 for line in text.splitlines() if needle in line and '" 200 ' in line)

    def _fail(self, reason: str) -> NoReturn:
        raise RegistryError(f"{reason}; last lines of {self.log_path}:\n{log_tail(self.log_path)}")


def _clean_env() -> dict[str, str]:
    """Environment without REGISTRY_* variables, which would override the written config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
