"""Deliveries that die with their instance do not eat a request's backoff (issue 17).

Against a real Azurite queue with the trigger's real delivery code: a delivery
"dies" by being received and never completed (as when the instance is recycled
or the worker is killed), so the queue counts it and shows the message again
when its visibility runs out; the deliveries that return are handed to the
queue trigger's handler with the dequeue count the queue gave them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient, QueueMessage as StoredMessage

from scanner_core.functions import handlers as functions
from scanner_core.queue import build_message
from tests.conftest import REPO_ROOT
from tests.support.faults import kill_service
from tests.support.registry import unreachable_address

MAX_DEQUEUE_COUNT = 3  # host.json
MAX_ATTEMPTS = 4


@pytest.fixture
def queue(scanner_env, azurite, monkeypatch) -> Iterator[QueueClient]:
    name = f"recycles-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("SCAN_QUEUE_NAME", name)
    scanner_env.set(RETRY_BACKOFF_BASE_SECONDS="1", RETRY_BACKOFF_MAX_SECONDS="2",
                    RETRY_MAX_ATTEMPTS=str(MAX_ATTEMPTS))
    with QueueClient.from_connection_string(azurite.connection_string, name) as client:
        client.create_queue()
        yield client


def receive(queue: QueueClient, timeout: float = 30) -> StoredMessage:
    """The next delivery, as the host receives it (visible again 1 s later unless completed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in queue.receive_messages(max_messages=1, visibility_timeout=1):
            return message
        time.sleep(0.2)
    raise AssertionError("no delivery within the timeout")


def crash(queue: QueueClient, expected_dequeue_count: int) -> None:
    """A delivery whose worker died: received, never completed."""
    assert receive(queue).dequeue_count == expected_dequeue_count


def deliver(queue: QueueClient, message: StoredMessage, quarantined: list[str]) -> None:
    """A delivery that returns: the trigger's handler, then the host completes it."""
    functions.on_scan_message(
        QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count,
                     insertion_time=message.inserted_on),
        quarantined.append, REPO_ROOT)
    queue.delete_message(message)


def attempt_of(message: StoredMessage) -> int:
    return json.loads(message.content)["headers"].get("attempt") or 1


def test_two_crashed_deliveries_then_a_registry_blip_is_retried_and_then_succeeds(
    scanner_env, registry, pushed_sample, audits, queue
):
    scanner_env.write_config({"registries": [{"address": registry.address, "username": registry.username,
                                              "password": registry.password, "insecure": True}]})
    queue.send_message(build_message(pushed_sample.reference, "recycled-1").to_text())
    quarantined: list[str] = []
    crash(queue, 1)
    crash(queue, 2)
    third = receive(queue)
    assert third.dequeue_count == MAX_DEQUEUE_COUNT
    kill_service(registry)  # the blip: registry-unreachable
    try:
        deliver(queue, third, quarantined)
    finally:
        registry.start()
    assert quarantined == [] and audits.names() == []  # re-sent, not quarantined as a last attempt

    retried = receive(queue)
    assert (attempt_of(retried), retried.dequeue_count) == (2, 1)
    deliver(queue, retried, quarantined)
    assert quarantined == []
    (meta_name,) = [name for name in audits.names() if name.endswith("-recycled-1/meta")]
    assert audits.json(meta_name)["audit-result"] == "succeeded"


def test_a_request_whose_deliveries_keep_dying_is_quarantined_with_its_attempts(scanner_env, audits, queue):
    address = unreachable_address()  # every finished attempt fails transiently
    scanner_env.write_config({"registries": [{"address": address, "insecure": True}]})
    queue.send_message(build_message(f"{address}/team/app:1.0", "crashing-1").to_text())
    quarantined: list[str] = []
    deliveries = 0
    crash(queue, 1)
    crash(queue, 2)
    deliver(queue, receive(queue), quarantined)  # finished, transient: a second copy
    deliveries += 3
    for count in range(1, MAX_DEQUEUE_COUNT + 1):  # the second copy's deliveries all die
        crash(queue, count)
        deliveries += 1
    last = receive(queue)
    assert (attempt_of(last), last.dequeue_count) == (2, MAX_DEQUEUE_COUNT + 1)
    deliver(queue, last, quarantined)
    deliveries += 1
    assert deliveries <= MAX_DEQUEUE_COUNT * MAX_ATTEMPTS + 1  # + the listener's quarantining delivery
    (record,) = [json.loads(text) for text in quarantined]
    assert (record["failure-reason"], record["attempts"], record["dequeue-count"]) == ("too-many-deliveries", 2, 4)
    assert record["reason"].startswith("delivered 4 times without an outcome (maximum 3)")
    (meta_name,) = [name for name in audits.names() if name.endswith("-crashing-1/meta")]
    assert audits.json(meta_name)["failure-reason"] == "too-many-deliveries"
    assert queue.peek_messages() == []
