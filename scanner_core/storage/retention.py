"""Retention that keeps the fleet's views true (issue 24, item 4).

``AUDIT_RETENTION_DAYS`` is carried out by the storage account's lifecycle management
policy (docs/operations.md#retention): one rule deletes the blobs of the audit
container whose blob index tag ``trivy-retention`` is ``expired``. This module is what
puts the tag on, and only on audits nothing current points at: ``expire_audits`` lists
the scanner's audit folders (one hierarchical listing, a folder per entry), keeps every
folder the fleet state names (each entity's latest audit, its latest succeeded audit and
the folder of its inventory; not of an image past ``FLEET_IMAGE_TTL_DAYS``), and tags
the blobs of the other folders requested more than the retention ago; their index rows
are removed (``forget``) so no history page links to a folder about to go. A lifecycle
rule on age alone would delete the latest audit of an image not rescanned for that long
and break its verdict, its inventory rescan and the fleet's queries: the tag is why not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from azure.storage.blob import BlobPrefix, ContainerClient

from .container import StorageErrors
from .fleet_state import DAY_SECONDS, FleetState
from .image_state import ImageState
from .layout import scanner_folder

RETENTION_TAG = "trivy-retention"
EXPIRED = "expired"
_FOLDER = re.compile(r"(\d{8}-\d{6})-(.+)")


@dataclass
class ExpiryCount:
    folders: int = 0  # audit folders listed
    protected: int = 0  # of those, named by the fleet state
    expired: int = 0  # tagged for the lifecycle rule


def protected_folders(state: FleetState, now: float | None = None) -> set[str]:
    """Every folder the state of an image still in the fleet points at (one walk: O(images))."""
    folders: set[str] = set()
    with StorageErrors("reading the fleet state"):
        for entity in state.table.query_entities("RowKey ge 'd:' and RowKey lt 'u'"):
            image = ImageState.from_entity(entity)
            if state.gone(image, now):
                continue  # out of the fleet: its verdict still answers from the state, its folder may go
            folders |= {image.folder, image.last_succeeded_folder or "",
                        (image.inventory_path or "").rsplit("/", 1)[0]}
    return folders - {""}


def expire_audits(container: ContainerClient, scanner_short_id: str, state: FleetState, days: int, *,
                  forget: Callable[[str], None] = lambda _audit_id: None, now: float | None = None) -> ExpiryCount:
    """Tags the blobs of every audit folder older than ``days`` that the state does not name."""
    count = ExpiryCount()
    if days <= 0:
        return count
    cutoff = (now if now is not None else time.time()) - days * DAY_SECONDS
    keep = protected_folders(state, now)
    prefix = f"{scanner_folder(scanner_short_id)}/"
    with StorageErrors("expiring audits", container.url):
        for entry in container.walk_blobs(name_starts_with=prefix, delimiter="/"):
            if not isinstance(entry, BlobPrefix) or (found := _FOLDER.fullmatch(entry.name[len(prefix):-1])) is None:
                continue
            count.folders += 1
            folder = entry.name.rstrip("/")
            requested = datetime.strptime(found.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc).timestamp()
            if folder in keep:
                count.protected += 1
                continue
            if requested >= cutoff:
                continue
            with StorageErrors(f"tagging {folder} for the lifecycle rule (a SAS needs the 't' permission, an "
                               "identity the tags/write action)", container.url):
                for blob in container.list_blobs(name_starts_with=entry.name):
                    container.get_blob_client(blob.name).set_blob_tags({RETENTION_TAG: EXPIRED})
            forget(found.group(2))
            count.expired += 1
    return count
