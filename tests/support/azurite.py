"""Azurite (the Azure Storage emulator) as a context-managed test service.

One Azurite process serves blob, queue and table on loopback ports chosen by
the kernel. The ports and the ``--location`` data folder are kept across
``stop()``/``start()``, so a test can take storage away (uploads then fail with
"connection refused") and bring it back at the same URLs with its data intact.

``Azurite(workdir, oauth=True)`` serves HTTPS with a self-signed certificate
made for the run (``ca_bundle``) and checks bearer tokens (``--oauth basic``:
issuer, audience and lifetime, not the signature), so a token credential is
really used; trust it with ``REQUESTS_CA_BUNDLE`` or ``connection_verify``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, generate_container_sas
from azure.storage.queue import QueueServiceClient

from .ports import ServiceProcess, log_tail, port_accepts, signal_group, wait_until
from .tls import self_signed

DEV_ACCOUNT_NAME = "devstoreaccount1"
# The fixed, publicly documented key of the emulator's development account.
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0

_REPO_ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at https?://[^:]+:(\d+)")


def default_executable() -> Path:
    """The Azurite pinned in the repo's package.json, as installed by ``npm ci``."""
    return _REPO_ROOT / "node_modules" / ".bin" / "azurite"


@dataclass(frozen=True)
class AzuritePorts:
    """The three ports one Azurite process listens on."""

    blob: int
    queue: int
    table: int


class AzuriteError(RuntimeError):
    """Azurite could not be started or is not running."""


class Azurite(ServiceProcess):
    """A private Azurite process; ``with Azurite(tmp_path) as storage: ...``."""

    def __init__(
        self,
        workdir: Path,
        executable: Path | None = None,
        *,
        startup_timeout: float = STARTUP_TIMEOUT,
        oauth: bool = False,
    ) -> None:
        self.workdir = workdir
        self.oauth = oauth
        self._tls = self_signed(workdir / "tls", "azurite") if oauth else None
        self.executable = executable if executable is not None else default_executable()
        self.startup_timeout = startup_timeout
        self.log_path = workdir / "azurite.log"
        self.debug_log_path = workdir / "azurite-debug.log"
        self.data_dir = workdir / "data"
        self._ports: AzuritePorts | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Azurite:
        """Start Azurite (on the ports of the previous run, if any) and wait until it serves."""
        if self.running:
            return self
        if not self.executable.exists():
            raise AzuriteError(f"Azurite not found at {self.executable}; run `npm ci` in {_REPO_ROOT} first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        ports = self._ports or AzuritePorts(0, 0, 0)  # 0: the kernel picks, no race with other runs
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(ports),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=_clean_env(),
                start_new_session=True,
            )
        try:
            self._ports = self._await_ports(log_offset)
            self._await_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def pause(self) -> None:
        """SIGSTOP Azurite: connections are still accepted by the kernel but never answered.

        Use this to provoke client *timeouts*; use ``stop()`` for *refused* connections.
        """
        signal_group(self._require_process(), signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused Azurite."""
        signal_group(self._require_process(), signal.SIGCONT)

    # -- addresses -----------------------------------------------------------

    @property
    def ports(self) -> AzuritePorts:
        if self._ports is None:
            raise AzuriteError("Azurite has not been started yet")
        return self._ports

    @property
    def scheme(self) -> str:
        return "https" if self.oauth else "http"

    @property
    def ca_bundle(self) -> str | bool:
        """What clients pass as ``connection_verify``: the run's certificate with ``oauth``."""
        return str(self._tls.cert_path) if self._tls is not None else True

    @property
    def blob_endpoint(self) -> str:
        return f"{self.scheme}://{HOST}:{self.ports.blob}/{DEV_ACCOUNT_NAME}"

    @property
    def queue_endpoint(self) -> str:
        return f"{self.scheme}://{HOST}:{self.ports.queue}/{DEV_ACCOUNT_NAME}"

    @property
    def table_endpoint(self) -> str:
        return f"{self.scheme}://{HOST}:{self.ports.table}/{DEV_ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={DEV_ACCOUNT_NAME};"
            f"AccountKey={DEV_ACCOUNT_KEY};BlobEndpoint={self.blob_endpoint};"
            f"QueueEndpoint={self.queue_endpoint};TableEndpoint={self.table_endpoint};"
        )

    # -- helpers for tests ---------------------------------------------------

    def create_container(self, name: str) -> None:
        """Create a blob container; an existing one is left as it is."""
        service = BlobServiceClient.from_connection_string(self.connection_string, connection_verify=self.ca_bundle)
        with service, contextlib.suppress(ResourceExistsError):
            service.create_container(name)

    def container_sas_url(
        self,
        container: str,
        *,
        permissions: str = "racwdl",
        expiry: timedelta = timedelta(hours=2),
    ) -> str:
        """A container URL with a SAS token, as the scanner receives it from its callers."""
        sas = generate_container_sas(
            account_name=DEV_ACCOUNT_NAME,
            container_name=container,
            account_key=DEV_ACCOUNT_KEY,
            permission=permissions,
            expiry=datetime.now(UTC) + expiry,
        )
        return f"{self.blob_endpoint}/{container}?{sas}"

    # -- internals -----------------------------------------------------------

    def _command(self, ports: AzuritePorts) -> list[str]:
        tls = []
        if self._tls is not None:
            tls = ["--oauth", "basic", "--cert", str(self._tls.cert_path), "--key", str(self._tls.key_path)]
        return [
            str(self.executable),
            "--blobHost", HOST, "--blobPort", str(ports.blob),
            "--queueHost", HOST, "--queuePort", str(ports.queue),
            "--tableHost", HOST, "--tablePort", str(ports.table),
            "--location", str(self.data_dir),
            "--debug", str(self.debug_log_path),
            "--silent",
            "--loose",
            "--skipApiVersionCheck",  # the SDK may be newer than the emulator
            "--disableProductStyleUrl",  # account always from the path, never from the host name
            "--disableTelemetry",  # no outbound calls from tests
            *tls,
        ]  # fmt: skip

    def _await_ports(self, log_offset: int) -> AzuritePorts:
        """Read the bound ports from Azurite's start-up lines (this run's part of the log only)."""
        found: dict[str, int] = {}

        def all_listening() -> bool:
            self._require_process()
            with self.log_path.open("rb") as log:
                log.seek(log_offset)
                text = log.read().decode("utf-8", errors="replace")
            found.update((name.lower(), int(port)) for name, port in _LISTENING.findall(text))
            return len(found) == 3

        if not wait_until(all_listening, timeout=self.startup_timeout):
            self._fail(f"Azurite did not report listening ports within {self.startup_timeout:.0f} s")
        return AzuritePorts(blob=found["blob"], queue=found["queue"], table=found["table"])

    def _await_ready(self) -> None:
        """Wait until the ports accept and real SDK calls (no retries) succeed."""

        def ready() -> bool:
            self._require_process()
            if not all(port_accepts(p) for p in (self.ports.blob, self.ports.queue, self.ports.table)):
                return False
            try:
                with BlobServiceClient.from_connection_string(
                    self.connection_string, retry_total=0, connection_timeout=2, read_timeout=5,
                    connection_verify=self.ca_bundle,
                ) as blobs:
                    blobs.get_service_properties()
                with QueueServiceClient.from_connection_string(
                    self.connection_string, retry_total=0, connection_timeout=2, read_timeout=5,
                    connection_verify=self.ca_bundle,
                ) as queues:
                    queues.get_service_properties()
            except Exception:  # any failure just means "not yet"
                return False
            return True

        if not wait_until(ready, timeout=self.startup_timeout, interval=0.2):
            self._fail(f"Azurite did not answer SDK calls within {self.startup_timeout:.0f} s")

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise AzuriteError("Azurite is not running")
        if self._process.poll() is not None:
            self._fail(f"Azurite exited with code {self._process.returncode}")
        return self._process

    def _fail(self, reason: str) -> NoReturn:
        raise AzuriteError(f"{reason}; last lines of {self.log_path}:\n{log_tail(self.log_path)}")


def _clean_env() -> dict[str, str]:
    """The caller's environment without Azurite settings that would change its accounts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AZURITE_")}
