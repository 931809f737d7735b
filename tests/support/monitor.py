"""Helpers for the monitor loop's tests: distinct images pushed under tags, the
trigger queue read back from Azurite and run through the real queue trigger,
ACR ImagePushed events as the Functions host hands them over, and a trivy
that records how it was run.
"""

from __future__ import annotations

import json
import stat
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

from .images import SAMPLE_PACKAGES, ApkPackage, build_alpine_image
from .registry import Registry

IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"


def push_distinct_image(
    registry: Registry, workdir: Path, repository: str, tag: str, *, variant: str | None = None,
    packages: tuple[ApkPackage, ...] = SAMPLE_PACKAGES,
) -> str:
    """Pushes the sample Alpine image with a file that makes its digest unique to
    ``variant`` (default: repository and tag); returns the manifest digest."""
    marker = variant if variant is not None else f"{repository}:{tag}"
    tarball = build_alpine_image(
        workdir / f"{uuid.uuid4().hex}.tar", packages, repo_tag=f"{repository}:{tag}",
        extra_files={"etc/build-id": marker.encode()},
    )
    digest = registry.push_docker_archive(tarball.path, repository, tag)
    tarball.path.unlink()
    return digest


@dataclass(frozen=True)
class QueuedMessage:
    id: str
    body: str
    inserted_at: datetime | None

    @property
    def envelope(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def payload(self) -> dict[str, Any]:
        return self.envelope["payload"]


class TriggerQueue:
    """The scan queue in Azurite, as the function app's trigger sees it."""

    def __init__(self, connection_string: str, name: str | None = None) -> None:
        self.connection_string = connection_string
        self.name = name or f"scans-{uuid.uuid4().hex[:12]}"
        self.client = QueueClient.from_connection_string(connection_string, self.name)
        try:
            self.client.create_queue()
        except ResourceExistsError:
            pass

    def take(self) -> list[QueuedMessage]:
        """Every message now on the queue, removed from it."""
        taken = []
        while batch := list(self.client.receive_messages(messages_per_page=32, max_messages=32)):
            for message in batch:
                taken.append(QueuedMessage(message.id, message.content, message.inserted_on))
                self.client.delete_message(message)
        return taken

    def deliver(self, message: QueuedMessage, app_root: Path) -> list[str]:
        """Runs one message through the real queue trigger body; returns what it quarantined."""
        from scanner_core.functions import handlers

        quarantined: list[str] = []
        delivered = QueueMessage(
            id=message.id, body=message.body.encode("utf-8"), dequeue_count=1, insertion_time=message.inserted_at
        )
        handlers.on_scan_message(delivered, quarantined.append, app_root)
        return quarantined

    def close(self) -> None:
        self.client.close()


def image_pushed_event(
    host: str, repository: str, digest: str, tag: str | None, *, event_id: str | None = None,
    event_type: str = IMAGE_PUSHED, when: datetime | None = None, data: dict[str, Any] | None = None,
) -> func.EventGridEvent:
    """An ACR ImagePushed event as the Functions host builds it from Event Grid's
    delivery (the data as documented in "Azure Container Registry as an Event Grid source")."""
    when = when or datetime(2026, 11, 22, 12, 0, 0, tzinfo=timezone.utc)
    target: dict[str, Any] = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "size": 528, "digest": digest, "length": 528, "repository": repository,
    }
    if tag is not None:
        target["tag"] = tag
    document = data if data is not None else {
        "id": str(uuid.uuid4()),
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "action": "push",
        "target": target,
        "request": {"id": str(uuid.uuid4()), "host": host, "method": "PUT", "useragent": "skopeo/1.13"},
    }
    return func.EventGridEvent(
        id=event_id or str(uuid.uuid4()),
        data=document,
        topic="/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/myacr",
        subject=f"{repository}:{tag}" if tag else repository,
        event_type=event_type,
        event_time=when,
        data_version="1.0",
    )


class TrivySpy:
    """A ``TRIVY_PATH`` that appends each invocation's arguments to a log, then runs
    the real trivy: proof of whether a scan ran (``trivy image``) or not."""

    def __init__(self, workdir: Path, real: Path) -> None:
        self.log = workdir / "trivy-invocations.log"
        self.path = workdir / "trivy-spy"
        self.path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{self.log}"\nexec "{real}" "$@"\n')
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def invocations(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def scans(self) -> list[str]:
        """``trivy image`` runs that scanned an image (not DB downloads)."""
        return [
            line for line in self.invocations()
            if line.split(" ", 1)[0] == "image" and "--download-db-only" not in line.split()
        ]

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)
