"""Dedup: a request for a digest already scanned with the same trivy, DB,
settings and suppression files is answered from that audit, without trivy.

The answer is a new, self-contained audit folder: the earlier folder's data
blobs (``scan-result.json``, ``sbom.cdx.json``, whatever else an audit folder
holds, but not its ``meta`` or its notification claim) are copied server-side
into it (Copy Blob within the account: no bytes through the instance), then its
``meta`` is written last, copying the earlier verdict, saying ``reused-from:
<audit id>`` and pointing into the new folder. A lifecycle rule that deletes
the earlier folder leaves the new audit whole. When a copy fails (the earlier
folder went away meanwhile), the request is scanned. Only requests
*by digest* are answered this way (the watch timer, Event Grid, rescans, and
anyone who sends ``repo@sha256:...``): a tag may have moved since, so a
request by tag is always scanned. ``SCAN_DEDUP=false`` turns it off.

After every succeeded audit of a registry image, ``remember`` records it as
the image's latest audit (``records.py``), with its fingerprint: that record
is what the next request's lookup reads (one HEAD), and what rescans select.
"""

from __future__ import annotations

import time
from dataclasses import replace
from collections.abc import Callable

from .. import __version__
from ..audit import ScanRequest
from ..config import ScannerConfig
from ..log import ScanLogger
from ..models import AuditMeta, AuditResult
from ..registry import ImageReference
from ..storage import META_BLOB, NOTIFICATION_BLOB, REPORT_BLOB, SBOM_BLOB, AzureBlobStore, image_identity
from ..trivy import VulnerabilityDatabase
from .fingerprint import ScanIdentity, scan_fingerprint
from .records import ImageRecord, MonitorStore

# Fields of a meta that belong to the new request, not to the scan it reuses.
_REQUEST_FIELDS = ("audit_id", "requested_at", "image", "image_tag", "tag_not_confirmed", "trigger", "requested_by")
# Fields that describe the earlier audit's place in its image's history: not copied
# (the core's follow-up computes them anew for the new audit).
_HISTORY_FIELDS = ("previous_audit_id", "changes", "rescan_fallback")
# Blobs of an audit folder that are the audit's own, never copied into a reusing one.
_NOT_COPIED = frozenset({META_BLOB, NOTIFICATION_BLOB})


class AuditReuse:
    """The dedup lookup and bookkeeping of one scanner."""

    def __init__(self, config: ScannerConfig, store: MonitorStore, blob_store: AzureBlobStore) -> None:
        self.config = config
        self.store = store
        self.blob_store = blob_store

    @property
    def enabled(self) -> bool:
        return self.config.settings.scan_dedup

    def applies(self, image: ImageReference | None) -> bool:
        return self.enabled and image is not None and image.digest is not None

    def identity(
        self, image: ImageReference, digest: str, trivy_version: str | None, db_updated_at: str | None,
        request: ScanRequest,
    ) -> ScanIdentity:
        return ScanIdentity(
            repository=f"{image.registry}/{image.repository}",
            digest=digest,
            trivy_version=trivy_version,
            db_updated_at=db_updated_at,
            platform=getattr(request, "platform", None),
            scanner_version=__version__,
        )

    def find(
        self, image: ImageReference, request: ScanRequest, trivy_version: str, db_updated_at: str | None
    ) -> tuple[AuditMeta, ImageRecord] | None:
        """The earlier succeeded audit this request can be answered from, with its record."""
        if not self.applies(image) or image.digest is None or db_updated_at is None:
            return None
        identity = self.identity(image, image.digest, trivy_version, db_updated_at, request)
        record = self.store.latest(identity.repository, image.digest)
        if record is None or record.fingerprint != scan_fingerprint(self.config, identity):
            return None
        data = self.blob_store.download_bytes(f"{record.folder}/{META_BLOB}")
        if data is None:
            return None  # the folder is gone (retention): scan again
        earlier = AuditMeta.model_validate_json(data)
        if (
            earlier.audit_result is not AuditResult.SUCCEEDED
            or earlier.audit_id != record.audit_id
            or earlier.trivy_audit_path is None
            or not self.store.exists(earlier.trivy_audit_path)
        ):
            return None
        return earlier, record

    def answer(
        self,
        request: ScanRequest,
        image: ImageReference | None,
        base: AuditMeta,
        folder: str,
        database: VulnerabilityDatabase,
        trivy_version: Callable[[], str],
        log: ScanLogger,
    ) -> tuple[AuditMeta, int, AuditMeta] | None:
        """The new audit's meta (its folder, ``folder``, filled first), the earlier scan's time
        and the earlier meta, or ``None``: scan.
        Any doubt, or any error, means scan (the scan path reports real failures)."""
        if not self.applies(image) or image is None:
            return None
        try:
            database.ensure()
            found = self.find(image, request, trivy_version(), database.info().updated_at)
        except Exception as error:  # noqa: BLE001 - never fails a request that can be scanned
            log.warning("dedup lookup failed; scanning", fields={"error": str(error)})
            return None
        if found is None:
            return None
        earlier, record = found
        try:
            copied = self.copy_blobs(earlier, record.folder, folder)
        except Exception as error:  # noqa: BLE001 - a folder removed meanwhile: scan
            log.warning("earlier audit's blobs not copied; scanning", fields={"error": str(error)})
            return None
        meta = self.reused_meta(earlier, base).model_copy(update=copied)
        log.info("answered from an earlier audit; trivy not run", fields={"reused-from": meta.reused_from})
        return meta, record.scanned_at, earlier

    def copy_blobs(self, earlier: AuditMeta, source: str, folder: str) -> dict[str, str]:
        """Copies ``source``'s blobs into ``folder`` (all but meta and the notification
        claim); returns the meta's paths into ``folder``. A report outside ``source``
        (an audit reused before audits were self-contained) is copied by its path."""
        copied: dict[str, str] = {}
        for name in self.blob_store.names(f"{source}/"):
            blob = name[len(source) + 1:]
            if blob not in _NOT_COPIED:
                self.blob_store.copy_blob(name, f"{folder}/{blob}")
                copied[name] = f"{folder}/{blob}"
        paths: dict[str, str] = {}
        for field, blob in (("trivy_audit_path", REPORT_BLOB), ("sbom_path", SBOM_BLOB), ("inventory_path", SBOM_BLOB)):
            path = getattr(earlier, field)
            if path is not None:
                if path not in copied:
                    self.blob_store.copy_blob(path, f"{folder}/{blob}")
                    copied[path] = f"{folder}/{blob}"
                paths[field] = copied[path]
        return paths

    def reused_meta(self, earlier: AuditMeta, base: AuditMeta) -> AuditMeta:
        """The new audit's meta: the earlier verdict, this request's identity."""
        update: dict[str, object] = {name: getattr(base, name) for name in _REQUEST_FIELDS}
        update |= dict.fromkeys(_HISTORY_FIELDS)
        update |= {"reused_from": earlier.reused_from or earlier.audit_id, "timestamp": int(time.time())}
        return earlier.model_copy(update=update)

    def remember(
        self, meta: AuditMeta, folder: str, request: ScanRequest, image: ImageReference,
        scanned_at: int | None = None,
    ) -> ImageRecord | None:
        """Records a succeeded audit as its image's latest (with its fingerprint)."""
        digest = meta.image_digest or image.digest
        if meta.audit_result is not AuditResult.SUCCEEDED or digest is None:
            return None
        identity = self.identity(image, digest, meta.trivy_version, meta.trivy_db_updated_at, request)
        try:
            fingerprint: str | None = scan_fingerprint(self.config, identity)
        except OSError:
            fingerprint = None  # a suppression file vanished: recorded, never reused
        record = ImageRecord(
            repository=identity.repository,
            digest=digest,
            audit_id=meta.audit_id,
            folder=folder,
            requested_at=meta.requested_at,
            scanned_at=scanned_at if scanned_at is not None else meta.timestamp,
            seen_at=meta.requested_at,
            # The tag the audit is recorded under (its label): never one the registry did not confirm.
            tag=image_identity(meta.image, digest)[1],
            db_updated_at=meta.trivy_db_updated_at,
            fingerprint=fingerprint,
            trigger=request.trigger,
            **inventory_fields(meta),
        )
        platform = meta.platform_digest
        if platform is None or platform == digest:
            return self.store.remember(replace(record, platform_digest=digest))  # a manifest's own record
        # An index: its record (dedup of the index digest) and its platform's own (rescans and
        # approvals follow the manifest scanned; no tag, so a rescan's audit never answers for it).
        self.store.remember(replace(record, digest=platform, tag=None, platform_digest=platform))
        return self.store.remember(replace(record, platform_digest=platform))


def inventory_fields(meta: AuditMeta) -> dict[str, object]:
    """The record's inventory (issue 18): the meta's, made by the image scan it names (this
    audit, the one an inventory rescan matched, or the one a dedup answer reused)."""
    if meta.inventory_path is None:
        return {}
    made_by = meta.rescanned_from or meta.reused_from or meta.audit_id
    return {"inventory": meta.inventory_path, "inventory_audit": made_by, "secrets": meta.secrets}
