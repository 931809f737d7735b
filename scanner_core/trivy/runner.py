"""Running trivy once: ``trivy image`` for a scan, ``trivy convert`` for an SBOM,
``--download-db-only`` for the DB.

The image reference follows ``--`` and is validated beforehand, so it can
never be read as a flag. How the child process is started, confined and
stopped is ``process.py``'s job; what its failures mean is ``failures.py``'s.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import FailureKind, ScanFailed
from ..redact import Redactor
from ..registry import Credentials, ImageReference, egress_proxy
from .failures import classify_trivy_failure
from ..telemetry import traced
from .process import child_environment, run_with_deadline
from .versions import cached_version

if TYPE_CHECKING:
    from .connection import ServerConnection

if TYPE_CHECKING:
    from .db_kind import DatabaseKind

_STDERR_TAIL_BYTES = 16 * 1024


@dataclass(frozen=True)
class ScanTarget:
    """What to scan: a registry image, a local image tarball, or both (the
    tarball's content, labelled with the image name)."""

    image: ImageReference | None = None
    input_tar: Path | None = None

    def __post_init__(self) -> None:
        if self.image is None and self.input_tar is None:
            raise ValueError("a scan target needs an image reference or an image tarball")


@dataclass(frozen=True)
class TrivyOptions:
    """Flags for one ``trivy image`` run, derived from the validated settings."""

    cache_dir: Path
    timeout_ms: int
    skip_db_update: bool = False
    offline_scan: bool = False
    db_repositories: Sequence[str] = ()
    insecure_registry: bool = False
    severities: Sequence[str] = ()
    ignore_unfixed: bool = False
    scanners: Sequence[str] = ()
    cache_backend: str | None = None
    skip_java_db_update: bool = False
    platform: str | None = None
    ignorefile: Path | None = None
    vex: Sequence[Path] = ()
    scratch_dir: Path | None = None  # the run's private TMPDIR is made under it
    server: ServerConnection | None = None  # client/server mode: no local DB (server.py)
    # A registry image's trivy goes through the egress proxy, which applies the registry guard to
    # every connection, redirect and token realm (registry/egress.py; EGRESS_GUARD).
    egress_guard: bool = True


@dataclass(frozen=True)
class TrivyRun:
    """A finished, successful run: the report is at ``report_path``."""

    report_path: Path
    duration_seconds: float


class Trivy:
    """One trivy executable and how to run it."""

    def __init__(self, executable: Path, redactor: Redactor | None = None) -> None:
        self.executable = executable
        self._redactor = redactor or Redactor()
        self._version: str | None = None

    def version(self) -> str:
        """The executable's version: asked once per process and unchanged file (``versions.py``)."""
        if self._version is None:
            self._version = cached_version(self.executable, self._ask_version)
        return self._version

    def _ask_version(self) -> str:
        try:
            with tempfile.TemporaryDirectory(prefix="trivy-version-") as home:
                completed = subprocess.run(
                    [str(self.executable), "--version", "--format", "json"],
                    env=child_environment(None, Path(home)),
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
            if completed.returncode != 0:
                raise ValueError(self._tail(completed.stderr))
            return str(json.loads(completed.stdout)["Version"])
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as error:
            raise _unusable(self.executable, error) from None

    def build_command(self, target: ScanTarget, options: TrivyOptions, output: Path) -> list[str]:
        command = self._report_flags("image", options, output)
        if options.platform:
            command += ["--platform", options.platform]
        if target.input_tar is not None:
            command += ["--input", str(target.input_tar)]
            return command
        assert target.image is not None
        if options.insecure_registry:
            command.append("--insecure")
        # Registry images only: no Docker daemon is asked, and the name can never be a flag.
        command += ["--image-src", "remote", "--", target.image.canonical]
        return command

    def build_sbom_command(self, inventory: Path, options: TrivyOptions, output: Path) -> list[str]:
        """``trivy sbom`` of a stored inventory: the same DB, severities, suppressions; trivy's
        sbom scanners are vuln and license only (secrets come from the audit that made it)."""
        options = replace(options, scanners=tuple(s for s in options.scanners if s == "vuln") or ("vuln",))
        return [*self._report_flags("sbom", options, output), "--", str(inventory)]

    def _report_flags(self, command_name: str, options: TrivyOptions, output: Path) -> list[str]:
        command = [
            str(self.executable),
            command_name,
            "--format",
            "json",
            "--output",
            str(output),
            "--cache-dir",
            str(options.cache_dir),
            "--no-progress",
            "--skip-version-check",
            "--disable-telemetry",
        ]
        if options.timeout_ms > 0:
            command += ["--timeout", f"{options.timeout_ms}ms"]
        if options.cache_backend:
            command += ["--cache-backend", options.cache_backend]
        if options.server is not None:
            # The token travels as TRIVY_TOKEN in the child's environment (see _run), never here.
            command += ["--server", options.server.url, "--token-header", options.server.token_header]
        if options.skip_db_update:
            command.append("--skip-db-update")
        if options.skip_java_db_update:
            command.append("--skip-java-db-update")
        if options.offline_scan:
            command.append("--offline-scan")
        for repository in options.db_repositories:
            command += ["--db-repository", repository]
        if options.severities:
            command += ["--severity", ",".join(options.severities)]
        if options.ignore_unfixed:
            command.append("--ignore-unfixed")
        if options.scanners:
            command += ["--scanners", ",".join(options.scanners)]
        if "misconfig" in options.scanners:
            # The image's config too; trivy's embedded checks (no checks-bundle download: offline).
            command += ["--image-config-scanners", "misconfig", "--skip-check-update"]
        if options.ignorefile is not None:
            command += ["--ignorefile", str(options.ignorefile)]
        for document in options.vex:
            command += ["--vex", str(document)]
        if options.ignorefile is not None or options.vex:
            command.append("--show-suppressed")  # the report keeps what was suppressed, and why
        return command

    @traced("trivy")
    def scan(
        self,
        target: ScanTarget,
        options: TrivyOptions,
        output: Path,
        credentials: Credentials | None = None,
    ) -> TrivyRun:
        """Runs trivy once; the JSON report is written to ``output``.

        Raises ``ScanFailed`` (transient or permanent) when no report came out, and the
        permanent ``registry-not-allowed`` when the egress proxy refused a connection trivy tried.
        """
        command = self.build_command(target, options, output)
        if not options.egress_guard or target.image is None or target.input_tar is not None:
            return self.run_report(command, options, output, credentials)
        insecure = frozenset({target.image.registry}) if options.insecure_registry else frozenset()
        server = urlsplit(options.server.url).hostname if options.server is not None else None
        with egress_proxy(insecure) as proxy:
            try:
                run = self.run_report(command, options, output, credentials, proxy.environment(
                    (server,) if server else ()))  # fmt: skip
            except ScanFailed:
                if not proxy.refusals:
                    raise
                run = None
        if proxy.refusals:
            raise ScanFailed(f"the egress proxy refused a connection trivy tried: {self._redactor(proxy.refusals[0])}",
                             kind=FailureKind.PERMANENT, reason="registry-not-allowed")  # fmt: skip
        assert run is not None
        return run

    @traced("trivy")
    def scan_inventory(self, inventory: Path, options: TrivyOptions, output: Path) -> TrivyRun:
        """``trivy sbom`` of an inventory (no registry, no layers); raises like ``scan``."""
        return self.run_report(self.build_sbom_command(inventory, options, output), options, output)

    def run_report(
        self, command: list[str], options: TrivyOptions, output: Path, credentials: Credentials | None = None,
        environment: dict[str, str] | None = None,
    ) -> TrivyRun:
        """``environment``: variables for trivy beyond the clean one (the egress proxy's)."""
        secrets = [credentials.password] if credentials else []
        token = options.server.token if options.server is not None else None
        if token:
            secrets.append(token)
        started = time.monotonic()
        self._run(command, options.timeout_ms, credentials, self._redactor.with_secrets(secrets), options.scratch_dir,
                  (environment or {}) | ({"TRIVY_TOKEN": token} if token else {}))
        if not output.is_file():
            raise ScanFailed("trivy exited 0 but wrote no report", kind=FailureKind.TRANSIENT, reason="no-report")
        return TrivyRun(report_path=output, duration_seconds=time.monotonic() - started)

    def convert_to_cyclonedx(self, report: Path, output: Path, timeout_ms: int, scratch_dir: Path | None = None) -> None:
        """Derives a CycloneDX SBOM from a JSON report (``trivy convert``): no second scan."""
        command = [str(self.executable), "convert", "--format", "cyclonedx", "--output", str(output), "--", str(report)]
        self._run(command, timeout_ms, None, self._redactor, scratch_dir)

    def download_db(
        self,
        cache_dir: Path,
        repositories: Sequence[str],
        timeout_ms: int,
        credentials: Credentials | None = None,
        insecure: bool = False,
        kind: DatabaseKind | None = None,
    ) -> None:
        """``trivy image --download-db-only`` (or the ``kind``'s flag) into ``cache_dir``
        (repositories tried in order)."""
        download_flag = kind.download_flag if kind else "--download-db-only"
        repository_flag = kind.repository_flag if kind else "--db-repository"
        command = [
            str(self.executable), "image", download_flag, "--cache-dir", str(cache_dir),
            "--no-progress", "--skip-version-check", "--disable-telemetry",
        ]
        if timeout_ms > 0:
            command += ["--timeout", f"{timeout_ms}ms"]
        for repository in repositories:
            command += [repository_flag, repository]
        if insecure:
            command.append("--insecure")
        secrets = [credentials.password] if credentials else []
        try:
            self._run(command, timeout_ms, credentials, self._redactor.with_secrets(secrets))
        except ScanFailed as failure:
            raise ScanFailed(
                f"the {kind.name if kind else 'vulnerability DB'} could not be downloaded: {failure}",
                kind=FailureKind.TRANSIENT,
                reason="db-unavailable",
            ) from None

    def _run(
        self,
        command: list[str],
        timeout_ms: int,
        credentials: Credentials | None,
        redactor: Redactor,
        scratch_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """The run's private dir is trivy's HOME and TMPDIR (layers are extracted there);
        it is removed when trivy is gone, also after a kill at the deadline. ``extra_env``:
        variables for trivy beyond the clean environment (the server token, never argv)."""
        try:
            with tempfile.TemporaryDirectory(prefix="trivy-run-", dir=scratch_dir) as workdir:
                env = child_environment(credentials, Path(workdir))
                env.update(extra_env or {})
                with (Path(workdir) / "stderr").open("w+b") as stderr:
                    returncode = run_with_deadline(command, env, stderr, workdir, timeout_ms)
                    stderr.seek(0, os.SEEK_END)
                    stderr.seek(max(0, stderr.tell() - _STDERR_TAIL_BYTES))
                    stderr_text = redactor(stderr.read().decode("utf-8", "replace"))
        except OSError as error:  # cannot execute trivy (missing, not executable, busy), or no temp space
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ScanFailed(f"no space left for trivy's scratch directory: {error.strerror}",
                                 kind=FailureKind.TRANSIENT, reason="disk-full") from None
            raise _unusable(self.executable, error) from None
        if returncode is None:
            raise ScanFailed(
                f"trivy did not finish within TRIVY_TIMEOUT={timeout_ms} ms and was killed",
                kind=FailureKind.TRANSIENT,
                reason="timeout",
            )
        if returncode != 0:
            raise classify_trivy_failure(returncode, stderr_text)

    def _tail(self, data: bytes) -> str:
        return self._redactor(data.decode("utf-8", "replace")[-2000:].strip())


def _unusable(executable: Path, error: BaseException) -> ScanFailed:
    detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or type(error).__name__
    return ScanFailed(f"trivy at {executable} could not be run: {detail}", kind=FailureKind.TRANSIENT,
                      reason="trivy-unusable")


