"""A real Prometheus (Debian's ``prometheus`` package) for the metrics tests.

Started with a config the test writes, listening on 127.0.0.1 only, its TSDB
in a temp dir; nothing in the config reaches the network (static loopback
targets, no alertmanager, no remote write), and the package's binary has no
update check. Queried through its HTTP API (``/api/v1/query``, ``/api/v1/alerts``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests
import yaml


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError("prometheus is not installed: scripts/setup.sh installs Debian's prometheus package")
    return found


class Prometheus:
    """``prometheus`` scraping ``jobs`` (name -> (base URL, metrics path, query params)) every second."""

    def __init__(
        self,
        workdir: Path,
        jobs: dict[str, tuple[str, str, dict[str, str]]],
        rule_files: list[Path] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": name,
                    "metrics_path": path,
                    "params": {key: [value] for key, value in params.items()},
                    "static_configs": [{"targets": [base.removeprefix("http://")]}],
                }
                for name, (base, path, params) in jobs.items()
            ],
        }
        if rule_files:
            config["rule_files"] = [str(path) for path in rule_files]
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - a fixed binary and test-written arguments
            [
                prometheus_binary(),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)},
        )
        self._wait(lambda: requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200, 60, "ready")

    def _wait(self, check: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}): {self.log()}")
            try:
                if check():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not {what} after {seconds} s: {self.log()[-2000:]}")

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``expression`` evaluates to now."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        document = answer.json()
        if document.get("status") != "success":
            raise ValueError(f"{expression!r}: {document.get('errorType')}: {document.get('error')}")
        data = document["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, expression: str) -> float:
        """The single value of ``expression``."""
        result = self.query(expression)
        assert len(result) == 1, (expression, result)
        return float(result[0]["value"][1])

    def targets_up(self) -> dict[str, str]:
        answer = requests.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return {t["labels"]["job"]: t["health"] for t in answer["data"]["activeTargets"]}

    def alerts(self) -> list[dict[str, Any]]:
        return list(requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        groups = requests.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def wait_until(self, check: Callable[[], bool], seconds: float = 60, what: str = "there") -> None:
        self._wait(check, seconds, what)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
