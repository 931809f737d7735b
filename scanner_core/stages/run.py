"""The run stage: trivy, on the image (``trivy image``) or on a stored inventory (``trivy sbom``).

Both runs get the same DBs, severities, suppression files and settings. An inventory
that cannot be used (gone, unreadable, written by a trivy of another minor version,
refused by trivy) turns the scan into an image scan: the plan stage's pre-flight
runs then, and the meta says why (``rescan-fallback``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..errors import FailureKind, ScanFailed, StorageError
from .java_db import scan_with_java_db
from ..log import ScanLogger
from ..registry import find_credentials, resolve_credentials
from ..storage import BlobStore
from ..trivy import TrivyOptions, TrivyRun
from .db_snapshot import ensure_database
from .parts import ScannerParts
from .plan import Plan, Planner

INVENTORY_FILE = "inventory.cdx.json"


class InventoryUnusable(Exception):
    """The inventory cannot be rescanned; ``reason`` goes to the meta's ``rescan-fallback``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def inventory_trivy_version(document: bytes) -> str | None:
    """The version of the trivy that wrote a CycloneDX inventory (``metadata.tools``)."""
    try:
        tools = json.loads(document)["metadata"]["tools"]
        components = tools.get("components", []) if isinstance(tools, dict) else tools
        return next(str(tool["version"]) for tool in components if tool.get("name") == "trivy")
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return None


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


class RunStage:
    """The run stage of one scanner (its trivy, DBs and settings)."""

    def __init__(self, scanner: ScannerParts, planner: Planner, blob_store: BlobStore) -> None:
        self.scanner = scanner
        self.planner = planner
        self.blob_store = blob_store

    def run(self, plan: Plan, report_path: Path, log: ScanLogger) -> TrivyRun:
        """trivy's report at ``report_path``; an unusable inventory falls back to the image."""
        if plan.inventory is not None:
            try:
                return self.from_inventory(plan, report_path, log)
            except InventoryUnusable as unusable:
                log.warning("the inventory cannot be rescanned; scanning the image", fields={"reason": unusable.reason})
                self.planner.image_plan(plan, unusable.reason, log)
        return self.from_image(plan, report_path, log)

    def options(self, plan: Plan, insecure: bool = False) -> TrivyOptions:
        settings = self.scanner.config.settings
        image_scan = plan.checked is not None and plan.target is not None and plan.target.input_tar is None
        return TrivyOptions(
            cache_dir=settings.trivy_cache_dir,
            timeout_ms=settings.trivy_timeout_ms,
            # Scans only read the DB; VulnerabilityDatabase downloads it (see database.py).
            skip_db_update=True,
            cache_backend="memory",
            offline_scan=settings.trivy_offline_scan,
            db_repositories=tuple(settings.trivy_db_repository),
            insecure_registry=insecure,
            severities=tuple(settings.trivy_severity),
            ignore_unfixed=settings.trivy_ignore_unfixed,
            scanners=tuple(settings.trivy_scanners),
            # No scan ever downloads the Java DB either: it is fetched apart, once (see java_db.py).
            skip_java_db_update=True,
            platform=str(plan.checked.platform) if image_scan and plan.checked and plan.checked.platform else None,
            ignorefile=settings.trivy_ignorefile,
            vex=tuple(settings.trivy_vex),
            scratch_dir=plan.scratch,
            server=self.scanner.server,
            egress_guard=settings.egress_guard,
        )

    def _ensure_database(self, log: ScanLogger) -> None:
        if self.scanner.server is None:  # in client/server mode the server holds the DB
            ensure_database(self.scanner.database, refresh=self.scanner.refresh_db_before_scan, log=log)

    def from_image(self, plan: Plan, report_path: Path, log: ScanLogger) -> TrivyRun:
        assert plan.target is not None
        self._ensure_database(log)
        target = plan.target
        registry = find_credentials(target.image, self.scanner.config.file.registries) if target.image else None
        options = self.options(plan, insecure=bool(registry and registry.insecure))
        return scan_with_java_db(
            self.scanner.trivy, self.scanner.java_database, (target, options, report_path, resolve_credentials(registry)),
            log, refresh_first=self.scanner.refresh_db_before_scan,
        )

    def from_inventory(self, plan: Plan, report_path: Path, log: ScanLogger) -> TrivyRun:
        """``trivy sbom`` of the inventory: one blob read, no registry request."""
        assert plan.inventory is not None
        try:
            pending = plan.inventory.document
            document = pending.result() if pending is not None else self.blob_store.download_bytes(plan.inventory.path)
        except StorageError as error:
            log.warning("the inventory could not be read", fields={"error": str(error)})
            raise InventoryUnusable("inventory-unreadable") from None
        if document is None:
            raise InventoryUnusable("inventory-missing")
        made_by = inventory_trivy_version(document)
        if made_by is None:
            raise InventoryUnusable("inventory-unreadable")
        if _minor(made_by) != _minor(self.scanner.trivy.version()):
            raise InventoryUnusable(f"inventory-from-trivy-{made_by}")
        inventory = report_path.with_name(INVENTORY_FILE)
        inventory.write_bytes(document)
        self._ensure_database(log)
        options = self.options(plan)
        if options.server is None and self.scanner.rescan_server is not None:
            # A batch's loopback server: the DB stays open between rescans (rescan_server.py).
            options = replace(options, server=self.scanner.rescan_server.connection(log))
        try:
            return self.scanner.trivy.scan_inventory(inventory, options, report_path)
        except ScanFailed as failure:
            if failure.kind is FailureKind.TRANSIENT:
                raise
            raise InventoryUnusable(f"inventory-rejected ({failure.reason})") from None
