"""Headless Chromium (Debian's ``chromium``) for tests of pages: load a URL, let
its scripts run, read the DOM they left, save a screenshot.

Each call is one short-lived browser with a fresh profile (``--user-data-dir``
in a temporary directory) and everything that would reach the internet or
keep state switched off. ``--virtual-time-budget`` lets the page's timers and
its ``fetch`` calls finish before ``--dump-dom`` prints the document: virtual
time does not advance while a request is in flight, so the DOM printed is the
one the page's scripts built from the API's answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
)


class BrowserError(RuntimeError):
    """Chromium is missing, or did not render the page."""


def find_chromium() -> Path:
    """The Chromium binary; ``CHROMIUM`` overrides. Raises (never skips) when absent."""
    if override := os.environ.get("CHROMIUM"):
        return Path(override)
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return Path(found)
    raise BrowserError("chromium is not installed: run scripts/setup.sh (Debian package 'chromium')")


@dataclass(frozen=True)
class Chromium:
    """One headless Chromium binary; every method starts and ends its own browser."""

    binary: Path
    budget_ms: int = 10_000
    timeout_s: float = 90.0

    def dump_dom(self, url: str, *, window: tuple[int, int] = (1280, 900)) -> str:
        """The serialised DOM of ``url`` after its scripts ran (``--dump-dom``)."""
        return self._run(url, ["--dump-dom"], window).stdout

    def screenshot(self, url: str, path: Path, *, window: tuple[int, int] = (1280, 900)) -> Path:
        """A PNG of ``url`` as rendered after its scripts ran (``--screenshot``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._run(url, [f"--screenshot={path}"], window)
        if not path.is_file() or path.stat().st_size == 0:
            raise BrowserError(f"chromium wrote no screenshot to {path}")
        return path

    def _run(self, url: str, action: list[str], window: tuple[int, int]) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            command = [
                str(self.binary),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={window[0]},{window[1]}",
                f"--virtual-time-budget={self.budget_ms}",
                *action,
                url,
            ]
            # No proxy from the developer's environment: the page talks to 127.0.0.1 only.
            env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {"HOME": profile}
            try:
                result = subprocess.run(
                    command, capture_output=True, text=True, timeout=self.timeout_s, env=env, check=False
                )
            except subprocess.TimeoutExpired:
                raise BrowserError(f"chromium did not finish {url} within {self.timeout_s} s") from None
        if result.returncode != 0:
            raise BrowserError(f"chromium exited {result.returncode} for {url}: {result.stderr[-2000:]}")
        return result
