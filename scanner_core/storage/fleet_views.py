"""The fleet's views over its state (issue 24): pages of images and the fleet snapshot.

* ``page_images``: one query of the state table per page (``listed eq true``, each image
  once; optional filters on the repository, the latest audit's category and the
  approval state; images past ``FLEET_IMAGE_TTL_DAYS`` left out). The cursor is the
  service's continuation (partition and row key), wrapped like the index's. A page by
  repository is a partition query; a page of the whole fleet reads entities in key
  order, so its cost is the page (plus, with a rare filter, the entities the service
  skips, at most 1,000 per call: a short page with a cursor, never a timeout). Sorted
  (``sort=``), the same query runs on that order's table (``fleet_order.py``), whose
  key order is the sort: the same cost; a repository filter is then a property filter.
* ``FleetSnapshot``: totals by category, approval and severity, written as one entity
  by ``take_snapshot`` (the heartbeat timer and ``reindex``: one walk of the state, i.e.
  of the images, never of the audits); the summary and the metrics read it with one
  point read, whatever the size of the fleet.
* ``rescan_candidates``: the rescan timer's choice, one filtered query of the digest
  entities (scanned before a time, wanted since another), paged by the service.
"""

from __future__ import annotations

import heapq
import json
import time
from collections import Counter
from typing import Any, cast

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from pydantic import BaseModel, Field

from .container import StorageErrors
from .fleet_order import ORDER_PARTITION, POINTER_PREFIX
from .fleet_state import DAY_SECONDS, FleetState
from .image_state import DIGEST_ROW, SEVERITIES, ImageState
from .index_rows import CATEGORIES, InvalidCursor, decode_cursor, encode_cursor
from .tables import table_key

SNAPSHOT_PARTITION = "~fleet"  # table_key never makes a key starting with "~f"
SNAPSHOT_ROW = "snapshot"
MAX_FLEET_PAGE = 1000  # the service's own maximum of entities per query call


def page_images(state: FleetState, limit: int, cursor: str | None = None, *, repository: str | None = None,
                category: str | None = None, approval: str | None = None, sort: str | None = None,
                now: float | None = None) -> tuple[list[ImageState], str | None]:
    """Up to ``limit`` images and the cursor of the next page (``None``: no more). One call.
    ``sort``: one of ``ORDERS`` (``fleet_order.py``), served by that order's table; else key order."""
    if not 1 <= limit <= MAX_FLEET_PAGE:
        raise ValueError(f"limit must be 1..{MAX_FLEET_PAGE}, got {limit}")
    token = _token(cursor, sort) if cursor else None
    if sort is not None:
        if state.order is None:
            raise ValueError("this fleet state has no order tables")
        table = state.order.table(sort)  # ValueError for an unknown order
        clauses = [f"PartitionKey eq '{ORDER_PARTITION}'", f"RowKey lt '{POINTER_PREFIX}'"]
        where = (("repository", repository), ("category", category), ("approval_state", approval))
    else:
        table, clauses = state.table, ["listed eq true"]
        where = (("PartitionKey", table_key(repository) if repository else None), ("category", category),
                 ("approval_state", approval))
    parameters = {}
    for name, value in where:
        if value is not None:
            clauses.append(f"{name} eq @{name}")
            parameters[name] = value
    if state.image_ttl_days:  # an Int64 literal for the Int64 property (an int, so safe to write in)
        clauses.append(f"seen_at ge {int((now if now is not None else time.time()) - state.image_ttl_days * DAY_SECONDS)}L")
    with StorageErrors("listing the fleet"):
        listing = table.query_entities(" and ".join(clauses), parameters=parameters, results_per_page=limit)
        pages = listing.by_page(continuation_token=token)
        try:
            entities = list(next(pages))
        except StopIteration:
            return [], None
        except HttpResponseError as error:
            if error.status_code == 400 and token is not None:
                raise InvalidCursor("is not a cursor of this listing") from None
            raise
        following = cast(Any, pages).continuation_token
    images = [ImageState.from_entity(entity) for entity in entities]
    if not following:
        return images, None
    return images, encode_cursor(json.dumps(following | ({"order": sort} if sort else {}), sort_keys=True))


def _token(cursor: str, sort: str | None) -> dict[str, str]:
    """The service's continuation from a cursor this API handed out for this order; ``InvalidCursor`` else."""
    try:
        token = json.loads(decode_cursor(cursor))
    except ValueError:
        token = None
    expected = {"PartitionKey", "RowKey"} | ({"order"} if sort else set())
    if not isinstance(token, dict) or set(token) != expected or not all(
            isinstance(value, str) and len(value) <= 1024 for value in token.values()):
        raise InvalidCursor("is not a cursor handed out by this API; use the 'next-cursor' of the previous page")
    if sort and token.pop("order") != sort:
        raise InvalidCursor(f"is a cursor of another order; use the 'next-cursor' of the previous page sorted by {sort}")
    return token


class FleetSnapshot(BaseModel):
    """The fleet in numbers, as of ``taken_at``: images by category, by approval state, the
    findings of their latest succeeded audits by severity, images with KEV findings, and the
    images that left the fleet (``FLEET_IMAGE_TTL_DAYS``)."""

    taken_at: int
    images: int = 0
    categories: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    approvals: dict[str, int] = Field(default_factory=dict)
    findings: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    kev_images: int = 0
    gone: int = 0
    # The request time of the ``newest``-th most recently requested image (0: fewer images): the
    # metrics' per-image series are the images requested since (``newest_images``).
    newest: int = 0
    newest_since: int = 0

    def totals(self) -> dict[str, int]:
        """The summary's totals: ``total`` and one per category."""
        return {"total": self.images, **{c: self.categories.get(c, 0) for c in CATEGORIES}}


def take_snapshot(state: FleetState, now: float | None = None, newest: int = 0) -> FleetSnapshot:
    """Walks the listed images once (a timer's job, O(images)) and stores the snapshot;
    ``newest``: the metrics' ``METRICS_MAX_IMAGES``, whose cutoff it notes."""
    taken_at = time.time() if now is None else now
    categories: Counter[str] = Counter()
    approvals: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    images = kev = gone = 0
    requested: list[int] = []  # a heap of the ``newest`` latest request times
    with StorageErrors("taking the fleet snapshot"):
        for entity in state.table.query_entities("listed eq true"):
            image = ImageState.from_entity(entity)
            if state.gone(image, taken_at):
                gone += 1
                continue
            images += 1
            categories[image.category] += 1
            approvals[image.approval_state or "none"] += 1
            findings.update({s: int(getattr(image, s) or 0) for s in SEVERITIES})
            kev += bool(image.kev)
            if newest:
                (heapq.heappush if len(requested) < newest else heapq.heappushpop)(requested, image.requested_at)
    snapshot = FleetSnapshot(taken_at=int(taken_at), images=images, approvals=dict(approvals), kev_images=kev,
                             gone=gone, categories={c: categories.get(c, 0) for c in CATEGORIES},
                             findings={s: findings.get(s, 0) for s in SEVERITIES}, newest=newest,
                             newest_since=requested[0] if newest and len(requested) == newest else 0)
    with StorageErrors("writing the fleet snapshot"):
        state.table.upsert_entity({"PartitionKey": SNAPSHOT_PARTITION, "RowKey": SNAPSHOT_ROW,
                                   "document": snapshot.model_dump_json()})
    return snapshot


def current_snapshot(state: FleetState, newest: int | None = None) -> FleetSnapshot:
    """The last snapshot (one point read); before the heartbeat timer's first (or when it noted
    another ``newest``), taken now: one walk of the images, never of the audits."""
    snapshot = read_fleet_snapshot(state)
    if snapshot is None or (newest is not None and snapshot.newest != newest):
        snapshot = take_snapshot(state, newest=newest if newest is not None else snapshot.newest if snapshot else 0)
    return snapshot


def newest_images(state: FleetState, limit: int, since: int, now: float | None = None) -> list[ImageState]:
    """The ``limit`` most recently requested images, newest first: the first ``limit`` rows of the
    ``recent`` order (``ceil(limit / 1000)`` calls, whatever the size of the fleet). Without its rows
    (an upgraded deployment before ``reindex``), the images requested since ``since`` (the snapshot's
    cutoff) from one filtered query of the state, which the service answers by reading the table."""
    if state.order is not None and limit > 0:
        found: list[ImageState] = []
        cursor: str | None = None
        while len(found) < limit:
            page, cursor = page_images(state, min(limit - len(found), MAX_FLEET_PAGE), cursor, sort="recent", now=now)
            found += page
            if cursor is None:
                break
        if found:
            return found
    clauses = ["listed eq true", f"requested_at ge {int(since)}L"]
    if state.image_ttl_days:
        clauses.append(f"seen_at ge {int((now if now is not None else time.time()) - state.image_ttl_days * DAY_SECONDS)}L")
    with StorageErrors("listing the newest images"):
        found = [ImageState.from_entity(e) for e in state.table.query_entities(
            " and ".join(clauses), results_per_page=MAX_FLEET_PAGE)]
    found.sort(key=lambda image: (image.requested_at, image.audit_id), reverse=True)
    return found[:limit]


def read_fleet_snapshot(state: FleetState) -> FleetSnapshot | None:
    """The last snapshot a timer stored (one point read); ``None`` before the first."""
    with StorageErrors("reading the fleet snapshot"):
        try:
            entity = state.table.get_entity(SNAPSHOT_PARTITION, SNAPSHOT_ROW)
        except ResourceNotFoundError:
            return None
    return FleetSnapshot.model_validate_json(entity["document"])


def rescan_candidates(state: FleetState, scanned_before: int, wanted_since: int) -> list[ImageState]:
    """The scanned manifests (digest entities) last scanned at or before ``scanned_before`` and
    last wanted (a request that was not a rescan) since ``wanted_since``, with a succeeded audit;
    one per scanned platform digest, oldest scan first. One filtered query (the service skips the
    rest), ``ceil(found / 1000)`` calls; the DB comparison is the caller's."""
    upper = chr(ord(DIGEST_ROW[0]) + 1) + ":"
    query = (f"RowKey ge @lo and RowKey lt @hi and scanned_at le {int(scanned_before)}L"
             f" and wanted_at ge {int(wanted_since)}L")  # Int64 literals of ints: safe to write in
    found: dict[tuple[str, str], ImageState] = {}
    with StorageErrors("listing the images due for a rescan"):
        for entity in state.table.query_entities(query, parameters={"lo": DIGEST_ROW, "hi": upper},
                                                 results_per_page=MAX_FLEET_PAGE):
            image = ImageState.from_entity(entity)
            scanned = image.platform_digest or image.digest
            if image.last_succeeded_audit_id and scanned:
                found.setdefault((image.repository, scanned), image)
    return sorted(found.values(), key=lambda image: (image.scanned_at or 0, image.repository))
