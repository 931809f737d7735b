"""The plan stage: what the run stage will scan, decided before trivy starts.

* An image scan: the registry is asked first (``preflight.py``: platform, size).
* An inventory rescan (``RESCAN_FROM=inventory``, issue 18): a ``rescan`` of a digest
  whose latest audit left a CycloneDX inventory is matched from that inventory
  (``trivy sbom``): no registry request at all, not the pre-flight, not a token
  exchange. When that cannot be (a request by tag, a first scan, no inventory),
  the plan is an image scan whose meta says why (``rescan-fallback``).

Dedup (``monitor/reuse.py``) is asked by the core after the plan, for either kind.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from ..audit import ScanRequest
from ..config import ScannerConfig
from ..errors import StorageError
from ..log import ScanLogger
from ..models import AuditMeta
from ..monitor import MonitorStore
from .preflight import Preflight, check_size, preflight, requested_platform, scratch_dir
from ..registry import ImageFacts, Platform
from ..io_pool import io_pool
from .target import scan_target
from ..trivy import ScanTarget


@dataclass(frozen=True)
class Inventory:
    """A stored inventory to rescan from: its blob, the image scan that made it, that scan's secrets."""

    path: str
    audit_id: str
    secrets: int | None = None
    document: Future[bytes | None] | None = None  # its content, being read


@dataclass
class Plan:
    """One scan's plan; filled in step by step, so that a failure's meta says what was learnt."""

    base: AuditMeta
    target: ScanTarget | None = None
    scratch: Path | None = None
    platform: Platform | None = None
    checked: Preflight | None = None  # an image scan's pre-flight
    inventory: Inventory | None = None  # an inventory rescan's inventory

    def update(self, **fields: object) -> None:
        self.base = self.base.model_copy(update=fields)


class Planner:
    """The plan stage of one scanner."""

    def __init__(self, config: ScannerConfig, store: Callable[[], MonitorStore | None]) -> None:
        self.config = config
        self._store = store

    def plan(self, plan: Plan, request: ScanRequest, log: ScanLogger) -> None:
        """Fills ``plan`` in; raises ``RequestError`` / ``ScanFailed`` like the pre-flight."""
        plan.target, label = scan_target(request)
        plan.update(image=label)
        plan.scratch = scratch_dir(self.config.settings)
        plan.platform = requested_platform(self.config.settings, request.platform, request.platform_field)
        plan.update(platform=str(plan.platform) if plan.platform else None)
        inventory, fallback = self.inventory_for(request, plan.target, log)
        if inventory is not None and plan.target.image is not None:
            plan.inventory = inventory
            plan.update(image_digest=plan.target.image.digest)
            return
        self.image_plan(plan, fallback, log)

    def image_plan(self, plan: Plan, fallback: str | None, log: ScanLogger) -> None:
        """An image scan: the pre-flight (``fallback``: why a rescan pulls the image after all)."""
        assert plan.target is not None and plan.scratch is not None
        plan.inventory = None
        plan.update(rescan_fallback=fallback)
        if fallback is not None:
            log.info("rescanning the image itself", fields={"rescan-fallback": fallback})
        plan.checked = preflight(self.config, plan.platform, plan.target, log)
        facts = plan.checked.facts
        plan.update(
            image_digest=facts.digest if facts else None,
            platform_digest=facts.platform_digest if facts else None,
            image_size=facts.compressed_size if facts else None,
            index_manifests=dict(facts.manifests) if facts and facts.is_index else None,
        )
        check_size(facts, self.config.settings, plan.scratch)
        self.confirm_tag(plan, facts, log)

    @staticmethod
    def confirm_tag(plan: Plan, facts: ImageFacts | None, log: ScanLogger) -> None:
        """A ``repo:tag@digest`` request names the tag it is recorded under only when the registry
        says the tag points at that digest (issue 23): else the audit is the digest's alone, so that
        no request can point a tag's verdict at another digest."""
        image = plan.target.image if plan.target is not None else None
        if image is None or image.tag is None or image.digest is None:
            return
        if facts is not None and facts.confirms_tag(image):
            return
        label = plan.base.image or ""
        name, _, digest = label.partition("@")
        if name.endswith(f":{image.tag}"):
            name = name[: -len(image.tag) - 1]
        log.warning("the registry does not confirm the tag points at the digest: recorded under the digest alone",
                    fields={"tag": image.tag, "digest": image.digest,
                            "tag-digest": facts.tag_digest if facts is not None else None})
        plan.update(image=f"{name}@{digest or image.digest}", tag_not_confirmed=image.tag)

    def inventory_for(
        self, request: ScanRequest, target: ScanTarget, log: ScanLogger
    ) -> tuple[Inventory | None, str | None]:
        """The inventory a rescan matches, or ``None`` and why not (``None``: not a rescan)."""
        if request.trigger != "rescan" or self.config.settings.rescan_from != "inventory":
            return None, None
        image = target.image
        if image is None or target.input_tar is not None or (store := self._store()) is None:
            return None, None
        if image.digest is None:
            return None, "requested-by-tag"
        try:
            record = store.latest(f"{image.registry}/{image.repository}", image.digest, keep=True)
        except StorageError as error:
            log.warning("the image's record could not be read", fields={"error": str(error)})
            return None, "inventory-unreadable"
        if record is None:
            return None, "first-scan"
        if record.inventory is None or record.inventory_audit is None:
            return None, "no-inventory"
        if record.platform_digest is None:  # written before issue 23: is it an index? Pulled once to know
            return None, "record-without-platform"
        # Read on the I/O pool while dedup looks the image up; the run stage waits for it.
        document = io_pool().submit(store.read_bytes, record.inventory)
        return Inventory(record.inventory, record.inventory_audit, record.secrets, document), None
