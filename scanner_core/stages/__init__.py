"""The stages of one scan (issue 18): plan, run, ship; the core strings them together.

* ``plan.py``  the request checked (``target.py``: what trivy scans, and the audit's label);
  an image scan (``preflight.py``: platform, manifests, size) or an inventory rescan;
* ``run.py``   trivy: ``trivy image`` of the image, or ``trivy sbom`` of the stored inventory;
  the DBs first (``db_snapshot.py``: the fleet's snapshot in Blob Storage), the Java DB on
  first need (``java_db.py``), or a trivy server (``server_mode.py``);
* ``ship.py``  the report and its summary side by side, the inventory, the follow-up's
  annotations, ``meta`` last, the index, then the notification; the suppression files and
  the ``os`` meta (``suppressions.py``).
* ``rescan_server.py`` a batch of inventory rescans: one loopback trivy server that keeps the DB open;
* ``parts.py`` what the stages use of the scanner that runs them (a protocol).

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "DbSnapshot": ".db_snapshot",
    "database_for": ".db_snapshot",
    "snapshot_for": ".db_snapshot",
    "ask_server_ahead": ".server_mode",
    "database_age": ".server_mode",
    "server_connection": ".server_mode",
    "Ahead": ".ship",
    "lookup_ahead": ".ship",
    "Inventory": ".plan",
    "Plan": ".plan",
    "Planner": ".plan",
    "InventoryUnusable": ".run",
    "RunStage": ".run",
    "inventory_trivy_version": ".run",
    "Shipper": ".ship",
    "RescanServer": ".rescan_server",
    "rescan_server_for": ".rescan_server",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
