"""A minimal, write-once bbolt (BoltDB) file writer.

Only what is needed to produce a database that ``go.etcd.io/bbolt`` opens
read-only (as trivy does) is implemented: two meta pages, an empty freelist
page, and a B+tree of leaf/branch pages per bucket. Every bucket is stored
non-inline (its own root page), which bbolt reads fine and keeps this simple.

On-disk facts used here (from bbolt's ``internal/common``), all little-endian
as written by amd64/arm64 builds:

* page header (16 bytes): ``id u64, flags u16, count u16, overflow u32``.
  A page whose contents exceed ``page_size`` spans ``overflow`` extra
  consecutive pages; only the first one carries a header.
* leaf element (16 bytes): ``flags u32, pos u32, ksize u32, vsize u32`` where
  ``pos`` is relative to the element's own address; key and value bytes follow
  back to back in the data area after the element array.
* branch element (16 bytes): ``pos u32, ksize u32, pgid u64``; the key is the
  first key of the child page (the cursor picks the last element <= key).
* bucket value (16 bytes): ``root pgid u64, sequence u64``; the leaf element
  that holds it carries ``bucketLeafFlag`` (0x01).
* meta (after the page header): ``magic u32, version u32, page_size u32,
  flags u32, root bucket (16 bytes), freelist pgid u64, high-water pgid u64,
  txid u64, checksum u64``; the checksum is FNV-1a 64 over the preceding
  56 bytes.
"""

from __future__ import annotations

import os
import pathlib
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

BoltValue: TypeAlias = bytes | Mapping[bytes, "BoltValue"]

MAGIC = 0xED0CDAED
VERSION = 2

BRANCH_PAGE_FLAG = 0x01
LEAF_PAGE_FLAG = 0x02
META_PAGE_FLAG = 0x04
FREELIST_PAGE_FLAG = 0x10
BUCKET_LEAF_FLAG = 0x01

PAGE_HEADER = struct.Struct("<QHHI")
LEAF_ELEMENT = struct.Struct("<IIII")
BRANCH_ELEMENT = struct.Struct("<IIQ")
BUCKET_HEADER = struct.Struct("<QQ")
META_FIELDS = struct.Struct("<IIII QQ QQQ")  # checksum is appended separately

# bbolt panics when a page holds 0xFFFF or more elements.
MAX_ELEMENTS_PER_PAGE = 0xFFFE
MAX_KEY_SIZE = 32768
MIN_PAGE_SIZE = 1024

FREELIST_PGID = 2
FIRST_DATA_PGID = 3

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3


def fnv64a(data: bytes) -> int:
    """FNV-1a 64-bit hash, the checksum bbolt stores in each meta page."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass
class _PageAllocator:
    """Hands out page ids in write order and collects the encoded pages."""

    page_size: int
    next_pgid: int = FIRST_DATA_PGID
    chunks: list[bytes] = field(default_factory=list)

    def add(self, flags: int, count: int, body: bytes) -> int:
        """Store one logical page (possibly with overflow) and return its id."""
        pgid = self.next_pgid
        size = PAGE_HEADER.size + len(body)
        n_pages = -(-size // self.page_size)
        header = PAGE_HEADER.pack(pgid, flags, count, n_pages - 1)
        padding = b"\0" * (n_pages * self.page_size - size)
        self.chunks.append(header + body + padding)
        self.next_pgid += n_pages
        return pgid


@dataclass(frozen=True)
class _LeafItem:
    key: bytes
    value: bytes
    flags: int

    @property
    def size(self) -> int:
        return LEAF_ELEMENT.size + len(self.key) + len(self.value)


@dataclass(frozen=True)
class _BranchItem:
    key: bytes
    pgid: int

    @property
    def size(self) -> int:
        return BRANCH_ELEMENT.size + len(self.key)


_Item = TypeVar("_Item", _LeafItem, _BranchItem)


def _chunk_by_size(items: list[_Item], page_size: int) -> Iterator[list[_Item]]:
    """Greedily pack items into groups that fit one page each.

    An item bigger than a page gets a group of its own; the allocator then
    gives that page an overflow run, exactly like bbolt does for big values.
    """
    budget = page_size - PAGE_HEADER.size
    group: list[_Item] = []
    used = 0
    for item in items:
        too_big = used + item.size > budget
        if group and (too_big or len(group) >= MAX_ELEMENTS_PER_PAGE):
            yield group
            group, used = [], 0
        group.append(item)
        used += item.size
    if group:
        yield group


def _encode_leaf(items: list[_LeafItem]) -> bytes:
    """Element array followed by the key/value data area."""
    elements = bytearray()
    data = bytearray()
    data_start = len(items) * LEAF_ELEMENT.size
    for index, item in enumerate(items):
        element_offset = index * LEAF_ELEMENT.size
        pos = data_start + len(data) - element_offset
        elements += LEAF_ELEMENT.pack(item.flags, pos, len(item.key), len(item.value))
        data += item.key + item.value
    return bytes(elements + data)


def _encode_branch(items: list[_BranchItem]) -> bytes:
    elements = bytearray()
    data = bytearray()
    data_start = len(items) * BRANCH_ELEMENT.size
    for index, item in enumerate(items):
        element_offset = index * BRANCH_ELEMENT.size
        pos = data_start + len(data) - element_offset
        elements += BRANCH_ELEMENT.pack(pos, len(item.key), item.pgid)
        data += item.key
    return bytes(elements + data)


def _validate_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise TypeError(f"bolt keys must be bytes, got {type(key).__name__}")
    if not 0 < len(key) <= MAX_KEY_SIZE:
        raise ValueError(f"bolt key length must be 1..{MAX_KEY_SIZE}, got {len(key)}")


def _write_bucket(alloc: _PageAllocator, bucket: Mapping[bytes, BoltValue]) -> int:
    """Write a bucket's B+tree (children first) and return its root page id."""
    leaf_items: list[_LeafItem] = []
    for key in sorted(bucket):
        _validate_key(key)
        value = bucket[key]
        if isinstance(value, (bytes, bytearray, memoryview)):
            leaf_items.append(_LeafItem(key, bytes(value), 0))
        elif isinstance(value, Mapping):
            child_root = _write_bucket(alloc, value)
            header = BUCKET_HEADER.pack(child_root, 0)
            leaf_items.append(_LeafItem(key, header, BUCKET_LEAF_FLAG))
        else:
            raise TypeError(f"unsupported bolt value for key {key!r}: {type(value).__name__}")

    if not leaf_items:
        return alloc.add(LEAF_PAGE_FLAG, 0, b"")

    level: list[_BranchItem] = [
        _BranchItem(group[0].key, alloc.add(LEAF_PAGE_FLAG, len(group), _encode_leaf(group)))
        for group in _chunk_by_size(leaf_items, alloc.page_size)
    ]
    while len(level) > 1:
        level = [
            _BranchItem(group[0].key, alloc.add(BRANCH_PAGE_FLAG, len(group), _encode_branch(group)))
            for group in _chunk_by_size(level, alloc.page_size)
        ]
    return level[0].pgid


def _meta_page(pgid: int, page_size: int, root: int, high_water: int, txid: int) -> bytes:
    fields = META_FIELDS.pack(MAGIC, VERSION, page_size, 0, root, 0, FREELIST_PGID, high_water, txid)
    meta = fields + struct.pack("<Q", fnv64a(fields))
    page = PAGE_HEADER.pack(pgid, META_PAGE_FLAG, 0, 0) + meta
    return page.ljust(page_size, b"\0")


def _freelist_page(page_size: int) -> bytes:
    return PAGE_HEADER.pack(FREELIST_PGID, FREELIST_PAGE_FLAG, 0, 0).ljust(page_size, b"\0")


def encode_bolt(root: Mapping[bytes, BoltValue], page_size: int = 4096) -> bytes:
    """Return the bytes of a bolt database holding ``root`` as its root bucket.

    Top-level values must be buckets: bbolt's ``Tx`` API only exposes buckets
    there (``tx.ForEach``/``tx.Bucket``), so a plain value would be unreadable.
    """
    if page_size < MIN_PAGE_SIZE or page_size & (page_size - 1):
        raise ValueError(f"page_size must be a power of two >= {MIN_PAGE_SIZE}")
    plain = [key for key, value in root.items() if not isinstance(value, Mapping)]
    if plain:
        raise TypeError(f"top-level bolt values must be buckets, got plain values for {plain!r}")
    alloc = _PageAllocator(page_size)
    root_pgid = _write_bucket(alloc, root)
    high_water = alloc.next_pgid
    # Both meta pages are valid; bbolt uses the one with the higher txid.
    metas = [_meta_page(i, page_size, root_pgid, high_water, txid=i) for i in (0, 1)]
    return b"".join([*metas, _freelist_page(page_size), *alloc.chunks])


def write_bolt(path: pathlib.Path, root: Mapping[bytes, BoltValue], page_size: int = 4096) -> None:
    """Write a complete bolt database file atomically (temp file + rename).

    The rename matters: bbolt mmaps and flocks the file, so a reader must
    never observe a half-written database.
    """
    data = encode_bolt(root, page_size)
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
