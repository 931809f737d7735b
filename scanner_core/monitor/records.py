"""What the monitor loop keeps in Blob Storage, beside the audits:

``trivy-{id8}/monitor/seen/{registry}/{repository}/{algo}-{hex}``
    One empty blob per digest that the watch timer or the Event Grid trigger
    has enqueued (or, on a repository's first watch run, set aside as already
    there); metadata: the tag it was found under, the source (``watch``,
    ``event``, ``baseline``), when, and the audit id. Created with
    ``If-None-Match: *``, so two writers never both claim a digest, and no
    read-modify-write of a shared document is needed.
``trivy-{id8}/monitor/seen/{registry}/{repository}/.watched``
    The repository has had its first watch run (its backlog was bounded then).
``trivy-{id8}/monitor/images/{registry}/{repository}/{algo}-{hex}``
    The latest *succeeded* audit of one image (repository and digest): its id,
    folder, request and scan times, DB ``UpdatedAt``, dedup fingerprint, and
    ``seen``: the last request that was not a rescan. The rescan timer lists
    these (one call per 5,000 images, whatever the number of audits) and the
    dedup lookup is one HEAD. An older request never replaces a newer one.

Repository path components never start with ``.``, and digests are written
``algo-hex``, so none of these names can collide with another repository's.
``reindex`` does not rebuild these records: they fill again as audits are made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobPrefix, ContainerClient

from ..storage import StorageErrors, container_client

WATCHED_MARKER = ".watched"
_PAGE = 5000


def _digest_name(digest: str) -> str:
    return digest.replace(":", "-", 1)


def _digest_of(name: str) -> str | None:
    leaf = name.rsplit("/", 1)[-1]
    algorithm, sep, hex_part = leaf.partition("-")
    return f"{algorithm}:{hex_part}" if sep and algorithm in ("sha256", "sha512") else None


@dataclass(frozen=True)
class Seen:
    """A digest the monitor has enqueued or set aside."""

    digest: str
    tag: str | None = None
    source: str | None = None
    audit_id: str | None = None
    seen_at: int | None = None


@dataclass(frozen=True)
class ImageRecord:
    """The latest succeeded audit of one image (repository and digest)."""

    repository: str
    digest: str
    audit_id: str
    folder: str
    requested_at: int
    scanned_at: int
    seen_at: int  # the last request that was not a rescan
    tag: str | None = None
    db_updated_at: str | None = None
    fingerprint: str | None = None
    trigger: str | None = None
    # Issue 18: the CycloneDX inventory rescans match, the audit that made it, and its secrets count.
    inventory: str | None = None
    inventory_audit: str | None = None
    secrets: int | None = None
    # Issue 23: set on the record of an image index, naming the platform manifest its audit
    # scanned; each platform scanned has a record of its own (digest: the platform's manifest),
    # which rescans and approvals follow. An index's record serves dedup only.
    platform_digest: str | None = None

    @property
    def is_index(self) -> bool:
        return self.platform_digest is not None and self.platform_digest != self.digest

    def to_metadata(self) -> dict[str, str]:
        values = {key.replace("_", ""): value for key, value in asdict(self).items() if value is not None}
        return {key: str(value) for key, value in values.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ImageRecord | None:
        values = {key.lower(): value for key, value in metadata.items()}
        try:
            return cls(
                repository=values["repository"],
                digest=values["digest"],
                audit_id=values["auditid"],
                folder=values["folder"],
                requested_at=int(values["requestedat"]),
                scanned_at=int(values["scannedat"]),
                seen_at=int(values["seenat"]),
                tag=values.get("tag"),
                db_updated_at=values.get("dbupdatedat"),
                fingerprint=values.get("fingerprint"),
                trigger=values.get("trigger"),
                inventory=values.get("inventory"),
                inventory_audit=values.get("inventoryaudit"),
                secrets=int(values["secrets"]) if values.get("secrets", "").isdigit() else None,
                platform_digest=values.get("platformdigest"),
            )
        except (KeyError, ValueError):
            return None  # written by another version: left out


class MonitorStore:
    """The monitor's blobs in the results container; every call asks the service.

    ``StorageError`` (transient) when the service fails.
    """

    def __init__(self, container: ContainerClient | str, scanner_short_id: str) -> None:
        self._owns_client = isinstance(container, str)
        if isinstance(container, str):
            container = container_client(
                container, retry_total=3, connection_timeout=10, read_timeout=60
            )
        self._container = container
        self.prefix = f"trivy-{scanner_short_id}/monitor/"
        self._kept: dict[str, ImageRecord | None] = {}

    def _errors(self, what: str) -> StorageErrors:
        return StorageErrors(what, self._container.url)

    # -- seen digests (watch timer, Event Grid) -------------------------------

    def seen_name(self, repository: str, digest: str) -> str:
        return f"{self.prefix}seen/{repository}/{_digest_name(digest)}"

    def seen(self, repository: str) -> dict[str, Seen]:
        """Every digest seen in ``repository`` (not in repositories below it)."""
        found: dict[str, Seen] = {}
        with self._errors(f"listing the digests seen in {repository}"):
            listing = self._container.walk_blobs(
                name_starts_with=f"{self.prefix}seen/{repository}/", include=["metadata"], delimiter="/"
            )
            for item in listing:
                if isinstance(item, BlobPrefix) or (digest := _digest_of(item.name)) is None:
                    continue
                meta = {k.lower(): v for k, v in (item.metadata or {}).items()}
                seen_at = meta.get("seenat")
                found[digest] = Seen(
                    digest, meta.get("tag"), meta.get("source"), meta.get("auditid"),
                    int(seen_at) if seen_at and seen_at.isdigit() else None,
                )
        return found

    def is_seen(self, repository: str, digest: str) -> bool:
        with self._errors(f"looking up {repository}@{digest}"):
            return self._exists(self.seen_name(repository, digest))

    def mark_seen(self, repository: str, seen: Seen) -> bool:
        """Records a digest as seen; ``False`` when it already was (nothing changed)."""
        metadata = {k: str(v) for k, v in {"tag": seen.tag, "source": seen.source, "auditid": seen.audit_id,
                                            "seenat": seen.seen_at}.items() if v is not None}
        with self._errors(f"recording {repository}@{seen.digest} as seen"):
            try:
                self._container.upload_blob(
                    self.seen_name(repository, seen.digest), b"", overwrite=False, metadata=metadata
                )
            except ResourceExistsError:
                return False
        return True

    def watched_before(self, repository: str) -> bool:
        with self._errors(f"reading the watch state of {repository}"):
            return self._exists(f"{self.prefix}seen/{repository}/{WATCHED_MARKER}")

    def mark_watched(self, repository: str, at: int) -> None:
        with self._errors(f"writing the watch state of {repository}"):
            self._container.upload_blob(
                f"{self.prefix}seen/{repository}/{WATCHED_MARKER}", b"", overwrite=True, metadata={"firstrun": str(at)}
            )

    # -- the latest succeeded audit of each image (rescan, dedup) -------------

    def image_name(self, repository: str, digest: str) -> str:
        return f"{self.prefix}images/{repository}/{_digest_name(digest)}"

    def latest(self, repository: str, digest: str, *, keep: bool = False) -> ImageRecord | None:
        """The image's record. ``keep``: the next call for the same image (one scan's dedup
        lookup after its plan's) is answered from this one instead of asking again."""
        name = self.image_name(repository, digest)
        if name in self._kept:
            return self._kept.pop(name)
        with self._errors(f"reading the latest audit of {repository}@{digest}"):
            metadata = self._metadata(name)
        record = ImageRecord.from_metadata(metadata) if metadata is not None else None
        if keep:
            self._kept[name] = record
        return record

    def remember(self, record: ImageRecord) -> ImageRecord:
        """Makes ``record`` the image's latest audit unless a newer request is recorded.

        A rescan does not move ``seen``: it keeps the previous record's. Returns
        the record now stored. Not atomic: two audits of one digest finishing at
        once may leave the older one, which the next audit of the image replaces.
        """
        name = self.image_name(record.repository, record.digest)
        self._kept.pop(name, None)
        with self._errors(f"recording the latest audit of {record.repository}@{record.digest}"):
            previous_metadata = self._metadata(name)
            previous = ImageRecord.from_metadata(previous_metadata) if previous_metadata else None
            if previous is not None:
                if previous.requested_at > record.requested_at:
                    return previous
                if record.trigger == "rescan":
                    record = _with_seen(record, max(previous.seen_at, 0))
                if record.tag is None and previous.tag is not None:
                    record = _with_tag(record, previous.tag)
            self._container.upload_blob(name, b"", overwrite=True, metadata=record.to_metadata())
        return record

    def images(self) -> Iterator[ImageRecord]:
        """Every image's latest succeeded audit (pages of 5,000)."""
        with self._errors("listing the monitored images"):
            listing = self._container.list_blobs(
                name_starts_with=f"{self.prefix}images/", include=["metadata"], results_per_page=_PAGE
            )
            for blob in listing:
                if (record := ImageRecord.from_metadata(blob.metadata or {})) is not None:
                    yield record

    # -- plumbing ------------------------------------------------------------

    def read_bytes(self, name: str) -> bytes | None:
        """A blob of the container (``None`` when it is gone): an inventory, for a rescan."""
        with self._errors(f"reading {name}"):
            try:
                return bytes(self._container.download_blob(name).readall())
            except ResourceNotFoundError:
                return None

    def exists(self, name: str) -> bool:
        """Whether a blob of the container exists (one HEAD)."""
        with self._errors(f"looking up {name}"):
            return self._exists(name)

    def _exists(self, name: str) -> bool:
        return self._metadata(name) is not None

    def _metadata(self, name: str) -> dict[str, str] | None:
        try:
            return dict(self._container.get_blob_client(name).get_blob_properties().metadata or {})
        except ResourceNotFoundError:
            return None

    def close(self) -> None:
        if self._owns_client:
            self._container.close()

    def __enter__(self) -> MonitorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_seen(record: ImageRecord, seen_at: int) -> ImageRecord:
    return ImageRecord(**{**asdict(record), "seen_at": seen_at})


def _with_tag(record: ImageRecord, tag: str) -> ImageRecord:
    return ImageRecord(**{**asdict(record), "tag": tag})
