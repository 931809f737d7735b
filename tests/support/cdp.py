"""Headless Chromium driven over the Chrome DevTools Protocol, for tests that
click: ``--remote-debugging-pipe`` (the browser reads commands on fd 3 and
writes answers on fd 4, each a JSON message ended by a NUL byte; the transport
Puppeteer and Playwright use), so no websocket client is needed. Clicks are real
mouse events (``Input.dispatchMouseEvent`` at the element's centre), not
``element.click()`` from a script.

Protocol: https://chromedevtools.github.io/devtools-protocol/ (Target, Page,
Runtime, Input domains).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from typing import Any

from .browser import FLAGS, BrowserError


def _pipe_fds(commands_read: int, answers_write: int) -> None:
    """In the child: the pipe's ends as fds 3 and 4, where Chromium looks for them
    (moved out of the way first, in case either already is 3 or 4)."""
    high_read, high_write = os.dup(commands_read), os.dup(answers_write)
    os.dup2(high_read, 3)
    os.dup2(high_write, 4)


class Tab:
    """One page of the browser (a target attached in flat mode)."""

    def __init__(self, browser: DevToolsBrowser, session_id: str) -> None:
        self.browser, self.session_id = browser, session_id

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, session_id=self.session_id)

    def navigate(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Polls ``expression`` until it is truthy; its value.

        While the page is still loading, ``document.body`` may not exist yet and
        the expression may throw: a throw counts as "not yet", and the last one is
        reported if the expression never becomes truthy.
        """
        deadline = time.monotonic() + timeout
        last_error: BrowserError | None = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except BrowserError as error:
                last_error, value = error, None
            if value:
                return value
            time.sleep(0.1)
        raise BrowserError(f"{expression!r} still falsy after {timeout} s (last error: {last_error}); "
                           f"DOM: {self.dom()[-3000:]}")

    def click(self, selector: str) -> None:
        """A left click at the centre of the first element matching ``selector``."""
        box = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1})

    def type_into(self, selector: str, text: str) -> None:
        self.click(selector)
        self.send("Input.insertText", {"text": text})

    def dom(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))


class DevToolsBrowser:
    """A headless Chromium with a fresh profile; ``with`` closes it."""

    def __init__(self, binary: str, *, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-cdp-")
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {"HOME": self._profile.name}
        self._process = subprocess.Popen(
            [binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}",
             "--window-size=1280,900", "about:blank"],
            preexec_fn=lambda: _pipe_fds(commands_read, answers_write), close_fds=False, env=env,
            stdout=subprocess.DEVNULL, stderr=None if os.environ.get("CDP_DEBUG") else subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._next_id = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def new_tab(self, url: str) -> Tab:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tab = Tab(self, session)
        tab.navigate(url)
        return tab

    def send(self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            answers: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
            self._waiting[message_id] = answers
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        try:
            answer = answers.get(timeout=self.timeout_s)
        except queue.Empty:
            raise BrowserError(f"no answer to {method} within {self.timeout_s} s") from None
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._answers, 65536):
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        waiting = self._waiting.pop(message["id"], None)
                    if waiting is not None:
                        waiting.put(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except BrowserError:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        os.close(self._commands)
        self._reader.join(timeout=5)
        os.close(self._answers)
        self._profile.cleanup()

    def __enter__(self) -> DevToolsBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
