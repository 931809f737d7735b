"""``python -m scanner_core listen`` as a real child process, for the listener tests
and the fault bench; and reading back what a run left in the queues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ListenerProcess:
    """One listener process; its stdout and stderr go to ``log_path``."""

    env: dict[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scanner_core", "listen", *self.args],
                cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 60) -> int | None:
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def listener_env(connection: str, queue_name: str, **extra: str) -> dict[str, str]:
    """The calling test's environment (the scanner's settings) plus the queue's."""
    return {**os.environ, "AzureWebJobsStorage": connection, "SCAN_QUEUE_NAME": queue_name,
            "PYTHONPATH": str(REPO_ROOT), **extra}


def poison_entries(connection: str, queue_name: str) -> list[dict]:
    """The entries of ``<queue>-poison`` (peeked, left in place: 32 at most), as JSON objects."""
    with QueueClient.from_connection_string(connection, f"{queue_name}-poison") as client:
        try:
            return [json.loads(m.content) for m in client.peek_messages(max_messages=32)]
        except ResourceNotFoundError:
            return []


def visible_count(connection: str, queue_name: str) -> int:
    with QueueClient.from_connection_string(connection, queue_name) as client:
        try:
            return len(client.peek_messages(max_messages=32))
        except ResourceNotFoundError:
            return 0


def queue_length(connection: str, queue_name: str) -> int:
    """Visible and invisible messages (the service's approximate count)."""
    with QueueClient.from_connection_string(connection, queue_name) as client:
        try:
            return int(client.get_queue_properties().approximate_message_count)
        except ResourceNotFoundError:
            return 0


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
