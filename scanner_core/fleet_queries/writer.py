"""Keeping the fleet query tables true (``rows.py``): each succeeded audit writes what changed
for its image; ``forget_image`` takes an image out; ``rebuild_queries`` writes an image
from one stored audit (``reindex``).

``record`` reads the image's reverse index (one partition query), builds the entities the
audit's findings and inventory make, and writes only those whose content hash changed, and
deletes those that are gone: a rescan that finds what the previous audit found writes one
row (the ``~image`` row). An older audit (by ``requested-at``) never overwrites a newer
one. The findings are asked for only when they can have changed (a dedup answer reusing the
audit already recorded changes nothing), the inventory only when the audit that made it
differs from the one recorded. Order of writes, so that a crash leaves no row the reverse
index does not list: the reverse index's new items (hash ``pending``), the entities, the
reverse index's final items and deletions (transactions of at most 100 per partition), the
``~image`` row last.

Callers: the follow-up after each audit's ``meta`` (off the scan's critical path: the meta
and its index are written first), ``reindex``, the bench. Not from a task of ``io_pool``:
the entities are written on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ..config import Settings
from ..io_pool import io_pool
from ..models import AuditMeta, AuditResult
from ..storage import AccountConnection, StorageErrors, fleet_table, fleet_table_name, resolve_account_connection
from ..trivy import ReportSummariser
from .inventory import InstalledPackage, packages_of_inventory
from .rows import (
    FoundPackage,
    HEADER_ROW, IMAGE_TABLE, MAX_LISTED, PACKAGE_TABLE, VULNERABILITY_TABLE, ImageSubject, content_hash,
    package_key, subject_from_label, subject_of, vulnerability_key, worst,
)

DEFAULT_CONNECTION = "AzureWebJobsStorage"
BATCH = 100  # a table transaction's limit
PENDING = "pending"

Findings = Callable[[], Iterable[FoundPackage]]
Packages = Callable[[], list[InstalledPackage]]
ReadChunks = Callable[[str], "Iterable[bytes] | None"]


def fleet_tables_connection(setting: str | None, environ: Mapping[str, str] | None = None) -> AccountConnection | None:
    """The connection named by ``FLEET_TABLES_CONNECTION`` (else ``SCAN_QUEUE_CONNECTION``'s
    name, else ``AzureWebJobsStorage``), by the host's rules; ``None`` when nothing of it is
    set (a one-time runner without a storage account: no fleet tables)."""
    env = os.environ if environ is None else environ
    name = setting or env.get("SCAN_QUEUE_CONNECTION") or DEFAULT_CONNECTION
    configured = any(key in (name, f"AzureWebJobs{name}") or key.startswith((f"{name}__", f"{name}:")) for key in env)
    return resolve_account_connection(name, env) if configured else None


@dataclass(frozen=True)
class RecordOutcome:
    """What ``record`` did: ``recorded``, ``unchanged`` (this audit is the recorded one),
    ``older`` (a newer audit is recorded), ``skipped`` (not a succeeded audit of a registry image)."""

    result: str
    written: int = 0
    deleted: int = 0


@dataclass
class _Delta:
    upserts: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {VULNERABILITY_TABLE: [], PACKAGE_TABLE: []})
    deletes: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {VULNERABILITY_TABLE: [], PACKAGE_TABLE: []})
    pending: list[dict[str, Any]] = field(default_factory=list)  # reverse index: before the entities
    items: list[dict[str, Any]] = field(default_factory=list)  # reverse index: after them
    dropped: list[str] = field(default_factory=list)  # reverse index RowKeys to delete, after them


class QueryTables:
    """The scanner's three tables on one connection (clients per process: ``storage.fleet_table``),
    keyed by kind, named per scanner as the fleet state is (``storage.fleet_table_name``)."""

    def __init__(self, connection: AccountConnection, settings: Settings) -> None:
        self.connection = connection
        self.tables = {kind: fleet_table(connection, fleet_table_name(settings, kind))
                       for kind in (VULNERABILITY_TABLE, PACKAGE_TABLE, IMAGE_TABLE)}

    # -- one audit ---------------------------------------------------------------

    def record(self, meta: AuditMeta, findings: Findings, packages: Packages) -> RecordOutcome:
        """``meta``'s image as its audit found it (see the module's docstring). ``StorageError``
        (status only) when the Table service fails."""
        subject = subject_of(meta)
        if subject is None or meta.audit_result is not AuditResult.SUCCEEDED:
            return RecordOutcome("skipped")
        with StorageErrors(f"reading the fleet queries of {subject.label!r}"):
            header, items = self._image(subject)
        if header is not None and int(header.get("requested-at", 0)) > meta.requested_at:
            return RecordOutcome("older")
        if header is not None and header.get("audit-id") == meta.audit_id:
            return RecordOutcome("unchanged")
        findings_from = meta.reused_from or meta.audit_id
        inventory_from = (meta.rescanned_from or meta.reused_from or meta.audit_id) if meta.inventory_path else ""
        delta = _Delta()
        if header is None or header.get("findings-from") != findings_from:
            self._vulnerability_delta(subject, meta, findings(), items, delta)
        if header is None or header.get("inventory-from") != inventory_from:
            self._package_delta(subject, packages() if inventory_from else [], items, delta)
        with StorageErrors(f"writing the fleet queries of {subject.label!r}"):
            self._apply(subject, delta)
            self.tables[IMAGE_TABLE].upsert_entity(_header(subject, meta, findings_from, inventory_from))
        written = sum(len(rows) for rows in delta.upserts.values())
        return RecordOutcome("recorded", written, sum(len(keys) for keys in delta.deletes.values()))

    def record_new_images(self, audits: Iterable[tuple[AuditMeta, list[FoundPackage], list[InstalledPackage]]], *,
                          side_by_side: bool = True) -> int:  # fmt: skip
        """Writes images the tables do not hold yet, one audit each, many at once (the bench; a
        first ``reindex``): no reverse index is read, the entities are grouped by partition into
        transactions of at most 100, submitted side by side (or one after the other: Azurite
        drops connections under many concurrent transactions). Returns the entities written."""
        groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        for meta, findings, packages in audits:
            subject = subject_of(meta)
            if subject is None or meta.audit_result is not AuditResult.SUCCEEDED:
                continue
            delta = _Delta()
            self._vulnerability_delta(subject, meta, findings, {}, delta)
            self._package_delta(subject, packages, {}, delta)
            for name, entities in delta.upserts.items():
                for entity in entities:
                    groups.setdefault((name, entity["PartitionKey"]), []).append(("upsert", entity))
            inventory_from = (meta.rescanned_from or meta.reused_from or meta.audit_id) if meta.inventory_path else ""
            header = _header(subject, meta, meta.reused_from or meta.audit_id, inventory_from)
            groups.setdefault((IMAGE_TABLE, subject.key), []).extend(("upsert", e) for e in [*delta.items, header])
        batches = [(name, operations[start : start + BATCH]) for (name, _), operations in groups.items()
                   for start in range(0, len(operations), BATCH)]  # fmt: skip
        with StorageErrors("writing the fleet queries"):
            submit = (io_pool().map if side_by_side else map)
            for done in submit(lambda batch: self.tables[batch[0]].submit_transaction(batch[1]), batches):
                del done
        return sum(len(operations) for _, operations in batches)

    def forget_image(self, subject: ImageSubject) -> int:
        """Takes the image out of every answer (it left the fleet: ``FLEET_IMAGE_TTL_DAYS``);
        returns the entities deleted. A later audit of it brings it back whole."""
        with StorageErrors(f"forgetting the fleet queries of {subject.label!r}"):
            header, items = self._image(subject)
            delta = _Delta()
            for row_key in items:
                self._drop(subject, row_key, delta)
            self._apply(subject, delta)
            if header is not None:
                self.tables[IMAGE_TABLE].delete_entity(subject.key, HEADER_ROW)
        return sum(len(keys) for keys in delta.deletes.values())

    # -- the parts ---------------------------------------------------------------

    def _image(self, subject: ImageSubject) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        rows = self.tables[IMAGE_TABLE].query_entities("PartitionKey eq @key", parameters={"key": subject.key})
        items = {row["RowKey"]: dict(row) for row in rows}
        return items.pop(HEADER_ROW, None), items

    def _vulnerability_delta(self, subject: ImageSubject, meta: AuditMeta, findings: Iterable[FoundPackage],
                             items: dict[str, dict[str, Any]], delta: _Delta) -> None:  # fmt: skip
        grouped: dict[str, list[FoundPackage]] = {}
        for finding in findings:
            if finding.vulnerability_id:
                grouped.setdefault(finding.vulnerability_id, []).append(finding)
        wanted = set()
        for vulnerability_id, found in grouped.items():
            packages = sorted({(f.pkg_name, f.installed_version or "", f.fixed_version or "", f.severity, f.target or "")
                               for f in found})[:MAX_LISTED]  # fmt: skip
            content = {"vulnerability-id": vulnerability_id, "severity": worst([f.severity for f in found]),
                       "packages": json.dumps([dict(zip(("name", "installed", "fixed", "severity", "target"), p))
                                               for p in packages]), **subject.columns()}  # fmt: skip
            row_key = "v:" + vulnerability_key(vulnerability_id)
            wanted.add(row_key)
            self._want(subject, VULNERABILITY_TABLE, vulnerability_key(vulnerability_id), row_key, content, meta, items,
                       delta)  # fmt: skip
        for row_key in items:
            if row_key.startswith("v:") and row_key not in wanted:
                self._drop(subject, row_key, delta)

    def _package_delta(self, subject: ImageSubject, packages: list[InstalledPackage],
                       items: dict[str, dict[str, Any]], delta: _Delta) -> None:  # fmt: skip
        grouped: dict[str, list[InstalledPackage]] = {}
        for package in packages:
            grouped.setdefault(package_key(package.name), []).append(package)
        wanted = set()
        for key, found in grouped.items():
            versions = sorted({(p.type, p.name, p.version or "", p.group or "") for p in found})[:MAX_LISTED]
            content = {"name": found[0].name, "types": " ".join(sorted({p.type for p in found})),
                       "versions": json.dumps([dict(zip(("type", "name", "version", "group"), v)) for v in versions]),
                       **subject.columns()}  # fmt: skip
            row_key = "p:" + key
            wanted.add(row_key)
            self._want(subject, PACKAGE_TABLE, key, row_key, content, None, items, delta)
        for row_key in items:
            if row_key.startswith("p:") and row_key not in wanted:
                self._drop(subject, row_key, delta)

    def _want(self, subject: ImageSubject, table: str, partition: str, row_key: str, content: dict[str, Any],
              meta: AuditMeta | None, items: dict[str, dict[str, Any]], delta: _Delta) -> None:  # fmt: skip
        digest = content_hash(content)
        known = items.get(row_key)
        if known is not None and known.get("hash") == digest:
            return
        since = {}
        if meta is not None:  # since which audit: kept while the vulnerability stays
            since = ({"since-audit": known["since-audit"], "since-at": known["since-at"]} if known is not None
                     and known.get("since-audit") else {"since-audit": meta.audit_id, "since-at": meta.requested_at})
        delta.upserts[table].append({"PartitionKey": partition, "RowKey": subject.key, **content, **since})
        item = {"PartitionKey": subject.key, "RowKey": row_key, **since}
        if known is None:
            delta.pending.append({**item, "hash": PENDING})
        delta.items.append({**item, "hash": digest})

    def _drop(self, subject: ImageSubject, row_key: str, delta: _Delta) -> None:
        table = VULNERABILITY_TABLE if row_key.startswith("v:") else PACKAGE_TABLE
        delta.deletes[table].append((row_key[2:], subject.key))
        delta.dropped.append(row_key)

    def _apply(self, subject: ImageSubject, delta: _Delta) -> None:
        image_table = self.tables[IMAGE_TABLE]
        _batched(image_table, [("upsert", item) for item in delta.pending])
        work: list[Callable[[], object]] = []
        for name, entities in delta.upserts.items():
            work += [lambda t=self.tables[name], e=entity: t.upsert_entity(e) for entity in entities]
        for name, keys in delta.deletes.items():
            work += [lambda t=self.tables[name], k=key: _delete(t, *k) for key in keys]
        for done in io_pool().map(lambda task: task(), work):
            del done
        operations = [("upsert", item) for item in delta.items]
        operations += [("delete", {"PartitionKey": subject.key, "RowKey": key}) for key in delta.dropped]
        _batched(image_table, operations)


def _header(subject: ImageSubject, meta: AuditMeta, findings_from: str, inventory_from: str) -> dict[str, Any]:
    return {"PartitionKey": subject.key, "RowKey": HEADER_ROW, "audit-id": meta.audit_id,
            "requested-at": meta.requested_at, "findings-from": findings_from, "inventory-from": inventory_from,
            **subject.columns()}  # fmt: skip


def _batched(table: Any, operations: list[tuple[str, dict[str, Any]]]) -> None:
    for start in range(0, len(operations), BATCH):
        table.submit_transaction(operations[start : start + BATCH])


def _delete(table: Any, partition: str, row: str) -> None:
    try:
        table.delete_entity(partition, row)
    except ResourceNotFoundError:
        pass


def forget_image(tables: QueryTables, image: str) -> int:
    """``QueryTables.forget_image`` for an image's label (``registry/repository:tag``, or
    ``registry/repository@sha256:...`` for one known by digest only)."""
    return tables.forget_image(subject_from_label(image))


def rebuild_queries(tables: QueryTables, meta: AuditMeta, read_chunks: ReadChunks) -> RecordOutcome:
    """Writes ``meta``'s image from its stored report and inventory (``reindex``; idempotent:
    run it over the metas in any order and the newest audit of each image stands)."""

    def findings() -> list[FoundPackage]:
        return stored_findings(read_chunks, meta.trivy_audit_path)

    def packages() -> list[InstalledPackage]:
        return stored_packages(read_chunks, meta.inventory_path)

    return tables.record(meta, findings, packages)


def stored_findings(read_chunks: ReadChunks, path: str | None) -> list[FoundPackage]:
    """A stored report's findings, streamed (``StorageError``/``ValueError`` when it cannot be read)."""
    chunks = read_chunks(path) if path else None
    if chunks is None:
        raise ValueError(f"the report {path!r} is not stored")
    found: list[FoundPackage] = []
    summariser = ReportSummariser(on_finding=found.append)
    for chunk in chunks:
        summariser.feed(chunk)
    summariser.close()
    return found


def stored_packages(read_chunks: ReadChunks, path: str | None) -> list[InstalledPackage]:
    chunks = read_chunks(path) if path else None
    if chunks is None:
        return []
    return packages_of_inventory(b"".join(chunks))
