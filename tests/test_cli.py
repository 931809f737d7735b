"""The one-time runner as a user runs it: a real subprocess, real trivy and Azurite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def run_cli(scanner_env, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **scanner_env.values, **extra_env}
    return subprocess.run([sys.executable, "-m", "scanner_core", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_scan_of_a_tarball_prints_where_results_went_and_the_verdict(scanner_env, sample_image, audits):
    result = run_cli(scanner_env, "scan", "--input", str(sample_image.path), "--audit-id", "cli-1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "audit cli-1: succeeded" in out
    (meta_name,) = [n for n in audits.names() if n.endswith("-cli-1/meta")]
    assert f"meta:   {meta_name}" in out
    assert "image:  sample/app:1.0" in out  # read from the tarball
    assert "counts: 1 critical, 2 high, 1 medium, 1 low, 1 unknown, 6 total" in out
    assert "status: failed" in out and "FAILED: 1 critical" in out
    assert audits.json(meta_name)["audit-result"] == "succeeded"


def test_exit_code_mode_for_ci_pipelines(scanner_env, sample_image, audits):
    failed = run_cli(scanner_env, "scan", "--input", str(sample_image.path), "--exit-code", "4")
    assert failed.returncode == 4  # status failed: 1 critical > 0
    passed = run_cli(scanner_env, "scan", "--input", str(sample_image.path), "--exit-code", "4",
                     TRIVY_CRITICAL_THRESHOLD="5")
    assert passed.returncode == 0 and "status: passed" in passed.stdout


def test_failed_audit_exits_non_zero_with_the_reason(scanner_env, registry, pushed_sample, audits):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": "not-it", "insecure": True}]})
    result = run_cli(scanner_env, "scan", pushed_sample.reference)
    assert result.returncode == 1
    assert "audit-failed" in result.stdout
    assert "unauthorized" in result.stderr
    assert "not-it" not in result.stdout + result.stderr


def test_configuration_error_names_the_fields_before_scanning(scanner_env, sample_image, audits):
    result = run_cli(scanner_env, "scan", "--input", str(sample_image.path), LOG_FORMAT="yaml", TRIVY_TIMEOUT="5m")
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "LOG_FORMAT" in result.stderr and "TRIVY_TIMEOUT" in result.stderr
    assert audits.names() == []
    assert scanner_env.values["AZ_BLOB_STORAGE_SAS"].split("sig=")[1] not in result.stderr


def test_usage_errors(scanner_env):
    assert run_cli(scanner_env, "scan").returncode == 2
    bad = run_cli(scanner_env, "scan", "--", "-rf")
    assert bad.returncode == 1 and "must not start with '-'" in bad.stderr


def test_heartbeat_command(scanner_env, audits):
    result = run_cli(scanner_env, "heartbeat")
    assert result.returncode == 0, result.stderr
    heartbeat = audits.json(f"trivy-{scanner_env.short_id}/trivy-{scanner_env.short_id}.meta")
    assert set(heartbeat) >= {"scanner-type", "scanner-id", "scanner-periodicity", "heartbeat-periodicity", "heartbeat"}


def test_json_logs_are_one_object_per_line_without_secrets(scanner_env, sample_image, registry, pushed_sample, audits):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}]})
    result = run_cli(scanner_env, "scan", pushed_sample.reference, "--audit-id", "json-logs", LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {r["level"] for r in records} >= {"info"}
    recorded = [r for r in records if r["message"] == "audit recorded"]
    assert recorded and recorded[0]["audit-id"] == "json-logs" and recorded[0]["image"] == pushed_sample.reference
    assert all("time" in r for r in records)
    everything = result.stdout + result.stderr + audits.everything().decode()
    assert registry.password not in everything
    assert scanner_env.values["AZ_BLOB_STORAGE_SAS"].split("sig=")[1] not in everything


def test_reindex_restores_a_lost_index(scanner_env, sample_image, audits):
    assert run_cli(scanner_env, "scan", "--input", str(sample_image.path), "--audit-id", "lost").returncode == 0
    index = [n for n in audits.all_names() if "/index/" in n]
    assert len(index) == 3  # by time, by repository, by id
    for name in index:
        audits.client.delete_blob(name)
    result = run_cli(scanner_env, "reindex")
    assert result.returncode == 0 and "indexed 1 audits" in result.stdout
    assert [n for n in audits.all_names() if "/index/" in n] == index
