"""The fleet's state in Azure Table Storage (issue 24): one entity per image, written
after every audit's ``meta``, read by every question about *now* (the verdict, the
fleet views), so none of them walks the audit history.

Writing (``record``): the image's entities (tag, digest, scanned manifest: one
partition) are read with one query and written with one batch transaction whose
updates carry the ETags read (``If-Match``), so two audits of one image recorded
at once cannot both win: the loser re-reads and tries again, and an older request
never replaces a newer one (``ImageState.newer_than``). Nothing here is the
contract: the meta is. A write that fails is logged by the caller and the state is
rebuilt by ``python -m scanner_core reindex`` (``rebuild`` below).

The table is ``{FLEET_TABLE_PREFIX}{scanner short id}images``, on the storage account
of the app setting ``FLEET_TABLES_CONNECTION`` names (docs/configuration.md).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from ..models import AuditMeta
from .account import resolve_account_connection
from .container import StorageErrors
from .fleet_order import FleetOrder
from .image_state import DIGEST_ROW, TAG_ROW, ImageState, digest_row, tag_row
from .tables import fleet_table, table_key

if TYPE_CHECKING:
    from azure.data.tables import TableClient

    from ..config import Settings

WRITE_ATTEMPTS = 6
DAY_SECONDS = 86_400
_CONFLICTS = (409, 412)


class FleetState:
    """The current state of one scanner's images. Every call asks the Table service, so
    several instances share it; ``StorageError`` (status only) when the service fails."""

    def __init__(self, table: TableClient, image_ttl_days: int = 0, order: FleetOrder | None = None) -> None:
        self.table = table
        self.image_ttl_days = image_ttl_days
        self.order = order  # the sorted pages' tables (fleet_order.py); None: no sorted pages

    # -- writing ---------------------------------------------------------------

    def record(self, meta: AuditMeta, folder: str) -> bool:
        """Makes this audit the image's current state unless a newer request is recorded;
        whether any entity changed. Two round trips (a query, a transaction), more on conflict."""
        state = ImageState.from_meta(meta, folder)
        if state is None:
            return False
        return self._write(state.partition, state.row_keys(), lambda _key, current: (
            state.over(current) if current is not None and state.newer_than(current) else
            state if current is None else None))

    def approval_changed(self, repository: str, digest: str, approval_id: str, state: str,
                         deadline: str | None = None, changed_at: int | None = None, by: str | None = None) -> bool:
        """Keeps the digest's entities (its own and its tags') in step with its approval request (any
        transition, any state; ``deadline`` when the state has one; ``changed_at`` and ``by``: its last
        change of state and who made it, for the daily digest). No entity yet: nothing to do (the
        audit writes it). A query of the repository's partition, then one transaction."""
        def update(_key: str, current: ImageState | None) -> ImageState | None:
            if current is None:
                return None
            return current.model_copy(update={"approval_state": state, "approval_deadline": deadline,
                                              "approval_id": approval_id, "approval_changed_at": changed_at,
                                              "approval_by": by})

        partition = table_key(repository)
        with StorageErrors("reading the fleet state"):  # the digest's entity and its tags' (one repository)
            keys = [e["RowKey"] for e in self.table.query_entities(
                "PartitionKey eq @pk and ( digest eq @d or platform_digest eq @d )",
                parameters={"pk": partition, "d": digest}, select=["RowKey"])]
        keys = sorted(set(keys) | {digest_row(digest)}) if keys else []
        changed = self._write(partition, keys, update) if keys else False
        if changed:
            self.sync_order(partition, keys)  # rare, and a reviewer filters the sorted pages by approval
        return changed

    def asked(self, repository: str, tag: str | None, digest: str | None, at: int | None = None, *,
              known: ImageState | None = None) -> None:
        """Records that the image was asked for (``FLEET_IMAGE_TTL_DAYS`` counts from the last ask).
        ``known``: the entity ``get`` just read for this ask; when it is the only one asked and was
        seen within the day, nothing is read or written (the verdict's hot path)."""
        keys = [tag_row(tag)] if tag else []
        keys += [digest_row(digest)] if digest else []
        now = int(at if at is not None else time.time())
        if known is not None and len(keys) == 1 and known.last_seen() >= now - DAY_SECONDS:
            return
        if self._write(table_key(repository), keys, lambda _key, current: current.model_copy(update={"asked_at": now})
                       if current is not None and current.last_seen() < now - DAY_SECONDS else None):
            self.sync_order(table_key(repository), keys)  # at most once a day per image: its seen_at moved

    def sync_order(self, partition: str, keys: list[str]) -> int:
        """Brings the sorted pages' rows of these entities in line with their state (``fleet_order.py``);
        the transactions written. Off a scan's critical path: the audit's follow-up calls it."""
        if self.order is None:
            return 0
        return sum(self.order.sync(partition, key, lambda key=key: self._listed(partition, key)) for key in keys)

    def sync_order_of(self, meta: AuditMeta) -> int:
        """``sync_order`` for the entities an audit wrote (``record``)."""
        state = ImageState.from_meta(meta, "")
        return self.sync_order(state.partition, state.row_keys()) if state is not None else 0

    def sync_every_order(self, workers: int = 16) -> int:
        """``sync_order`` for every entity of the state (``reindex``: an upgraded deployment's
        sorted pages, or rows a failed sync left behind); the transactions written."""
        with StorageErrors("listing the fleet state"):
            keys = [(e["PartitionKey"], e["RowKey"]) for e in self.table.query_entities(
                "PartitionKey ne @snapshot", parameters={"snapshot": "~fleet"}, select=["PartitionKey", "RowKey"])]
        with ThreadPoolExecutor(workers) as pool:  # its own threads: the syncs wait on the service
            return sum(pool.map(lambda key: self.sync_order(key[0], [key[1]]), keys))

    def _listed(self, partition: str, key: str) -> ImageState | None:
        with StorageErrors("reading the fleet state"):
            try:
                entity = self.table.get_entity(partition, key)
            except ResourceNotFoundError:
                return None
        return ImageState.from_entity(entity) if entity.get("listed") else None

    def _write(self, partition: str, keys: list[str],
               change: Callable[[str, ImageState | None], ImageState | None]) -> bool:
        with StorageErrors("writing the fleet state"):
            for _ in range(WRITE_ATTEMPTS):
                current = self._read_rows(partition, keys)
                operations: list[Any] = []
                for key in keys:
                    found = current.get(key)
                    updated = change(key, found[0] if found else None)
                    if updated is None:
                        continue
                    if found is None:
                        operations.append(("create", updated.entity(key)))
                    else:
                        operations.append(("update", updated.entity(key), {
                            "mode": "replace", "etag": found[1], "match_condition": MatchConditions.IfNotModified}))
                if not operations:
                    return False
                try:
                    self.table.submit_transaction(operations)
                    return True
                except HttpResponseError as error:
                    if error.status_code not in _CONFLICTS:
                        raise
            raise HttpResponseError(message="the fleet state kept changing", response=None)

    def _read_rows(self, partition: str, keys: list[str]) -> dict[str, tuple[ImageState, str]]:
        if len(keys) == 1:
            try:
                entity = self.table.get_entity(partition, keys[0])
            except ResourceNotFoundError:
                return {}
            return {keys[0]: (ImageState.from_entity(entity), entity.metadata["etag"])}
        names = {f"r{n}": key for n, key in enumerate(keys)}
        # Spaces around the brackets: the SDK finds ``@name`` between spaces only.
        query = "PartitionKey eq @pk and ( " + " or ".join(f"RowKey eq @{n}" for n in names) + " )"
        return {e["RowKey"]: (ImageState.from_entity(e), e.metadata["etag"])
                for e in self.table.query_entities(query, parameters={"pk": partition, **names})}

    # -- reading ---------------------------------------------------------------

    def get(self, repository: str, tag: str | None = None, digest: str | None = None) -> ImageState | None:
        """The image's current state (by digest when given, else by tag): one point read. With
        both, the digest's entity when it was asked by that tag, else the tag's when it is that
        digest (a second read). ``None``: never scanned, or out of the fleet (``gone``)."""
        order = ([digest_row(digest)] if digest else []) + ([tag_row(tag)] if tag else [])
        for key in order:
            state = self._point(repository, key)
            if state is not None and (tag is None or state.tag == tag) and (
                    digest is None or digest in (state.digest, state.platform_digest)):
                return state
        return None

    def _point(self, repository: str, key: str) -> ImageState | None:
        with StorageErrors("reading the fleet state"):
            try:
                return ImageState.from_entity(self.table.get_entity(table_key(repository), key))
            except ResourceNotFoundError:
                return None

    def gone(self, state: ImageState, now: float | None = None) -> bool:
        """Whether the image has left the fleet views: not scanned or asked for in the TTL."""
        if not self.image_ttl_days:
            return False
        return state.last_seen() < (now if now is not None else time.time()) - self.image_ttl_days * DAY_SECONDS

    def images(self, kind: str = TAG_ROW) -> Iterator[ImageState]:
        """Every entity of one kind (``t:`` tags, ``d:`` digests), in key order: maintenance and
        the timer's snapshot only (a fleet read uses a page)."""
        upper = chr(ord(kind[0]) + 1) + ":"
        with StorageErrors("listing the fleet state"):
            for entity in self.table.query_entities("RowKey ge @lo and RowKey lt @hi",
                                                    parameters={"lo": kind, "hi": upper}):
                yield ImageState.from_entity(entity)

    def approvals(self, now: float | None = None) -> Iterator[ImageState]:
        """Each approval request the fleet holds, once (by ``approval_id``, its tag's entity when it
        has one, else its digest's), images ``gone`` left out: the daily digest's read. ONE walk of
        the whole table, O(images) entities read, whatever the number of requests ever made."""
        found: dict[str, tuple[ImageState, bool]] = {}
        with StorageErrors("listing the fleet state"):
            # The image entities only (the table holds the metrics snapshot's rows too). Spaces around
            # the brackets: the SDK finds ``@name`` between spaces only.
            for entity in self.table.query_entities(
                    "( RowKey ge @d and RowKey lt @e ) or ( RowKey ge @t and RowKey lt @u )",
                    parameters={"d": DIGEST_ROW, "e": "e:", "t": TAG_ROW, "u": "u:"}):
                state = ImageState.from_entity(entity)
                if state.approval_id is None or self.gone(state, now):
                    continue
                is_tag = str(entity["RowKey"]).startswith(TAG_ROW)
                kept = found.get(state.approval_id)
                if kept is None or (is_tag and not kept[1]):
                    found[state.approval_id] = (state, is_tag)
        yield from (state for state, _ in found.values())


def fleet_table_name(settings: Settings, kind: str = "images") -> str:
    """``{FLEET_TABLE_PREFIX}{scanner short id}{kind}``: one scanner's table of ``kind``
    (letters and digits, as table names must be)."""
    return f"{settings.fleet_table_prefix}{settings.scanner_short_id}{kind}"


def fleet_state_of(settings: Settings) -> FleetState:
    """The scanner's fleet state on the account ``FLEET_TABLES_CONNECTION`` names."""
    connection = resolve_account_connection(settings.fleet_connection_setting)
    with StorageErrors("opening the fleet state"):
        table = fleet_table(connection, fleet_table_name(settings))
    order = FleetOrder(lambda order: fleet_table(connection, fleet_table_name(settings, f"by{order}")))
    return FleetState(table, settings.fleet_image_ttl_days, order)


__all__ = ["DIGEST_ROW", "TAG_ROW", "FleetState", "fleet_state_of", "fleet_table_name"]
