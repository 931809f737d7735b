"""ACR pushes as they happen: Event Grid's ``Microsoft.ContainerRegistry.ImagePushed``.

The event's data, as Azure documents it ("Azure Container Registry as an Event
Grid source")::

    {"id": "...", "timestamp": "...", "action": "push",
     "target": {"mediaType": "...", "size": 3023, "digest": "sha256:...",
                "length": 3023, "repository": "team/app", "tag": "v1"},
     "request": {"id": "...", "host": "myacr.azurecr.io", "method": "PUT", "useragent": "..."}}

Each push of a tag enqueues a scan of ``host/repository@digest`` labelled with
the tag (payload ``"tag"``), trigger ``event``, audit id ``push-<event id>``
and the event's time as the request time: a redelivered event names the same
audit folder. Ignored, with the reason logged: other event types; pushes
without a tag (the platform manifests of a multi-platform push arrive this
way, each followed by the index's own event with the tag); signature and
attestation tags (``sha256-<hex>.sig``/``.att``/``.sbom``); digests already seen
in that repository (the same image pushed under a second tag, a redelivered
event, or one the watch timer enqueued); and, for a repository on the
``watch:`` list, tags its pattern does not match. A malformed event is
quarantined with its reason.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..config import ScannerConfig, WatchEntry
from ..errors import RequestError
from ..log import ScanLogger
from ..registry import RegistryApi, current_guard, parse_image_reference
from ..storage import validate_audit_id
from .records import MonitorStore, Seen
from .watch import Enqueue, platform_digest, registry_api

IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"
_ARTIFACT_TAG = re.compile(r"^sha256-[0-9a-f]{64}\.(sig|att|sbom)$")


class IgnoredEvent(Exception):
    """An event that asks for no scan; the message says why."""


@dataclass(frozen=True)
class PushedImage:
    """One pushed tag, from a valid ImagePushed event."""

    registry: str
    repository: str
    tag: str
    digest: str
    event_id: str
    pushed_at: float

    @property
    def canonical(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def audit_id(self) -> str:
        """``push-<event id>``; a hash of it when the id is no valid audit id."""
        candidate = f"push-{self.event_id}"
        try:
            return validate_audit_id(candidate)
        except RequestError:
            return "push-" + hashlib.sha256(self.event_id.encode("utf-8")).hexdigest()[:32]


def parse_image_pushed(
    event_type: str, event_id: str, data: Any, event_time: datetime | None
) -> PushedImage:
    """The pushed image; ``IgnoredEvent`` when it asks for no scan, ``RequestError``
    (naming the field) when it is malformed."""
    if event_type != IMAGE_PUSHED:
        raise IgnoredEvent(f"event type {event_type!r} is not {IMAGE_PUSHED}")
    if not isinstance(data, Mapping):
        raise RequestError("data", "must be a JSON object (the ACR event's data)")
    target, request = data.get("target"), data.get("request")
    if not isinstance(target, Mapping):
        raise RequestError("data.target", "must be an object with repository, tag and digest")
    if not isinstance(request, Mapping) or not isinstance(request.get("host"), str) or not request.get("host"):
        raise RequestError("data.request.host", "must be the registry's host name, e.g. myacr.azurecr.io")
    repository, digest, tag = target.get("repository"), target.get("digest"), target.get("tag")
    for name, value in (("repository", repository), ("digest", digest)):
        if not isinstance(value, str) or not value:
            raise RequestError(f"data.target.{name}", "is required (a string)")
    if tag is None or tag == "":
        raise IgnoredEvent(f"{repository}@{digest} was pushed without a tag (a platform manifest or a push by digest)")
    if not isinstance(tag, str):
        raise RequestError("data.target.tag", "must be a string")
    if _ARTIFACT_TAG.match(tag):
        raise IgnoredEvent(f"{repository}:{tag} is a signature or attestation, not an image")
    reference = parse_image_reference(f"{request['host']}/{repository}:{tag}@{digest}", "data.target")
    current_guard().check_image(reference, "data.request.host")  # registry-not-allowed, before any contact
    return PushedImage(
        registry=reference.registry,
        repository=reference.repository,
        tag=tag,
        digest=digest,
        event_id=event_id,
        pushed_at=event_time.timestamp() if event_time is not None else time.time(),
    )


class PushHandler:
    """Turns pushed images into scan requests (see the module docstring)."""

    def __init__(
        self,
        config: ScannerConfig,
        store: MonitorStore,
        enqueue: Enqueue,
        log: ScanLogger,
        *,
        api_factory: Callable[[WatchEntry], RegistryApi] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.enqueue = enqueue
        self.log = log
        self.api_factory = api_factory or (lambda entry: registry_api(config, entry))

    def handle(self, pushed: PushedImage) -> str | None:
        """Enqueues the scan; returns its audit id, or ``None`` when it was ignored."""
        fields = {"repository": pushed.canonical, "tag": pushed.tag, "digest": pushed.digest}
        entry = next((e for e in self.config.file.watch if e.canonical == pushed.canonical), None)
        if entry is not None and not entry.matches(pushed.tag):
            self.log.info("pushed tag ignored: the watch pattern does not match", fields=fields)
            return None
        if self.store.is_seen(pushed.canonical, pushed.digest):
            self.log.info("pushed image ignored: this digest was seen before", fields=fields)
            return None
        scanned: str | None = pushed.digest
        if entry is not None and entry.platform is not None:
            with self.api_factory(entry) as api:
                scanned = platform_digest(api, pushed.repository, pushed.digest, entry.platform)
        audit_id = pushed.audit_id
        if scanned is None:
            self.log.warning("pushed image ignored: no manifest for the watched platform", fields=fields)
            self.store.mark_seen(pushed.canonical, Seen(pushed.digest, pushed.tag, "no-platform", None,
                                                        int(pushed.pushed_at)))
            return None
        self.enqueue(f"{pushed.canonical}@{scanned}", audit_id, tag=pushed.tag, trigger="event",
                     created_at=pushed.pushed_at)
        self.store.mark_seen(pushed.canonical, Seen(pushed.digest, pushed.tag, "event", audit_id,
                                                    int(pushed.pushed_at)))
        self.log.info("pushed image queued for a scan", fields={**fields, "audit-id": audit_id})
        return audit_id
