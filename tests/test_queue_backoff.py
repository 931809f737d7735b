"""The trigger's backoff against a real Azurite queue: a transient failure puts the
request back invisible for its delay, with its attempt number; the platform's
dequeue count still bounds a message whose deliveries never finish."""

from __future__ import annotations

import json
import time
import uuid

from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from scanner_core.functions import handlers as functions
from scanner_core.queue import build_message
from tests.conftest import REPO_ROOT
from tests.support.registry import unreachable_address


def test_a_transient_failure_is_resent_invisible_for_its_delay(scanner_env, audits, azurite, monkeypatch):
    address = unreachable_address()
    scanner_env.write_config({"registries": [{"address": address, "insecure": True}]})
    scanner_env.set(RETRY_BACKOFF_BASE_SECONDS="3", RETRY_MAX_ATTEMPTS="4")
    queue_name = f"backoff-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("SCAN_QUEUE_NAME", queue_name)
    body = build_message(f"{address}/team/app:1.0", "later-1", created_at=1795300000).to_text()
    quarantined: list[str] = []

    functions.on_scan_message(QueueMessage(id="m-1", body=body.encode(), dequeue_count=1), quarantined.append,
                              REPO_ROOT)  # the default: re-sent through the queue-client factory
    sent_at = time.monotonic()
    assert quarantined == [] and audits.names() == []
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as queue:
        assert queue.get_queue_properties().approximate_message_count == 1
        assert queue.peek_messages() == []  # invisible for the delay
        while not (visible := queue.peek_messages()) and time.monotonic() - sent_at < 10:
            time.sleep(0.2)
        assert 2.5 <= time.monotonic() - sent_at <= 5  # 3 s + at most 10 % jitter (+ polling)
        headers = json.loads(visible[0].content)["headers"]
        assert (headers["attempt"], headers["creation-time"]) == (2, 1795300000)
        assert headers["first-attempt-at"] >= int(time.time()) - 10
        assert visible[0].dequeue_count == 0  # a new message: its own deliveries are counted afresh


def test_a_message_delivered_more_often_than_allowed_is_quarantined_with_a_reason(scanner_env, audits):
    body = build_message("registry.example.com/team/app:1.0", "crashing-1").to_text()
    quarantined: list[str] = []
    functions.on_scan_message(QueueMessage(id="m-2", body=body.encode(), dequeue_count=4), quarantined.append,
                              REPO_ROOT, lambda *_: None)
    (record,) = [json.loads(text) for text in quarantined]
    assert (record["failure-reason"], record["failure-kind"], record["dequeue-count"]) == (
        "too-many-deliveries", "transient", 4)
    assert record["reason"].startswith("delivered 4 times without an outcome (maximum 3)")
    assert json.loads(record["original-message"])["payload"]["image-scan-id"] == "crashing-1"
    assert record["audit-id"] == "crashing-1"
    (meta_name,) = [name for name in audits.names() if name.endswith("-crashing-1/meta")]
    meta = audits.json(meta_name)
    assert (meta["audit-result"], meta["failure-reason"], meta["failure-kind"]) == (
        "audit-failed", "too-many-deliveries", "transient")
