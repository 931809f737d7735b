"""The fleet's image pages in an order the Table service can serve (issue 24):
``GET /api/images?sort=severity|kev|epss|age|recent``.

The Table service returns entities in PartitionKey, RowKey order only; it cannot sort by a
property. So each order is a table of its own, ``{FLEET_TABLE_PREFIX}{short id}by{order}``,
with one partition (``o``) whose RowKeys start with the sort key. Every listed image (the
state's ``listed`` entities: each image once) has one row there, a copy of its state entity,
so a sorted page is one range query the size of the page (on Azure; plus the rows a filter
skips), never a sort of the fleet. Beside it, in the same partition, one pointer row
(``~`` + a hash of the image's state keys) names the row the image has now, so a change
deletes the old row in the same transaction that writes the new one.

``FleetOrder.sync`` brings one image's rows in line with its current state. Per order: read
the pointer, then the state, then one transaction (the new row, the old row's delete, the
pointer under the ETag just read). A concurrent sync loses that race and starts again from
the pointer, so the last commit read the state after every earlier commit: whatever the
interleaving, the rows end on the state as it was after the last write. Callers: the audit's
follow-up (off the scan's critical path), an approval's change, an ask that moved
``seen_at``, and ``reindex`` (every image). A sync that fails is logged by its caller and
repaired by the next sync of that image or by ``reindex``.

The orders (ties: repository, then a stable hash):

* ``severity``: critical, then high, medium, low and unknown findings of the latest
  succeeded audit, most first; images with no succeeded audit last.
* ``kev``: findings in CISA's KEV catalog, most first, then ``severity``.
* ``epss``: the highest EPSS score, highest first, then ``severity``; no score last.
* ``age``: the latest scan's time, oldest first (the images whose findings are the stalest).
* ``recent``: the latest request's time, newest first (the metrics' per-image series read the
  first ``METRICS_MAX_IMAGES`` of it: ``ceil(n / 1000)`` calls, whatever the size of the fleet).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from .container import StorageErrors
from .image_state import ImageState

if TYPE_CHECKING:
    from azure.data.tables import TableClient

ORDERS = ("severity", "kev", "epss", "age", "recent")
_LATEST = 999_999_999_999  # twelve digits of unix seconds: year 33658
ORDER_PARTITION = "o"
POINTER_PREFIX = "~"  # after every sort key (they start with a digit), so a range ``lt "~"`` reads rows only
WRITE_ATTEMPTS = 6
_MAX_COUNT = 999_999
_EPSS_SCALE = 1_000_000
_COUNTED = ("critical", "high", "medium", "low", "unknown")
_CONFLICTS = (409, 412)


def _most_first(value: int | None) -> str:
    return f"{_MAX_COUNT - min(max(int(value or 0), 0), _MAX_COUNT):06d}"


def sort_key(order: str, image: ImageState) -> str:
    """The part of the RowKey that orders ``image`` in ``order`` (fixed width, digits only)."""
    succeeded = image.total is not None
    severity = ("0" + "".join(_most_first(getattr(image, name)) for name in _COUNTED)) if succeeded else "1" + "9" * 30
    if order == "severity":
        return severity
    if order == "kev":
        return ("0" + _most_first(image.kev) if succeeded else "1" + "9" * 6) + severity
    if order == "epss":
        if image.epss_max is None or not succeeded:
            return "1" + "9" * 7 + severity
        score = round(min(max(float(image.epss_max), 0.0), 1.0) * _EPSS_SCALE)
        return f"0{_EPSS_SCALE - score:07d}" + severity
    if order == "age":
        return f"{max(int(image.scanned_at or image.requested_at), 0):012d}"
    if order == "recent":
        return f"{_LATEST - max(int(image.requested_at), 0):012d}"
    raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")


def image_hash(partition: str, row: str) -> str:
    """A stable, fixed-length name of one state entity (its keys may each be 512 characters)."""
    return hashlib.sha256(f"{partition}\n{row}".encode()).hexdigest()[:32]


def order_row(order: str, image: ImageState, partition: str, row: str) -> str:
    """The RowKey of ``image``'s row in ``order``: the sort key, the repository's key (ties read
    by repository), the hash (distinct images stay distinct)."""
    return f"{sort_key(order, image)}|{partition[:300]}|{image_hash(partition, row)}"


class FleetOrder:
    """The order tables of one scanner (made on first use; ``table_of`` names and opens them)."""

    def __init__(self, table_of: Callable[[str], TableClient]) -> None:
        self._table_of = table_of
        self._tables: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    def table(self, order: str) -> TableClient:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        with self._lock:
            if order not in self._tables:
                self._tables[order] = self._table_of(order)
            return self._tables[order]

    def sync(self, partition: str, row: str, read: Callable[[], ImageState | None]) -> int:
        """Makes the image's rows (state entity ``partition``/``row``) match its current state,
        ``read`` (``None``: not listed, so no rows); the transactions written."""
        written = 0
        pending: dict[str, str | None] = dict.fromkeys(ORDERS)  # order -> an old row found missing
        pool = _order_pool()  # the orders side by side: three round trips a sync, not nine
        with StorageErrors("writing the fleet's order"):
            for _ in range(WRITE_ATTEMPTS):
                pointers = dict(zip(pending, pool.map(lambda order: self._pointer(order, partition, row), pending)))
                image = read()  # after the pointers: see the module's docstring
                outcomes = dict(zip(pending, pool.map(
                    lambda item: self._commit(item[0], partition, row, image, pointers[item[0]], item[1]),
                    list(pending.items()))))
                written += sum(outcome == "written" for outcome in outcomes.values())
                # a 404 on the delete: the row the pointer names is gone; the next try leaves it be
                pending = {order: _old(pointers[order]) if outcome == "missing" else None
                           for order, outcome in outcomes.items() if outcome in ("conflict", "missing")}
                if not pending:
                    return written
            raise HttpResponseError(message="the fleet's order kept changing", response=None)

    def _pointer(self, order: str, partition: str, row: str) -> tuple[dict[str, Any], str] | None:
        try:
            entity = self.table(order).get_entity(ORDER_PARTITION, POINTER_PREFIX + image_hash(partition, row))
        except ResourceNotFoundError:
            return None
        return dict(entity), entity.metadata["etag"]

    def _commit(self, order: str, partition: str, row: str, image: ImageState | None,
                pointer: tuple[dict[str, Any], str] | None, missing: str | None = None) -> str:
        """One transaction for one order: ``written``, ``same`` (nothing to write), ``conflict``
        (another sync got there first) or ``missing`` (the old row is not there)."""
        new = order_row(order, image, partition, row) if image is not None else None
        old = _old(pointer)
        body = _copy(image, row) if image is not None else None
        content = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest() if body else None
        if pointer is not None and old == new and pointer[0].get("content") == content:
            return "same"
        operations: list[Any] = []
        if new is not None and body is not None:
            operations.append(("upsert", {**body, "PartitionKey": ORDER_PARTITION, "RowKey": new}, {"mode": "replace"}))
        if old and old != new and old != missing:
            operations.append(("delete", {"PartitionKey": ORDER_PARTITION, "RowKey": old}))
        key = {"PartitionKey": ORDER_PARTITION, "RowKey": POINTER_PREFIX + image_hash(partition, row)}
        if pointer is None:
            if new is None:
                return "same"  # no rows, none wanted
            operations.append(("create", {**key, "row": new, "content": content, "state_row": row}))
        elif new is None:
            operations.append(("delete", key, {"etag": pointer[1], "match_condition": MatchConditions.IfNotModified}))
        else:
            operations.append(("update", {**key, "row": new, "content": content, "state_row": row},
                               {"mode": "replace", "etag": pointer[1], "match_condition": MatchConditions.IfNotModified}))
        try:
            self.table(order).submit_transaction(operations)
        except HttpResponseError as error:
            if error.status_code in _CONFLICTS:
                return "conflict"
            if error.status_code == 404:
                return "missing" if old and old != new and old != missing else "conflict"
            raise
        return "written"


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _order_pool() -> ThreadPoolExecutor:
    """The process's threads for one sync's orders (an explicit per-process cache). Its tasks are
    single requests that never submit to it, so a sync running on ``io_pool`` cannot starve it."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(16, thread_name_prefix="fleet-order")
        return _pool


def _old(pointer: tuple[dict[str, Any], str] | None) -> str | None:
    return pointer[0].get("row") if pointer else None


def _copy(image: ImageState, row: str) -> dict[str, Any]:
    """The state entity's properties (listed, category, seen_at included: the pages filter on them)."""
    return {k: v for k, v in image.entity(row).items() if k not in ("PartitionKey", "RowKey")}


__all__ = ["ORDERS", "ORDER_PARTITION", "POINTER_PREFIX", "FleetOrder", "order_row", "sort_key"]
