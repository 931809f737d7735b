"""Per-process caches (issue 11): what is constant for the process is computed
once, and computed again as soon as what it depends on changes."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from scanner_core.config import load_config_cached
from scanner_core.config.cache import forget_config
from scanner_core.errors import ConfigurationError, ScanFailed
from scanner_core.storage import shared_container_client
from scanner_core.trivy import Trivy
from scanner_core.trivy.versions import forget_versions

FAKE_TRIVY = """#!/bin/sh
echo run >> "{log}"
echo '{{"Version": "{version}"}}'
"""


def _fake_trivy(path: Path, log: Path, version: str) -> Path:
    path.write_text(FAKE_TRIVY.format(log=log, version=version))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_trivy_version_is_asked_once_per_unchanged_executable(tmp_path: Path) -> None:
    forget_versions()
    log = tmp_path / "runs"
    fake = _fake_trivy(tmp_path / "trivy", log, "9.9.1")

    assert [Trivy(fake).version() for _ in range(3)] == ["9.9.1"] * 3  # three objects, as three invocations
    assert log.read_text().count("run") == 1

    _fake_trivy(fake, log, "9.9.22")  # a new binary in place: another size and mtime
    os.utime(fake, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert Trivy(fake).version() == "9.9.22"
    assert log.read_text().count("run") == 2


def test_a_failed_version_question_is_not_cached(tmp_path: Path) -> None:
    forget_versions()
    broken = tmp_path / "trivy"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    for _ in range(2):
        with pytest.raises(ScanFailed):
            Trivy(broken).version()
    _fake_trivy(broken, tmp_path / "runs", "1.0.0")
    assert Trivy(broken).version() == "1.0.0"


def test_configuration_is_parsed_again_only_when_env_or_file_change(scanner_env) -> None:
    forget_config()
    first = load_config_cached()
    assert load_config_cached() is first

    scanner_env.set(TRIVY_HIGH_THRESHOLD="3")
    changed = load_config_cached()
    assert changed is not first and changed.settings.trivy_high_threshold == 3

    scanner_env.write_config({"heartbeat-period": 120, "registries": []})
    os.utime(scanner_env.config_path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert load_config_cached().file.heartbeat_period == 120


def test_a_configuration_error_is_raised_every_time(scanner_env) -> None:
    forget_config()
    scanner_env.set(TRIVY_TIMEOUT="soon")
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="TRIVY_TIMEOUT"):
            load_config_cached()
    scanner_env.set(TRIVY_TIMEOUT="1000")
    assert load_config_cached().settings.trivy_timeout_ms == 1000


def test_one_storage_client_per_container_url_and_options(audits) -> None:
    client = shared_container_client(audits.sas_url, retry_total=0)
    assert shared_container_client(audits.sas_url, retry_total=0) is client
    assert shared_container_client(audits.sas_url, retry_total=3) is not client
