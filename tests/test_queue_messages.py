"""Messages from every producer: the original one (joseki: PascalCase, payload version
0.2, base64), camelCase, deep JSON; and the backoff schedule the retries follow."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest
from azure.functions.queue import QueueMessage

from scanner_core.functions import handlers as functions
from scanner_core.errors import RequestError
from scanner_core.queue import RetryPolicy, parse_message
from tests.conftest import REPO_ROOT

# Exactly what joseki's backend puts on the queue (Newtonsoft, then the .NET SDK's base64).
JOSEKI_JSON = (
    '{"Headers":{"CreationTime":1795300000,"PayloadVersion":"0.2"},'
    '"Payload":{"ImageScanId":"1abcd181-e4ac-43a6-94c0-47f06bb3311e","ImageFullName":"registry.example.com/team/app:1.0"}}'
)
JOSEKI_BODY = base64.b64encode(JOSEKI_JSON.encode()).decode()


def test_the_original_producers_message_is_understood() -> None:
    request, state = parse_message(JOSEKI_BODY.encode(), "m-1", None)
    assert request.audit_id == "1abcd181-e4ac-43a6-94c0-47f06bb3311e"
    assert request.image == "registry.example.com/team/app:1.0"
    assert request.requested_at == datetime.fromtimestamp(1795300000, tz=timezone.utc)
    assert state.attempt == 1


@pytest.mark.parametrize(
    "headers, payload",
    [
        ({"creation-time": 1795300000, "payload-version": "1"}, {"image-scan-id": "a", "image-full-name": "x/y:1"}),
        ({"CreationTime": 1795300000, "PayloadVersion": "0.2"}, {"ImageScanId": "a", "ImageFullName": "x/y:1"}),
        ({"creationTime": 1795300000, "payloadVersion": "1"}, {"imageScanId": "a", "imageFullName": "x/y:1"}),
        ({"CREATION_TIME": 1795300000}, {"image_scan_id": "a", "IMAGE-FULL-NAME": "x/y:1"}),
    ],
)
@pytest.mark.parametrize("encode", [False, True])
def test_keys_match_in_any_spelling_plain_or_base64(headers, payload, encode) -> None:
    text = json.dumps({"Headers" if "CreationTime" in headers else "headers": headers, "payload": payload})
    body = base64.b64encode(text.encode()) if encode else text.encode()
    request, _ = parse_message(body, "m", None)
    assert (request.audit_id, request.image) == ("a", "x/y:1")


def test_a_key_given_twice_in_two_spellings_is_refused() -> None:
    text = json.dumps({"headers": {"creation-time": 1, "CreationTime": 2},
                       "payload": {"image-scan-id": "a", "image-full-name": "x/y:1"}})
    with pytest.raises(RequestError, match="headers.creation-time: is given more than once"):
        parse_message(text.encode(), "m", None)


def test_an_unknown_payload_version_names_the_allowed_ones() -> None:
    text = JOSEKI_JSON.replace('"0.2"', '"0.3"')
    with pytest.raises(RequestError, match=r"headers.payload-version.*'1' or '0.2'"):
        parse_message(text.encode(), "m", None)


def test_an_unusable_base64_body_is_described_by_its_decoded_text() -> None:
    decoded = '{"Headers":{"CreationTime":1795300000},"Payload":{"ImageScanId":"a"}}'
    with pytest.raises(RequestError) as caught:
        parse_message(base64.b64encode(decoded.encode()), "m", None)
    message = str(caught.value)
    assert "base64-decoded body" in message and "payload.image-full-name" in message
    assert base64.b64encode(decoded.encode()).decode()[:40] not in message  # not the base64 blob


def test_deep_json_is_quarantined_at_once_with_a_reason(scanner_env, audits) -> None:
    body = b'{"payload": ' + b"[" * 15000 + b"]" * 15000 + b"}"
    quarantined: list[str] = []
    message = QueueMessage(id="deep", body=body, dequeue_count=1)
    functions.on_scan_message(message, quarantined.append, REPO_ROOT, lambda *_: pytest.fail("not retried"))
    (record,) = [json.loads(text) for text in quarantined]
    assert record["reason"] == "message: is JSON nested too deeply to be a scan-request envelope"
    assert (record["failure-kind"], record["failure-reason"]) == ("permanent", "invalid-message")
    assert audits.names() == []


def test_the_original_producers_message_produces_an_audit_with_image_tag(
    scanner_env, registry, pushed_sample, audits
) -> None:
    scanner_env.write_config({"registries": [
        {"address": registry.address, "username": registry.username, "password": registry.password, "insecure": True}
    ]})
    text = JOSEKI_JSON.replace("registry.example.com/team/app:1.0", pushed_sample.reference)
    message = QueueMessage(id="j-1", body=base64.b64encode(text.encode()), dequeue_count=1)
    quarantined: list[str] = []
    functions.on_scan_message(message, quarantined.append, REPO_ROOT, lambda *_: pytest.fail("not retried"))
    assert quarantined == []
    (meta_name,) = [n for n in audits.names() if n.endswith("-1abcd181-e4ac-43a6-94c0-47f06bb3311e/meta")]
    meta = audits.json(meta_name)
    assert (meta["audit-result"], meta["image-tag"]) == ("succeeded", pushed_sample.reference)


def test_the_default_backoff_tolerates_a_30_minute_outage() -> None:
    policy = RetryPolicy()  # the settings' defaults
    assert policy.schedule() == [30, 60, 120, 240, 480, 960]
    assert policy.tolerated_outage_seconds() == 1890 > 30 * 60
    assert all(policy.base_delay(a) <= policy.delay(a) <= policy.base_delay(a) * 1.1 for a in range(1, 10))
    assert RetryPolicy(base_seconds=30, max_seconds=100, max_attempts=4).schedule() == [30, 60, 100]
