"""The trivy child process: its environment, its deadline, and its end.

* The environment is built from scratch: an allow-list of the parent's
  variables (PATH, proxies, CA bundles) and nothing named ``TRIVY_*``, so a
  wrapper setting can never reach trivy with a different meaning. Registry
  credentials travel only in a Docker config file in the run's private
  ``HOME``, keyed by registry host.
* The child runs in its own process group; at the deadline the whole group is
  terminated, then killed, and reaped.
* It never outlives its worker: it gets the parent-death signal (SIGKILL when
  the thread that started it ends, e.g. the worker is killed -9 or OOM-killed),
  set by util-linux's ``setpriv --pdeathsig KILL`` between fork and exec
  (measured: +0.9 ms per start; a ``preexec_fn`` doing the same ``prctl`` through
  ctypes costs ~15 ms, a full fork, and is not safe with threads, so it is only
  the fallback where ``setpriv`` is missing). Its own process group is kept, so
  a deadline still kills the whole tree.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ..registry import DOCKER_HUB, Credentials
from .deadline import wait_with_pidfd

_INHERITED_VARIABLES = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
_KILL_GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_EXEC_FAILED = (126, 127)  # "found but not executable", "not found"


def child_environment(credentials: Credentials | None, home: Path) -> dict[str, str]:
    """The trivy child's whole environment (see the module docstring)."""
    env = {name: os.environ[name] for name in _INHERITED_VARIABLES if name in os.environ}
    env.setdefault("PATH", os.defpath)
    # A private HOME: no stray ~/.docker/config.json or trivy.yaml changes what is scanned.
    env["HOME"] = str(home)
    env["TMPDIR"] = str(home)
    docker_dir = home / ".docker"
    docker_dir.mkdir(mode=0o700, exist_ok=True)
    auths = {}
    if credentials is not None:
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        auths[_docker_config_key(credentials.registry)] = {"auth": token}
    config = docker_dir / "config.json"
    config.touch(mode=0o600)
    config.write_text(json.dumps({"auths": auths}), encoding="utf-8")
    env["DOCKER_CONFIG"] = str(docker_dir)
    return env


def _docker_config_key(registry: str) -> str:
    # Docker Hub's credentials are filed under its legacy index URL by convention.
    return "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry




@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv (Debian: essential, so in every Debian-based image), once per process."""
    return shutil.which("setpriv") if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # runs in the child between fork and exec (fallback only)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)


def die_with_parent(command: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """``command`` and a ``preexec_fn`` such that the child is killed when its parent dies."""
    setpriv = _setpriv()
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--", *command], None
    return command, (_die_with_parent if sys.platform.startswith("linux") else None)


def run_with_deadline(
    command: list[str], env: dict[str, str], stderr: object, cwd: str, timeout_ms: int
) -> int | None:
    """Runs ``command``; returns its exit code, or ``None`` if it was killed at the deadline."""
    original = command
    command, preexec = die_with_parent(command)
    process = subprocess.Popen(
        command,
        preexec_fn=preexec,  # noqa: PLW1509 - only where setpriv is missing; see the module docstring
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,  # type: ignore[arg-type]
        start_new_session=True,  # its own process group, so the whole tree can be killed
    )
    # A blocking wait() returns the moment trivy exits; wait(timeout=...) would poll with
    # sleeps of up to 50 ms (measured: ~30 ms added to every scan). The deadline is a
    # pidfd (deadline.py), or a timer where there is none.
    returncode = _wait_with_deadline(process, timeout_ms)
    if returncode is None:
        return None
    if preexec is None and command[0] != original[0] and returncode in _EXEC_FAILED:
        # setpriv could not exec trivy (its exit status, as a shell's; trivy itself never uses
        # these): the same error Popen raises when it cannot exec trivy directly.
        raise OSError(errno.ENOEXEC, f"not an executable this system can run (exit status {returncode})")
    return returncode


def _wait_with_deadline(process: subprocess.Popen[bytes], timeout_ms: int) -> int | None:
    """The exit code, or ``None`` when the deadline passed and the group was killed."""
    if timeout_ms > 0:
        try:
            finished = wait_with_pidfd(process, timeout_ms)
        except BaseException:
            _kill_group(process)
            raise
        if finished is False:
            _kill_group(process)
            return None
        if finished:
            return process.wait()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _kill_group(process)

    timer = threading.Timer(timeout_ms / 1000, expire) if timeout_ms > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        returncode = process.wait()
    except BaseException:
        _kill_group(process)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():
        assert timer is not None
        timer.join()  # the whole group is gone before we report
        return None
    return returncode


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=_KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        if sig is signal.SIGTERM:
            # The leader is gone; make sure no grandchild survives it.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return
    process.wait()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Ends a long-lived child (a loopback ``trivy server``): its group terminated, killed after
    a grace period if need be, and reaped."""
    _kill_group(process)
