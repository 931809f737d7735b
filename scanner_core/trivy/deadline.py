"""Waiting for a child process with a deadline, without a thread and without polling.

``Popen.wait(timeout=...)`` polls with sleeps of up to 50 ms (measured: ~30 ms
added to every scan), and a ``threading.Timer`` per scan costs a thread start
(~1.7 ms measured, docs/performance.md). A pidfd (Linux 5.3+) becomes readable
the moment the process exits, so one ``poll`` with the remaining time waits
for exactly the right moment.
"""

from __future__ import annotations

import os
import select
import subprocess
import time


def wait_with_pidfd(process: subprocess.Popen[bytes], timeout_ms: int) -> bool | None:
    """``True`` once ``process`` has exited, ``False`` if ``timeout_ms`` passed first,
    ``None`` when this kernel or Python has no pidfd (the caller then uses a timer).
    The exit status is left for ``process.wait()`` to collect."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        pidfd = pidfd_open(process.pid)
    except ProcessLookupError:
        return True  # already exited and reaped
    except OSError:
        return None  # ENOSYS (older kernel), or seccomp forbids it
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                return False
            if poller.poll(max(1, int(remaining_ms) + 1)):
                return True
    finally:
        os.close(pidfd)
