"""The exploitability feeds as the tests write them, served from 127.0.0.1.

``kev_catalogue`` follows CISA's KEV JSON schema (``vulnerabilities[]`` with
``cveID``, ``dateAdded``, ``dueDate``, ``knownRansomwareCampaignUse``);
``epss_csv_gz`` follows FIRST's EPSS file (gzipped CSV: a
``#model_version:...,score_date:...`` line, the ``cve,epss,percentile`` header,
then rows). ``FeedServer`` answers each path with its bytes, or with the
status a test set (``down``) to play a feed that is unavailable.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any

from .loopback_http import LoopbackHttpServer


def kev_catalogue(entries: Iterable[tuple[str, str, str, str]], released: str = "2026-12-01T12:00:00.000Z") -> bytes:
    """``entries``: (cveID, dateAdded, dueDate, knownRansomwareCampaignUse)."""
    rows = [
        {"cveID": cve, "vendorProject": "Example", "product": "Fixture", "vulnerabilityName": f"{cve} fixture",
         "dateAdded": added, "shortDescription": "A fixture.", "requiredAction": "Apply updates.",
         "dueDate": due, "knownRansomwareCampaignUse": ransomware, "notes": "", "cwes": []}
        for cve, added, due, ransomware in entries
    ]
    return json.dumps({"title": "CISA Catalog of Known Exploited Vulnerabilities", "catalogVersion": "2026.12.01",
                       "dateReleased": released, "count": len(rows), "vulnerabilities": rows}).encode()


def epss_csv_gz(scores: dict[str, tuple[float, float]], score_date: str = "2026-12-01T00:00:00+0000") -> bytes:
    lines = [f"#model_version:v2025.03.14,score_date:{score_date}", "cve,epss,percentile"]
    lines += [f"{cve},{score:.5f},{percentile:.5f}" for cve, (score, percentile) in sorted(scores.items())]
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


class FeedServer(LoopbackHttpServer):
    """Serves ``files`` (path -> bytes); a path in ``down`` answers that status instead."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.down: dict[str, int] = {}
        self.hits: list[str] = []
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with lock:
                    server.hits.append(self.path)
                status = server.down.get(self.path)
                body = server.files.get(self.path)
                if status is not None or body is None:
                    self.send_error(status or 404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._serve(Handler, "feed-server")

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"
