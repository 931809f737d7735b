"""The pidfd wait behind trivy's deadline (scanner_core/trivy/deadline.py)."""

from __future__ import annotations

import subprocess
import time

from scanner_core.trivy.deadline import wait_with_pidfd


def test_returns_true_as_soon_as_the_child_exits() -> None:
    process = subprocess.Popen(["sleep", "0.2"])
    started = time.monotonic()
    assert wait_with_pidfd(process, 10_000) is True
    assert time.monotonic() - started < 5  # not the 10 s deadline
    assert process.wait() == 0


def test_returns_false_at_the_deadline_and_leaves_the_child_running() -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        assert wait_with_pidfd(process, 100) is False
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_a_child_already_reaped_counts_as_finished() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    assert wait_with_pidfd(process, 1000) is True
