"""No secret at any log level: with the root logger at DEBUG (host.json ``logLevel``
``Debug``), the whole path (scan, upload, index, HTTP API, enqueue, a retry re-sent)
runs against the real parts, and no record, whatever logger emitted it, carries a
SAS signature, the account key, a registry password or a token."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

from scanner_core import cli
from scanner_core.config import load_config
from scanner_core.functions import ApiContext, get_audit, request_scan, security_summary
from scanner_core.functions import handlers as functions
from scanner_core.queue import QueueSender
from tests.conftest import REPO_ROOT
from tests.support.azurite import DEV_ACCOUNT_KEY

_NOISY = ("", "azure", "urllib3", "scanner_core", "azure.core.pipeline.policies.http_logging_policy")


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.names.add(record.name)
        self.lines.append(self.format(record))  # message, traceback and stack, as a handler writes them


@pytest.fixture
def debug_records() -> Iterator[Everything]:
    handler = Everything()
    loggers = {name: logging.getLogger(name) for name in _NOISY}
    saved = {name: (lg.level, lg.propagate) for name, lg in loggers.items()}
    for lg in loggers.values():
        lg.setLevel(logging.DEBUG)
        lg.propagate = True
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)
        for name, (level, propagate) in saved.items():
            loggers[name].setLevel(level)
            loggers[name].propagate = propagate


def http(method: str, url: str, body: dict | None = None, route_params: dict | None = None) -> func.HttpRequest:
    return func.HttpRequest(method=method, url=url, body=json.dumps(body).encode() if body else b"",
                            headers={"content-type": "application/json"}, route_params=route_params or {})


def test_no_secret_in_any_record_at_debug(scanner_env, registry, pushed_sample, audits, azurite, monkeypatch,
                                         debug_records, capsys):
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})
    queue_name = f"debug-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("SCAN_QUEUE_NAME", queue_name)

    # The queue trigger: scan, upload, meta, index.
    body = json.dumps({"headers": {"creation-time": 1795300000, "payload-version": "1"},
                       "payload": {"image-scan-id": "debug-1", "image-full-name": pushed_sample.reference}})
    functions.on_scan_message(QueueMessage(id="m", body=body.encode(), dequeue_count=1), lambda _: None, REPO_ROOT)
    # The HTTP API: enqueue, read an audit, the summary.
    api = ApiContext(config=load_config(), queue_connection=azurite.connection_string, queue_name=queue_name,
                     message_encoding="none")
    assert request_scan(http("POST", "http://h/api/scans", {"image": pushed_sample.reference}), api).status_code == 202
    assert get_audit(http("GET", "http://h/api/audits/debug-1", route_params={"audit_id": "debug-1"}),
                     api).status_code == 200
    assert security_summary(http("GET", "http://h/api/security/summary"), api).status_code == 200
    # The enqueue command and a retry re-sent with its delay.
    assert cli.main(["enqueue", pushed_sample.reference, "--audit-id", "debug-2"]) == 0
    sender = QueueSender(azurite.connection_string, queue_name, "none")
    sender.retry_later("{}", 1)
    sender.close()
    # A library error quoting a SAS URL, logged with its traceback.
    try:
        raise RuntimeError(f"GET {audits.sas_url} failed")
    except RuntimeError:
        logging.getLogger("somelibrary").exception("request failed")
    logging.getLogger("somelibrary").debug("token %s", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzY2FubmVyIn0.c2lnbmF0dXJl")

    text = "\n".join(debug_records.lines)
    assert {"urllib3.connectionpool", "scanner_core"} <= debug_records.names  # the HTTP stack did log
    assert len(debug_records.lines) > 50
    signature = parse_qs(urlsplit(audits.sas_url).query)["sig"][0]
    forbidden = {signature, unquote(signature), signature.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),
                 DEV_ACCOUNT_KEY, registry.password, "eyJzdWIiOiJzY2FubmVyIn0"}
    leaked = [line for line in debug_records.lines if any(secret in line for secret in forbidden)]
    assert leaked == [], leaked[:3]
    assert re.findall(r"sig=(?!\*\*\*)[^&\s'\"]+", text) == []
    assert "sig=***" in text  # the URLs were logged, redacted
