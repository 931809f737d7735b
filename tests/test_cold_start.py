"""Cold start: what importing the function app and ``python -m scanner_core --help``
load. Every cold instance and every CLI run pays for it, so the heavy modules
(the storage SDKs and the HTTP stack under them, YAML, the HTTP API, the core)
must come with the first invocation that needs them, not at import time.

Not a timing assertion (timings depend on the machine; ``bench/run_all.sh``
measures the wall time): a list of modules that must not be loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

HEAVY = (
    "azure.storage",
    "azure.core.pipeline.transport",
    "requests",
    "urllib3",
    "cryptography",
    "yaml",
    "httpx",
    "msgspec",
    "tenacity",
    "prometheus_client",
    "opentelemetry",
    "azure.monitor",
    "scanner_core.metrics.snapshot",
    "scanner_core.functions.metrics_api",
    "scanner_core.core",
    "scanner_core.functions.http_api",
    "scanner_core.functions.handlers",
    "scanner_core.storage.blob",
    "scanner_core.storage.index",
    "scanner_core.trivy.runner",
)


def _loaded_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    probe = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return list(json.loads(completed.stdout.strip().splitlines()[-1]))


def _heavy(modules: list[str]) -> list[str]:
    return [name for name in modules if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)]


def test_importing_the_function_app_loads_no_heavy_module() -> None:
    modules = _loaded_after("import function_app\nassert len(function_app.app.get_functions()) >= 7")
    assert "scanner_core.functions.scan_queue" in modules  # the probe did index the functions
    assert _heavy(modules) == []


def test_cli_help_loads_no_heavy_module() -> None:
    modules = _loaded_after(
        """
        from scanner_core.cli import main
        try:
            main(["--help"])
        except SystemExit as stop:
            assert stop.code == 0
        """
    )
    assert "scanner_core.cli" in modules
    assert _heavy(modules) == []
    assert "pydantic" not in modules


@pytest.mark.parametrize("verb", ["scan", "heartbeat", "enqueue", "reindex", "listen"])
def test_each_verb_help_loads_no_heavy_module(verb: str) -> None:
    modules = _loaded_after(
        f"""
        from scanner_core.cli import main
        try:
            main([{verb!r}, "--help"])
        except SystemExit as stop:
            assert stop.code == 0
        """
    )
    assert _heavy(modules) == []


def test_the_probe_sees_heavy_modules_when_they_are_used() -> None:
    """The check itself can fail: the first scan's imports are heavy."""
    modules = _loaded_after("from scanner_core.functions import handlers")
    assert "azure.storage.blob" in modules
    assert "scanner_core.core" in modules
