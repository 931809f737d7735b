"""The fleet queries' pages: one partition of the ``vulns`` or ``packages`` table read in
RowKey order from a cursor, so a page costs the same at 1,000 and 100,000 images (a
partition query, at most ``SCAN_BUDGET`` entities read, whatever the table's size).

Cursors are the last RowKey read, bound to the query they belong to (a SHA-256 of the
table, the partition and the filters): a cursor of another query, or one edited by hand,
is ``InvalidCursor`` (400). A page filtered by type or version range may hold fewer than
``limit`` images and still have a ``next-cursor``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ..storage import InvalidCursor, StorageErrors, decode_cursor, encode_cursor, iso8601
from .rows import PACKAGE_TABLE, VULNERABILITY_TABLE, package_key, vulnerability_key
from .versions import VersionRange
from .writer import QueryTables

SCAN_BUDGET = 1000  # entities read per page at most, whatever the filters discard
MAX_ID_CHARS = 64
MAX_NAME_CHARS = 214  # npm's limit; Maven's and PyPI's names are shorter in practice
_CVE = re.compile(r"CVE-\d{4}-\d{4,19}")
_GHSA = re.compile(r"GHSA(-[23456789cfghjmpqrvwx]{4}){3}")
_OTHER = re.compile(r"[A-Z][A-Z0-9]{1,15}(-[A-Za-z0-9._:]{1,30}){1,4}")  # RUSTSEC-2024-0001, GO-2024-1234, DLA-3001-1
_KEY = re.compile(r"[A-Za-z0-9._:@~-]{1,512}")
ID_SYNTAX = "a CVE id (CVE-2021-44228), a GHSA id (GHSA-jfh8-c2jp-5v3q) or another advisory id (RUSTSEC-2024-0001)"


@dataclass(frozen=True)
class QueryPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def normalise_vulnerability_id(text: str) -> str:
    """The id as trivy reports it (``cve-2021-44228`` → ``CVE-2021-44228``); ``ValueError`` else."""
    upper = text.strip().upper()
    if upper.startswith("CVE-"):
        if _CVE.fullmatch(upper):
            return upper
    elif upper.startswith("GHSA-"):
        candidate = "GHSA-" + text.strip()[5:].lower()
        if _GHSA.fullmatch(candidate):
            return candidate
    elif len(text) <= MAX_ID_CHARS and _OTHER.fullmatch(text.strip()):
        return text.strip()
    raise ValueError(f"{text[:80]!r} is not {ID_SYNTAX}")


def package_name(text: str) -> str:
    """A package name as asked for: printable, no control characters, at most ``MAX_NAME_CHARS``."""
    if not text or len(text) > MAX_NAME_CHARS or not text.isprintable() or text != text.strip():
        raise ValueError(f"must be a package name of 1 to {MAX_NAME_CHARS} printable characters "
                         "without leading or trailing spaces")  # fmt: skip
    return text


def images_with_vulnerability(tables: QueryTables, vulnerability_id: str, limit: int, cursor: str | None) -> QueryPage:
    """Current images with ``vulnerability_id`` (already normalised), one page."""
    partition = vulnerability_key(vulnerability_id)
    scope = _scope(VULNERABILITY_TABLE, partition)
    entities, next_key = _read(tables, VULNERABILITY_TABLE, partition, _after(cursor, scope), limit, lambda _: True)
    return QueryPage([_vulnerability_row(e) for e in entities], encode_cursor(f"{scope}.{next_key}") if next_key else None)


def images_with_package(tables: QueryTables, name: str, limit: int, cursor: str | None, *,
                        kind: str | None = None, versions: VersionRange | None = None) -> QueryPage:  # fmt: skip
    """Current images containing package ``name`` (any case; ``group:name`` narrows a Maven
    artifact to its group), optionally of one type and with a version in ``versions``; each
    row lists the matching versions."""
    group = None
    if ":" in name.strip(":"):
        group, name = name.rsplit(":", 1)
    partition = package_key(name)
    scope = _scope(PACKAGE_TABLE, partition, group or "", kind or "", str(versions or ""))

    def wanted(version: dict[str, str]) -> bool:
        return ((kind is None or version["type"] == kind) and (group is None or version.get("group") == group)
                and (versions is None or version["version"] in versions))  # fmt: skip

    def matching(entity: dict[str, Any]) -> bool:
        entity["_versions"] = [v for v in json.loads(entity.get("versions") or "[]") if wanted(v)]
        return bool(entity["_versions"])

    entities, next_key = _read(tables, PACKAGE_TABLE, partition, _after(cursor, scope), limit, matching)
    return QueryPage([_package_row(e) for e in entities], encode_cursor(f"{scope}.{next_key}") if next_key else None)


def _read(tables: QueryTables, table: str, partition: str, after: str, limit: int,
          keep: Any) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    kept: list[dict[str, Any]] = []
    last = None
    with StorageErrors(f"reading {table}"):
        entities = tables.tables[table].query_entities(
            "PartitionKey eq @partition and RowKey gt @after", parameters={"partition": partition, "after": after},
            results_per_page=min(SCAN_BUDGET, max(limit + 1, 100)),
        )
        for scanned, entity in enumerate(entities, start=1):
            if len(kept) == limit:
                return kept, last  # there is at least one more
            last = entity["RowKey"]
            if keep(entity):
                kept.append(dict(entity))
            if scanned >= SCAN_BUDGET:
                return kept, last
    return kept, None


def _scope(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


def _after(cursor: str | None, scope: str) -> str:
    if not cursor:
        return ""
    text = decode_cursor(cursor)
    found_scope, _, row_key = text.partition(".")
    if found_scope != scope or not _KEY.fullmatch(row_key):
        raise InvalidCursor("is not a cursor of this query; use the 'next-cursor' of the previous page")
    return row_key


def _image(entity: dict[str, Any]) -> dict[str, Any]:
    return {"image": entity.get("image"), "repository": entity.get("repository"), "tag": entity.get("tag") or None,
            "digest": entity.get("digest") or None}


def _vulnerability_row(entity: dict[str, Any]) -> dict[str, Any]:
    return {**_image(entity), "severity": entity.get("severity"), "packages": json.loads(entity.get("packages") or "[]"),
            "since-audit": entity.get("since-audit"), "since": iso8601(entity.get("since-at")),
            "approval-digest": entity.get("approval-digest") or None}


def _package_row(entity: dict[str, Any]) -> dict[str, Any]:
    return {**_image(entity), "name": entity.get("name"), "versions": entity["_versions"],
            "approval-digest": entity.get("approval-digest") or None}
