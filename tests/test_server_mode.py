"""trivy's client/server mode (TRIVY_SERVER), against a real ``trivy server``
started from the same binary on the fixture DB."""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scanner_core.audit import AuditOutcome, ScanRequest
from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import ConfigurationError, FailureKind
from scanner_core.heartbeat import build_heartbeat
from scanner_core.trivy import ScanTarget, ServerConnection, Trivy, TrivyOptions
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, expected_findings
from tests.support.registry import unreachable_address
from tests.support.trivy_server import TrivyServer

TOKEN = "srv-token-5f2c9a71"
REQUESTED_AT = datetime(2026, 11, 22, 10, 30, 5, tzinfo=timezone.utc)
EXPECTED = {f.vulnerability_id for f in expected_findings(SAMPLE_PACKAGES, SAMPLE_ADVISORIES)}


@pytest.fixture(scope="module")
def trivy_server(tmp_path_factory, trivy_executable, trivy_cache):
    with TrivyServer(trivy_executable, tmp_path_factory.mktemp("trivy-server"), trivy_cache, token=TOKEN) as server:
        yield server


@pytest.fixture
def client_env(scanner_env, trivy_server, tmp_path):
    """A scanner with no DB at all: an empty cache dir, and a DB repository nobody answers on."""
    scanner_env.set(
        TRIVY_SERVER=trivy_server.url,
        TRIVY_SERVER_TOKEN=TOKEN,
        TRIVY_CACHE_DIR=str(tmp_path / "empty-cache"),
        TRIVY_SKIP_DB_UPDATE="false",
        TRIVY_DB_REPOSITORY=f"{unreachable_address()}/nobody/trivy-db:2",
    )
    return scanner_env


def scan(image_tar: Path, audit_id: str = "via-server") -> AuditOutcome:
    scanner = Scanner(load_config())
    return scanner.scan(ScanRequest(audit_id=audit_id, requested_at=REQUESTED_AT, input_tar=image_tar))


def found(audits, meta: dict) -> set[str]:
    report = audits.json(meta["trivy-audit-path"])
    return {v["VulnerabilityID"] for r in report["Results"] for v in r.get("Vulnerabilities") or []}


def test_server_answers_its_db_age_on_version(trivy_server) -> None:
    version = trivy_server.version()
    assert version["VulnerabilityDB"]["UpdatedAt"] == "2026-11-01T00:00:00Z"


def test_scan_through_the_server_needs_no_local_db(client_env, trivy_server, sample_image, audits, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    outcome = scan(sample_image.path)

    assert outcome.succeeded, outcome.meta.failure_description
    meta = audits.json(outcome.meta_path)
    assert found(audits, meta) == EXPECTED
    assert meta["trivy-server"] == trivy_server.url
    assert meta["trivy-db-updated-at"] == "2026-11-01T00:00:00Z"  # the server's DB, asked on /version
    assert meta["trivy-db-next-update"] == "2026-11-02T00:00:00Z"
    assert not (tmp_path / "empty-cache" / "db").exists()  # nothing was downloaded locally
    assert TOKEN.encode() not in audits.everything()
    assert TOKEN not in caplog.text


def test_the_token_is_never_on_the_command_line(trivy_executable, tmp_path) -> None:
    server = ServerConnection("http://127.0.0.1:4954", TOKEN, "X-Scan-Token")
    options = TrivyOptions(cache_dir=tmp_path, timeout_ms=1000, server=server)
    command = Trivy(trivy_executable).build_command(ScanTarget(input_tar=tmp_path / "i.tar"), options, tmp_path / "o")
    assert TOKEN not in " ".join(command)
    assert command[command.index("--server") + 1] == "http://127.0.0.1:4954"
    assert command[command.index("--token-header") + 1] == "X-Scan-Token"
    assert TOKEN not in repr(server)


def test_a_wrong_token_is_a_transient_server_unauthorized(client_env, sample_image, audits, caplog):
    client_env.set(TRIVY_SERVER_TOKEN="not-the-token")
    outcome = scan(sample_image.path, "wrong-token")

    assert not outcome.succeeded
    assert outcome.failure.kind is FailureKind.TRANSIENT
    meta = audits.json(outcome.meta_path)
    assert meta["failure-reason"] == "server-unauthorized"
    assert "not-the-token" not in json.dumps(meta) and "not-the-token" not in caplog.text


def test_a_custom_token_header(scanner_env, trivy_executable, trivy_cache, sample_image, audits, tmp_path):
    with TrivyServer(trivy_executable, tmp_path / "srv", trivy_cache, token=TOKEN, token_header="X-Scan-Token") as srv:
        scanner_env.set(TRIVY_SERVER=srv.url, TRIVY_SERVER_TOKEN=TOKEN, TRIVY_SERVER_TOKEN_HEADER="X-Scan-Token")
        assert scan(sample_image.path, "custom-header").succeeded
        scanner_env.set(TRIVY_SERVER_TOKEN_HEADER="Trivy-Token")  # the server looks at another header
        refused = scan(sample_image.path, "default-header")
        assert refused.meta.failure_reason == "server-unauthorized"


def test_an_unreachable_server_is_a_transient_server_unreachable(client_env, sample_image, audits):
    client_env.set(TRIVY_SERVER=f"http://{unreachable_address()}")
    outcome = scan(sample_image.path, "no-server")
    assert outcome.failure.kind is FailureKind.TRANSIENT
    assert outcome.meta.failure_reason == "server-unreachable"


def test_the_heartbeat_reports_the_servers_db_age(client_env) -> None:
    heartbeat = build_heartbeat(Scanner(load_config()))
    assert heartbeat.trivy_db_updated_at == "2026-11-01T00:00:00Z"


@pytest.mark.parametrize("url", ["ftp://host:4954", "http://user:pw@host:4954", "http://host:4954/?x=1", "host:4954"])
def test_a_bad_server_url_names_the_setting(scanner_env, url) -> None:
    scanner_env.set(TRIVY_SERVER=url, TRIVY_SERVER_TOKEN=TOKEN)
    with pytest.raises(ConfigurationError) as raised:
        load_config()
    assert "TRIVY_SERVER" in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_the_token_is_not_in_the_trivy_childs_argv_while_it_runs(client_env, sample_image, audits, monkeypatch):
    """What the kernel shows other local users: the running child's argv and environment."""
    seen: list[tuple[list[str], dict[str, str]]] = []
    original = subprocess.Popen

    def spy(command, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((list(command), dict(kwargs.get("env") or {})))
        return original(command, *args, **kwargs)

    monkeypatch.setattr("scanner_core.trivy.process.subprocess.Popen", spy)
    assert scan(sample_image.path, "argv").succeeded
    scans = [(argv, env) for argv, env in seen if "--server" in argv]
    assert scans and all(TOKEN not in " ".join(argv) for argv, _ in scans)
    assert all(env.get("TRIVY_TOKEN") == TOKEN for _, env in scans)
