"""The current state of one image (issue 24): the entity the fleet table holds per
repository + tag and per digest, as a pydantic model (the table's boundary).

``PartitionKey`` is ``table_key(repository)``; ``RowKey`` is ``t:`` + ``table_key(tag)``
for the tag's entity and ``d:`` + ``table_key(digest)`` for the digest's (the scanned
platform manifest gets one too, so a node that pulls it by digest finds it). One
partition per repository keeps an image's entities in one batch transaction. Property
names are snake_case (valid C# identifiers, as the Table service wants). See
docs/formats.md#the-fleet-state.
"""

from __future__ import annotations

import json
from typing import Any

from azure.data.tables import EdmType, EntityProperty
from pydantic import BaseModel, ConfigDict

from ..models import AuditMeta, AuditResult
from .index_rows import AuditRow, image_identity
from .tables import table_key

STATE_FORMAT = 1
SEVERITIES = ("critical", "high", "medium", "low", "unknown", "total")
TAG_ROW = "t:"
DIGEST_ROW = "d:"
# Kept from the entity a newer audit replaces: they belong to the image, not to one audit.
_IMAGE_FIELDS = ("approval_state", "approval_deadline", "approval_id", "approval_changed_at", "approval_by", "asked_at")
# Kept from the last succeeded audit when a newer one failed (the fleet views still show its findings).
# Unix seconds pass 2**31 in 2038: stored as Int64 (the SDK would refuse them as Int32 then).
TIME_FIELDS = ("requested_at", "scanned_at", "asked_at", "seen_at", "wanted_at", "approval_changed_at")
_SUCCEEDED_FIELDS = ("last_status", "last_succeeded_audit_id", "last_succeeded_folder", *SEVERITIES, "secrets", "kev",
                     "epss_max", "db_updated_at", "policy_action", "policy_rule", "decision", "inventory_path", "eosl",
                     "platforms")


def tag_row(tag: str) -> str:
    return TAG_ROW + table_key(tag)


def digest_row(digest: str) -> str:
    return DIGEST_ROW + table_key(digest)


class ImageState(BaseModel):
    """One image's current state: its latest audit, the latest succeeded audit's verdict
    and findings, its approval and when it was last scanned or asked for."""

    model_config = ConfigDict(extra="ignore")

    v: int = STATE_FORMAT
    repository: str
    registry: str
    tag: str | None = None
    digest: str | None = None
    image: str | None = None
    platform_digest: str | None = None
    platforms: str | None = None  # JSON {manifest digest: platform} of an image index
    # The latest audit (requested last), whatever its result.
    audit_id: str
    folder: str
    audit_result: str
    failure_reason: str | None = None
    requested_at: int
    scanned_at: int | None = None
    scan_status: str | None = None
    # The latest succeeded audit's verdict and findings.
    last_status: str | None = None
    last_succeeded_audit_id: str | None = None
    last_succeeded_folder: str | None = None
    critical: int | None = None
    high: int | None = None
    medium: int | None = None
    low: int | None = None
    unknown: int | None = None
    total: int | None = None
    secrets: int | None = None
    kev: int | None = None
    epss_max: float | None = None
    db_updated_at: str | None = None
    policy_action: str | None = None
    policy_rule: str | None = None
    decision: str | None = None
    inventory_path: str | None = None
    eosl: bool = False
    # The image's approval (approvals/store.py keeps it in step) and its last request by anyone.
    approval_state: str | None = None
    approval_deadline: str | None = None
    approval_id: str | None = None
    # The request's last change of state (its ``decided_at``, unix seconds) and who made it: the
    # daily digest's "decided / revoked in the last 24 h". ``None`` on entities written before them.
    approval_changed_at: int | None = None
    approval_by: str | None = None
    asked_at: int | None = None
    # The last request that was not a rescan (the rescan timer's RESCAN_WINDOW_DAYS counts from it).
    wanted_at: int | None = None

    @classmethod
    def from_meta(cls, meta: AuditMeta, folder: str) -> ImageState | None:
        """The state this audit alone says; ``None`` for an image that is not a reference."""
        repository, tag, digest = image_identity(meta.image, meta.image_digest)
        if repository is None:
            return None
        succeeded = meta.audit_result is AuditResult.SUCCEEDED
        counts = dict(meta.vulnerabilities or {}) if succeeded and meta.vulnerabilities is not None else {}
        fields: dict[str, Any] = {}
        if succeeded:
            fields = {
                "last_status": meta.scan_status, "last_succeeded_audit_id": meta.audit_id,
                "last_succeeded_folder": folder, **{s: int(counts.get(s, 0)) for s in SEVERITIES},
                "secrets": meta.secrets, "kev": meta.kev, "epss_max": meta.epss_max,
                "db_updated_at": meta.trivy_db_updated_at, "decision": meta.decision,
                "policy_action": meta.policy.action if meta.policy else None,
                "policy_rule": meta.policy.rule if meta.policy else None,
                "inventory_path": meta.inventory_path, "eosl": bool(meta.os and meta.os.eosl),
                "platforms": json.dumps(dict(meta.index_manifests), sort_keys=True) if meta.index_manifests else None,
            }
        return cls(
            repository=repository, registry=repository.split("/", 1)[0], tag=tag, digest=digest, image=meta.image,
            platform_digest=meta.platform_digest, audit_id=meta.audit_id, folder=folder,
            audit_result=meta.audit_result.value, failure_reason=meta.failure_reason,
            requested_at=meta.requested_at, scanned_at=meta.timestamp, scan_status=meta.scan_status,
            wanted_at=meta.requested_at if meta.trigger != "rescan" else None, **fields,
        )

    @property
    def partition(self) -> str:
        return table_key(self.repository)

    def row_keys(self) -> list[str]:
        """The entities this state is written to: the tag's, the digest's, the scanned manifest's."""
        keys = [tag_row(self.tag)] if self.tag else []
        keys += [digest_row(d) for d in dict.fromkeys((self.digest, self.platform_digest)) if d]
        return keys

    def newer_than(self, other: ImageState) -> bool:
        """Whether this audit may replace ``other``'s: a later request, or the same audit again."""
        if self.requested_at != other.requested_at:
            return self.requested_at > other.requested_at
        if self.audit_id == other.audit_id:
            return True  # the same audit again
        if (self.wanted_at is None) != (other.wanted_at is None):
            # the same second, one of them a rescan (as read from its meta): the timer chose it from
            # the other's state, so it came after
            return self.wanted_at is None
        return self.audit_id > other.audit_id  # a fixed order

    def over(self, older: ImageState) -> ImageState:
        """This state written over ``older`` (the same image's entity): the image's approval and
        asks are kept when the digest is the same, the last success's fields when this one failed,
        the last wanting request's time when this one is a rescan."""
        keep: dict[str, Any] = {"wanted_at": older.wanted_at} if self.wanted_at is None else {}
        if older.digest == self.digest:
            keep |= {name: getattr(older, name) for name in _IMAGE_FIELDS if getattr(self, name) is None}
        if self.last_succeeded_audit_id is None and older.last_succeeded_audit_id is not None:
            keep |= {name: getattr(older, name) for name in _SUCCEEDED_FIELDS}
        return self.model_copy(update=keep)

    def entity(self, row_key: str) -> dict[str, Any]:
        """The entity, with what the fleet's listings filter on: ``listed`` (the tag's entity, or
        the digest's of an image asked by digest alone: each image once), ``category`` (the
        summary's) and ``seen_at`` (``FLEET_IMAGE_TTL_DAYS``)."""
        listed = row_key.startswith(TAG_ROW) or (self.tag is None and row_key == digest_row(self.digest or ""))
        entity = {"PartitionKey": self.partition, "RowKey": row_key,
                  **{k: v for k, v in self.model_dump().items() if v is not None},
                  "listed": listed, "category": self.category, "seen_at": self.last_seen()}
        return {k: EntityProperty(v, EdmType.INT64) if k in TIME_FIELDS else v for k, v in entity.items()}

    @property
    def category(self) -> str:
        """The summary's category of the latest audit: its scan status, or ``audit-failed``."""
        if self.audit_result != AuditResult.SUCCEEDED.value:
            return "audit-failed"
        return self.scan_status or "unknown"

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> ImageState:
        return cls.model_validate({k: v.value if isinstance(v, EntityProperty) else v for k, v in entity.items()
                                   if not k.startswith(("PartitionKey", "RowKey"))})

    @property
    def vulnerabilities(self) -> dict[str, int] | None:
        if self.total is None:
            return None
        return {s: int(getattr(self, s) or 0) for s in SEVERITIES}

    def row(self) -> AuditRow:
        """The latest audit as the API's rows show it (the verdict, the summary's pages)."""
        return AuditRow(
            audit_id=self.audit_id, folder=self.folder, requested_at=self.requested_at, audit_result=self.audit_result,
            scanned_at=self.scanned_at, image=self.image, scan_status=self.scan_status,
            vulnerabilities=self.vulnerabilities if self.audit_id == self.last_succeeded_audit_id else None,
            secrets=self.secrets if self.audit_id == self.last_succeeded_audit_id else None,
            failure_reason=self.failure_reason, repository=self.repository, tag=self.tag, digest=self.digest,
            db_updated_at=self.db_updated_at if self.audit_id == self.last_succeeded_audit_id else None,
            decision=self.decision if self.audit_id == self.last_succeeded_audit_id else None, eosl=self.eosl,
            kev=self.kev, epss_max=self.epss_max, platform_digest=self.platform_digest,
            platforms=json.loads(self.platforms) if self.platforms else None,
        )

    def last_seen(self) -> int:
        """When the image was last scanned or asked for (``FLEET_IMAGE_TTL_DAYS`` counts from it)."""
        return max(self.requested_at, self.scanned_at or 0, self.asked_at or 0)
