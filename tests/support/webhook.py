"""A real webhook receiver on 127.0.0.1 (stdlib ``http.server``), and a tiny
static file server for pages.

``WebhookReceiver`` records every request it gets (method, path, headers,
body) and answers each with the next status of ``statuses`` (then 204), so a
test can make it fail a few times before it accepts: that is how a receiver
that is down or overloaded looks to the sender.

With a ``secret`` it is a receiver that verifies, with the five lines the
docs/monitor.md gives receivers (``verify``, written apart from the scanner's signing
code): a request whose signature does not match its raw body, or whose
timestamp is older than ``tolerance_s``, is answered ``401`` and recorded with
``verified=False``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from .loopback_http import LoopbackHttpServer
from .ports import wait_until


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    verified: bool | None = None  # None: the receiver has no secret


    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver(LoopbackHttpServer):
    """Listens on 127.0.0.1:<free port> until closed; thread-safe record of requests."""

    statuses: list[int] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    secret: bytes | None = None
    tolerance_s: int = 300

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                verified = None if receiver.secret is None else verify(
                    receiver.secret, self.headers, body, receiver.tolerance_s)
                status = 401 if verified is False else receiver._next_status()
                receiver._record(
                    ReceivedRequest(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, status,
                        verified,
                    )
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
                return

        self._serve(Handler, "webhook-receiver")

    @property
    def url(self) -> str:
        return f"{self.base_url}/hooks/scanner"

    def accepted(self) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.answered < 300]

    def all(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        return wait_until(lambda: len(self.all()) >= count, timeout=timeout)

    def _next_status(self) -> int:
        with self._lock:
            return self.statuses.pop(0) if self.statuses else 204

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self.requests.append(request)


def verify(secret: bytes, headers: Any, body: bytes, tolerance: int = 300) -> bool:
    """The receiver check of docs/monitor.md, verbatim: signature over ``<timestamp>.<raw body>``, recent timestamp."""
    ts = headers.get("X-Signature-Timestamp", "0")
    expected = "sha256=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return ts.isdigit() and abs(time.time() - int(ts)) <= tolerance and hmac.compare_digest(
        expected, headers.get("X-Signature-256", ""))


class StaticServer(LoopbackHttpServer):
    """Serves ``files`` (path → bytes, e.g. ``{"/index.html": ..., "/api/x": ...}``)
    from memory on 127.0.0.1, with the content types given by suffix."""

    def __init__(self, files: dict[str, bytes], content_types: Iterable[tuple[str, str]] = ()) -> None:
        types = dict(content_types)
        self.hits: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.hits.append(self.path)
                path = self.path.split("?", 1)[0]
                body = files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                suffix = Path(path).suffix
                self.send_response(200)
                self.send_header("Content-Type", types.get(path) or types.get(suffix) or "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._serve(Handler, "static-server")
