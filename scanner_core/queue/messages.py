"""The scan-request message contract, and turning a queue message into a request.

Two bodies are accepted:

* the JSON envelope ``{"headers": {"creation-time": <unix s>, "payload-version": "1"},
  "payload": {"image-scan-id": "<id>", "image-full-name": "<reference>"}}``;
* a bare image reference, for messages dropped by hand; its audit id is the
  queue message's id and its time the message's insertion time, both stable
  across redeliveries.

Each may arrive as plain text or base64-encoded: the host is configured with
``messageEncoding: none`` so every body reaches the function, and decoding
is done here (plain first; base64 only when the plain text is neither form).
Keys match in any case and spelling (``keys.py``), so the design's own
producer (joseki: PascalCase, payload version ``0.2``) is understood.

A request retried after a transient failure carries ``attempt`` and
``first-attempt-at`` in its headers (``backoff.py``).

A *batch* of rescans (issue 26, the rescan timer's) is one envelope whose payload lists
digests: ``{"headers": {...}, "payload": {"trigger": "rescan", "rescans": [{"image-scan-id":
..., "image-full-name": "repo@sha256:...", "tag": ...}, ...]}}``; each digest is its own
request (its own audit id, hence folder), delivered one by one (``batches.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..audit import ScanRequest
from ..errors import InvalidImageReference, RequestError
from ..registry import ImageReference, parse_image_reference, parse_platform
from ..storage import validate_audit_id
from .backoff import RetryState
from .keys import canonical_keys, squash

PAYLOAD_VERSION = "1"
# "0.2": the version joseki's backend writes; the same fields.
ACCEPTED_PAYLOAD_VERSIONS = ("1", "0.2")
QueueEncoding = Literal["none", "base64"]


class _Kebab(BaseModel):
    model_config = ConfigDict(alias_generator=lambda name: name.replace("_", "-"), populate_by_name=True, extra="forbid")


class MessageHeaders(_Kebab):
    # Unix seconds (10 digits at most, as the folder name's time); names the audit folder.
    creation_time: int = Field(ge=0, le=9_999_999_999)
    payload_version: Literal["1", "0.2"] = PAYLOAD_VERSION
    # Set on a request re-sent after a transient failure (backoff.py): this attempt's number
    # and when the first one was made.
    attempt: int | None = Field(None, ge=1, le=1000)
    first_attempt_at: int | None = Field(None, ge=0, le=9_999_999_999)


Trigger = Literal["request", "watch", "event", "rescan", "admission"]


class MessagePayload(_Kebab):
    image_scan_id: str = Field(min_length=1, max_length=128)
    image_full_name: str = Field(min_length=1, max_length=512)
    platform: str | None = Field(None, min_length=1, max_length=64)  # os/arch[/variant]; checked by the core
    # Optional (the monitor loop): the tag an image@digest was found under, and why it is scanned.
    tag: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    trigger: Trigger | None = None
    # POST /api/scans behind App Service authentication: who asked (four eyes, issue 25).
    requested_by: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")


class ScanMessage(_Kebab):
    headers: MessageHeaders
    payload: MessagePayload

    def to_text(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @property
    def retry_state(self) -> RetryState:
        return RetryState(attempt=self.headers.attempt or 1, first_attempt_at=self.headers.first_attempt_at)


MAX_BATCH = 1_000  # digests in one batch message (RESCAN_BATCH_SIZE is at most this)


class BatchItem(_Kebab):
    image_scan_id: str = Field(min_length=1, max_length=128)
    image_full_name: str = Field(min_length=1, max_length=512)
    tag: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class BatchPayload(_Kebab):
    trigger: Literal["rescan"] = "rescan"
    rescans: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class BatchMessage(_Kebab):
    headers: MessageHeaders
    payload: BatchPayload

    def to_text(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    def requests(self) -> list[ScanRequest]:
        """One request per digest, in order (all of the batch's time, so each names its own folder)."""
        requested_at = datetime.fromtimestamp(self.headers.creation_time, tz=timezone.utc)
        return [ScanRequest(audit_id=item.image_scan_id, requested_at=requested_at, image=item.image_full_name,
                            image_field="payload.rescans.image-full-name", tag=item.tag,
                            trigger=self.payload.trigger) for item in self.payload.rescans]  # fmt: skip

    def rest(self, requests: list[ScanRequest]) -> BatchMessage:
        """The same batch (same time, so the same folders) holding only ``requests``."""
        items = [BatchItem(image_scan_id=r.audit_id, image_full_name=r.image or "", tag=r.tag) for r in requests]
        return self.model_copy(update={"payload": self.payload.model_copy(update={"rescans": items})})


def batch_message(rescans: list[tuple[str, str, str | None]], created_at: float) -> BatchMessage:
    """A valid batch of ``(image, audit id, tag)``, each checked as ``build_message`` checks one."""
    items = []
    for image, audit_id, tag in rescans:
        reference = parse_image_reference(image, field="payload.rescans.image-full-name")
        validate_audit_id(audit_id, field="payload.rescans.image-scan-id")
        if tag is not None:
            check_tag_label(reference, tag)
        items.append(BatchItem(image_scan_id=audit_id, image_full_name=image, tag=tag))
    return BatchMessage(headers=MessageHeaders(creation_time=int(created_at)), payload=BatchPayload(rescans=items))


def parse_batch(body: bytes) -> BatchMessage | None:
    """The batch in ``body`` (plain or base64), or ``None`` when it is not one (a single request);
    ``RequestError`` naming the field when it is a batch that can never be delivered."""
    try:
        plain = _text(body)
    except RequestError:
        return None  # parse_message says why
    for text in (plain, _base64_text(plain)):
        stripped = (text or "").strip()
        if not stripped.startswith("{") or "rescans" not in stripped.lower():
            continue
        try:
            document = json.loads(stripped)
        except (ValueError, RecursionError):
            continue
        payload = document.get("payload") if isinstance(document, dict) else None
        if not isinstance(payload, dict) or "rescans" not in {squash(key) for key in payload}:
            continue
        try:
            batch = BatchMessage.model_validate(canonical_keys(document, BatchMessage))
        except ValidationError as error:
            first = ".".join(str(p) for p in error.errors()[0]["loc"]) or "message"
            raise RequestError(first, f"invalid rescan batch ({error.errors()[0]['msg']})") from None
        for item in batch.payload.rescans:
            validate_audit_id(item.image_scan_id, field="payload.rescans.image-scan-id")
        return batch
    return None


def retry_message(request: ScanRequest, state: RetryState) -> ScanMessage:
    """The envelope that carries ``request`` to its next attempt (same audit id and
    time, hence the same audit folder, whatever form the first message had)."""
    assert request.image is not None
    return ScanMessage(
        headers=MessageHeaders(
            creation_time=int(request.requested_at.timestamp()),
            attempt=state.attempt if state.attempt > 1 else None,
            first_attempt_at=state.first_attempt_at,
        ),
        payload=MessagePayload(
            image_scan_id=request.audit_id, image_full_name=request.image, platform=request.platform,
            tag=request.tag, trigger=request.trigger, requested_by=request.requested_by,
        ),
    )


def build_message(
    image: str,
    audit_id: str,
    created_at: float | None = None,
    platform: str | None = None,
    *,
    tag: str | None = None,
    trigger: Trigger | None = None,
    requested_by: str | None = None,
) -> ScanMessage:
    """A valid envelope; the reference, the audit id, the platform and the tag label are checked first."""
    reference = parse_image_reference(image, field="payload.image-full-name")
    validate_audit_id(audit_id, field="payload.image-scan-id")
    if platform is not None:
        platform = str(parse_platform(platform, field="payload.platform"))
    if tag is not None:
        check_tag_label(reference, tag)
    return ScanMessage(
        headers=MessageHeaders(creation_time=int(created_at if created_at is not None else time.time())),
        payload=MessagePayload(
            image_scan_id=audit_id, image_full_name=image, platform=platform, tag=tag, trigger=trigger,
            requested_by=requested_by,
        ),
    )


def check_tag_label(reference: ImageReference, tag: str) -> None:
    """A tag label belongs to a reference by digest, and never contradicts a tag in it."""
    if reference.digest is None:
        raise RequestError("payload.tag", "labels a reference by digest (repo@sha256:...); this one has none")
    if reference.tag is not None and reference.tag != tag:
        raise RequestError("payload.tag", f"{tag!r} contradicts the reference's own tag {reference.tag!r}")


def encode_body(text: str, encoding: QueueEncoding) -> str:
    """The body as it must be put on the queue for a host with ``messageEncoding``."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii") if encoding == "base64" else text


def request_from_message(body: bytes, message_id: str | None, inserted_at: datetime | None) -> ScanRequest:
    """Parses a queue message body into a ``ScanRequest``; raises ``RequestError``
    naming the bad field when it can never be a valid request."""
    return parse_message(body, message_id, inserted_at)[0]


def parse_message(body: bytes, message_id: str | None, inserted_at: datetime | None) -> tuple[ScanRequest, RetryState]:
    """The request and where it is in its retries. When a base64 body decodes to
    text that is still unusable, the error describes the decoded text."""
    text = _text(body)
    try:
        return _from_text(text, message_id, inserted_at)
    except RequestError as plain_error:
        decoded = _base64_text(text)
        if decoded is None:
            raise plain_error from None
        try:
            return _from_text(decoded, message_id, inserted_at)
        except RequestError as decoded_error:
            raise RequestError(decoded_error.field, f"(in the base64-decoded body) {decoded_error.detail}") from None


def _from_text(text: str, message_id: str | None, inserted_at: datetime | None) -> tuple[ScanRequest, RetryState]:
    stripped = text.strip()
    if stripped.startswith("{"):
        return _from_envelope(stripped)
    try:
        parse_image_reference(stripped)
    except InvalidImageReference as error:
        raise RequestError(
            "message",
            f"is neither a JSON scan-request envelope nor an image reference ({error})",
        ) from None
    if not message_id:
        raise RequestError("message", "a bare image reference needs the queue message id to name its audit")
    request = ScanRequest(
        audit_id=validate_audit_id(message_id, field="message-id"),
        requested_at=(inserted_at or datetime.now(timezone.utc)).astimezone(timezone.utc),
        image=stripped,
    )
    return request, RetryState()


def _from_envelope(text: str) -> tuple[ScanRequest, RetryState]:
    try:
        document = json.loads(text)
    except ValueError as error:
        raise RequestError("message", f"is not valid JSON: {error}") from None
    except RecursionError:  # json.loads recurses once per nesting level
        raise RequestError("message", "is JSON nested too deeply to be a scan-request envelope") from None
    try:
        message = ScanMessage.model_validate(canonical_keys(document, ScanMessage))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in error.errors()
        )
        first = ".".join(str(p) for p in error.errors()[0]["loc"]) or "message"
        raise RequestError(first, f"invalid scan-request envelope ({problems})") from None
    # The reference is checked by the core, which can then record the failure in the audit's meta.
    audit_id = validate_audit_id(message.payload.image_scan_id, field="payload.image-scan-id")
    if message.payload.tag is not None:
        try:
            reference = parse_image_reference(message.payload.image_full_name, "payload.image-full-name")
        except InvalidImageReference:
            pass  # recorded by the core as the audit's failure
        else:
            check_tag_label(reference, message.payload.tag)
    request = ScanRequest(
        audit_id=audit_id,
        requested_at=datetime.fromtimestamp(message.headers.creation_time, tz=timezone.utc),
        image=message.payload.image_full_name,
        image_field="payload.image-full-name",
        platform=message.payload.platform,
        platform_field="payload.platform",
        tag=message.payload.tag,
        trigger=message.payload.trigger,
        requested_by=message.payload.requested_by,
    )
    return request, message.retry_state


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("message", "the body is not UTF-8 text") from None


def _base64_text(text: str) -> str | None:
    compact = "".join(text.split())
    if not compact or len(compact) % 4:
        return None
    try:
        return base64.b64decode(compact, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
