"""No quarantine entry is ever too big for the poison queue (issue 17): against a
real Azurite queue (base64, as the host's binding may encode) and real Blob Storage,
and the operator's re-queue path for both forms of an entry."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import uuid

import pytest
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from scanner_core.errors import StorageError
from scanner_core.functions import handlers as functions
from scanner_core.queue import QUEUE_MESSAGE_LIMIT, QueueSender
from tests.conftest import REPO_ROOT

KIB = 1024


def invalid_body(size: int) -> bytes:
    """A message of exactly ``size`` bytes that can never be a request (an unknown field): quarantined at once."""
    frame = (b'{"headers": {"creation-time": 1795300000, "payload-version": "1"}, "payload": {"image-scan-id": "big", '
             b'"image-full-name": "registry.example.com/team/app:1.0", "note": "', b'"}}')
    return frame[0] + b"x" * (size - len(frame[0]) - len(frame[1])) + frame[1]


@pytest.fixture
def poison(azurite):
    name = f"big-{uuid.uuid4().hex[:12]}-poison"
    sender = QueueSender(azurite.connection_string, name, "base64")
    yield sender, name
    sender.close()


def entries(azurite, queue_name: str) -> list[dict]:
    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as client:
        return [json.loads(base64.b64decode(m.content)) for m in client.receive_messages(max_messages=32)]


@pytest.mark.parametrize("size", [63 * KIB, QUEUE_MESSAGE_LIMIT // 4 * 3])  # 63 KiB; 48 KiB: 64 KiB once base64
def test_an_entry_too_big_for_the_queue_keeps_the_body_in_blob_and_requeues(
    scanner_env, audits, azurite, poison, size, tmp_path
):
    sender, queue_name = poison
    body = invalid_body(size)
    assert len(body) == size
    if size == QUEUE_MESSAGE_LIMIT // 4 * 3:
        assert len(base64.b64encode(body)) == QUEUE_MESSAGE_LIMIT  # the body alone is at the limit
    with pytest.raises(StorageError):  # what the queue does with an entry that carries it inline
        sender.quarantine(json.dumps({"original-message": body.decode(), "reason": "x"}))

    functions.on_scan_message(QueueMessage(id="msg-big-1", body=body, dequeue_count=1), sender.quarantine,
                              REPO_ROOT, lambda *_: None)
    (entry,) = entries(azurite, queue_name)
    assert "original-message" not in entry and entry["reason"].startswith("payload.")
    name = f"trivy-{scanner_env.short_id}/quarantine/msg-big-1"
    assert (entry["original-message-blob"], entry["original-message-bytes"]) == (name, size)
    stored = audits.read(name)
    assert stored == body and entry["original-message-sha256"] == hashlib.sha256(body).hexdigest()

    # The operator's re-queue: the original body, as is, back on the trigger queue.
    trigger = f"trigger-{uuid.uuid4().hex[:12]}"
    entry_file = tmp_path / "entry.json"
    entry_file.write_text(json.dumps(entry))
    env = {**scanner_env.values, "PATH": "/usr/bin:/bin", "AzureWebJobsStorage": azurite.connection_string,
           "SCAN_QUEUE_NAME": trigger}
    done = subprocess.run([sys.executable, "-m", "scanner_core", "requeue", str(entry_file)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    with QueueClient.from_connection_string(azurite.connection_string, trigger) as client:
        (message,) = client.receive_messages()
        assert message.content.encode() == body  # host.json messageEncoding "none"

    audits.client.upload_blob(name, body + b" ", overwrite=True)  # the blob no longer matches its entry
    done = subprocess.run([sys.executable, "-m", "scanner_core", "requeue", str(entry_file)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "original-message-sha256: does not match" in done.stderr


def test_an_entry_that_fits_stays_inline(scanner_env, audits, azurite, poison):
    sender, queue_name = poison
    body = invalid_body(2 * KIB)
    functions.on_scan_message(QueueMessage(id="msg-small", body=body, dequeue_count=1), sender.quarantine,
                              REPO_ROOT, lambda *_: None)
    (entry,) = entries(azurite, queue_name)
    assert entry["original-message"] == body.decode() and "original-message-blob" not in entry
    assert not [n for n in audits.all_names() if "/quarantine/" in n]
