"""The fleet query tables and their entities (docs/formats.md#fleet-query-tables), each named
``{FLEET_TABLE_PREFIX}{scanner short id}{kind}`` (``fleet1a2b3c4dvulns``):

* ``vulns``: PartitionKey ``table_key(vulnerability id)``, RowKey ``table_key(image)``:
  one entity per vulnerability and image, with the affected packages (name, installed and
  fixed version, severity, target; at most ``MAX_LISTED``) and since which audit.
* ``packages``: PartitionKey ``table_key(lower-cased package name)``, RowKey
  ``table_key(image)``: one entity per package name and image, with its versions and types.
* ``queryimages``: the reverse index, PartitionKey ``table_key(image)``: what the image
  has in the two tables (RowKey ``v:<vulnerability key>`` / ``p:<package key>``, each with the
  content hash written and since which audit) and a ``~image`` row (the latest audit recorded,
  its request time and which audit its findings and inventory came from). The writer reads it
  to write only what changed, and ``forget_image`` to delete an image's rows.

An *image* is what the audit's change set compares (``follow_up/changes.py``): the
repository and tag, or the repository and digest for an image asked for by digest only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from ..approvals import approval_subject
from ..models import AuditMeta
from ..storage import image_identity, table_key

# the tables' kinds: each one's name is ``storage.fleet_table_name(settings, kind)``
# (``{FLEET_TABLE_PREFIX}{scanner short id}{kind}``), so deployments sharing an account never mix
VULNERABILITY_TABLE = "vulns"
PACKAGE_TABLE = "packages"
IMAGE_TABLE = "queryimages"
HEADER_ROW = "~image"  # table_key never writes "~" before a non-hex letter: no item collides
MAX_LISTED = 50  # packages (or versions) kept per entity: its JSON stays far below 64 KiB
SEVERITY_ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


class FoundPackage(Protocol):
    """What the query tables keep of one finding: the decoder's ``Vulnerability`` (with its
    result's ``target``, set by the summariser) or a stored ``Finding``."""

    vulnerability_id: str
    pkg_name: str
    installed_version: str | None
    fixed_version: str | None
    severity: str | None
    target: str | None


@dataclass(frozen=True)
class ImageSubject:
    """An image of the fleet as the query tables key it."""

    label: str  # repository:tag, or repository@digest
    repository: str
    tag: str | None
    digest: str | None
    approval_digest: str | None  # the manifest its approval request is for (approvals/book.py)

    @property
    def key(self) -> str:
        return table_key(self.label)

    def columns(self) -> dict[str, Any]:
        return {"image": self.label, "repository": self.repository, "tag": self.tag or "",
                "digest": self.digest or "", "approval-digest": self.approval_digest or ""}


def subject_of(meta: AuditMeta) -> ImageSubject | None:
    """The image an audit is of; ``None`` for a label that is not a registry reference."""
    repository, tag, digest = image_identity(meta.image, meta.image_digest)
    if repository is None or (tag is None and digest is None):
        return None
    label = f"{repository}:{tag}" if tag is not None else f"{repository}@{digest}"
    return ImageSubject(label, repository, tag, digest, approval_subject(meta)[2])


def subject_from_label(label: str) -> ImageSubject:
    """An image from its label alone (``forget_image`` and the bench)."""
    repository, tag, digest = image_identity(label)
    return ImageSubject(label, repository or label, tag, digest, digest)


def vulnerability_key(vulnerability_id: str) -> str:
    return table_key(vulnerability_id)


def package_key(name: str) -> str:
    return table_key(name.lower())


def content_hash(document: Any) -> str:
    """What the writer compares to skip an unchanged entity."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def worst(severities: list[str]) -> str:
    known = [s for s in severities if s in SEVERITY_ORDER]
    return min(known, key=SEVERITY_ORDER.index) if known else "UNKNOWN"
