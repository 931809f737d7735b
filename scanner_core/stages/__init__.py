"""The stages of one scan (issue 18): plan, run, ship; the core strings them together.

* ``plan.py``  the request checked; an image scan (pre-flight) or an inventory rescan;
* ``run.py``   trivy: ``trivy image`` of the image, or ``trivy sbom`` of the stored inventory;
* ``ship.py``  the report, the inventory, the follow-up's annotations, ``meta`` last, the
  index, then the notification.

Its public face: see ``scanner_core/_lazy.py``.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "Inventory": ".plan",
    "Plan": ".plan",
    "Planner": ".plan",
    "InventoryUnusable": ".run",
    "RunStage": ".run",
    "inventory_trivy_version": ".run",
    "Shipper": ".ship",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
