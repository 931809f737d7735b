"""A double of Application Insights' ingestion endpoint, on 127.0.0.1.

It follows the Track API the Azure Monitor exporter posts to (``POST /v2.1/track``,
a JSON array of envelopes, gzip-encoded or not, answered with ``itemsReceived`` /
``itemsAccepted``): https://learn.microsoft.com/azure/azure-monitor/app/api-custom-events-metrics
and the exporter's ``_generated`` client in azure-monitor-opentelemetry-exporter.
It keeps every envelope it received, for the test to read.
"""

from __future__ import annotations

import gzip
import json
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback_http import LoopbackHttpServer


class Ingestion(LoopbackHttpServer):
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                text = body.decode()
                items = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
                received.extend(items)
                answer = {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._serve(Handler, "app-insights-ingestion")

    def connection_string(self) -> str:
        return f"InstrumentationKey=00000000-0000-4000-8000-00000000c0de;IngestionEndpoint={self.base_url}/"
